"""`python -m blf.export`: RobustBench entries, TorchScript and state dicts of trained runs, with
the numbers taken from the run's records and nothing else."""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings

import pytest
import torch
import yaml

from blf import load
from blf.export import main
from blf.run import storage
from conftest import TINY, train

EPS = 8 / 255
CIFAR = ["dataset=cifar10", "model=resnet18", "model.width=4", "model.blocks=[1,1,1,1]", "dataset.synthetic_train=32",
         "dataset.synthetic_test=16", "eval.n=16", "trainer.batch_size=16", "trainer.epochs=1", "analysis=[]",
         f"attack.pgd.eps=[0.0,{EPS}]", "attack.pgd.nb_iter=2", "eval.integrity.enabled=false", "head=blf"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("export") / "run"
    return run_dir, train(run_dir, *TINY, *CIFAR, tiny=False)


def export(capsys, *args) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def images(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_robustbench_entry_holds_the_records_and_the_weights(run, tmp_path, capsys):
    run_dir, outcome = run
    out = tmp_path / "rb"
    status, printed, _ = export(capsys, run_dir, "--format", "robustbench", "--out", out, "--allow-synthetic")
    assert status == 0
    name = "Kanai2020Constraining_ResNet18_BLF_gamma_1"
    info = json.loads((out / "model_info" / "cifar10" / "Linf" / f"{name}.json").read_text())
    rows = outcome.rows
    pgd = next(r for r in rows if r["kind"] == "robustness" and abs(r["eps"] - EPS) < 1e-9)
    worst = next(r for r in rows if r["kind"] == "worst_case" and abs(r["eps"] - EPS) < 1e-9)
    assert info["eps"] == "8/255" and info["threat_model"] == "Linf" and info["n_examples"] == 16
    assert info["clean_acc"] == f"{rows[0]['clean_test_acc']:.2f}"
    assert info["robust_acc"] == {"pgd": round(pgd["accuracy"], 2)} and info["reported"] == f"{worst['accuracy']:.2f}"
    assert info["autoattack_acc"] == "" and "AutoAttack was not run" in info["footnote"]
    assert info["footnote"].startswith("SYNTHETIC DATA") and info["architecture"] == "ResNet-18 + BLF (gamma=1)"
    assert f'benchmark(model.eval(), model_name="{name}"' in printed and "eps=8/255" in printed
    # The entry builds the architecture by reference; the state dict fills it: the run's model.
    spec = importlib.util.spec_from_file_location("model_zoo_entry", out / "model_zoo_entry.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    model = getattr(entry, f"{name}_model")()
    model.load_state_dict(torch.load(out / f"{name}.pt", weights_only=True))
    assert torch.equal(model.eval()(images()), load(run_dir)(images()))
    compile(( out / "benchmark.py").read_text(), "benchmark.py", "exec")


def test_programs_run_without_the_package(run, tmp_path, capsys):
    run_dir, _ = run
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing of torch's leaks to the user
        assert export(capsys, run_dir, "--format", "torch_export", "--out", tmp_path / "pt2")[0] == 0
    program = torch.export.load(tmp_path / "pt2" / "model.pt2").module()
    assert torch.allclose(program(images(5)), load(run_dir)(images(5)), atol=1e-5)  # another batch size than traced
    assert export(capsys, run_dir, "--format", "torchscript", "--out", tmp_path / "ts")[0] == 0
    with pytest.warns(FutureWarning):  # torch deprecates TorchScript
        scripted = torch.jit.load(tmp_path / "ts" / "model.torchscript.pt")
    assert torch.allclose(scripted(images()), load(run_dir)(images()), atol=1e-6)
    assert yaml.safe_load((tmp_path / "ts" / "config.yaml").read_text())["head"]["name"] == "blf"


def test_state_dict_is_plain_tensors_and_the_config(run, tmp_path, capsys):
    run_dir, _ = run
    assert export(capsys, run_dir, "--format", "state_dict", "--out", tmp_path / "sd")[0] == 0
    state = torch.load(tmp_path / "sd" / "state_dict.pt", weights_only=True)
    assert set(state) == set(load(run_dir).state_dict()) and float(state["head.gamma"]) == 1.0


def test_refusals_write_nothing(run, tmp_path, capsys):
    run_dir, _ = run
    out = tmp_path / "rb"
    status, _, err = export(capsys, run_dir, "--format", "robustbench", "--out", out)
    assert status == 2 and err.count("error: ") == 1 and "synthetic data" in err and not out.exists()
    status, _, err = export(capsys, run_dir, "--format", "robustbench", "--out", out, "--allow-synthetic", "--eps", "4/255")
    assert status == 2 and "--eps=4/255: no attack was run at this budget" in err and "allowed: 0/255, 8/255" in err
    assert not out.exists()
    assert export(capsys, run_dir, "--format", "state_dict", "--out", out)[0] == 0
    before = (out / "state_dict.pt").read_bytes()
    status, _, err = export(capsys, run_dir, "--format", "state_dict", "--out", out)
    assert status == 2 and "already holds" in err and "--force" in err
    assert export(capsys, run_dir, "--format", "state_dict", "--out", out, "--force")[0] == 0
    assert (out / "state_dict.pt").read_bytes() == before


def test_mnist_has_no_robustbench_leaderboard(tmp_path, capsys):
    run_dir = tmp_path / "mnist"
    train(run_dir, "analysis=[]", "eval.integrity.enabled=false")
    status, _, err = export(capsys, run_dir, "--format", "robustbench", "--out", tmp_path / "rb", "--allow-synthetic")
    assert status == 2 and "dataset (RobustBench's leaderboards)='mnist' is not an option; allowed: cifar10" in err


def test_records_that_are_not_numbers_are_refused(run, tmp_path, capsys):
    run_dir, _ = run
    copy = tmp_path / "copy"
    (copy / "checkpoints").mkdir(parents=True)
    (copy / "checkpoints" / "best.pt").write_bytes((run_dir / "checkpoints" / "best.pt").read_bytes())
    rows = storage.read_jsonl(run_dir / "results.jsonl")
    for r in rows:
        if r["kind"] == "robustness":
            r["accuracy"] = "99.9"
    storage.write_jsonl(copy / "results.jsonl", rows)
    status, _, err = export(capsys, copy, "--format", "robustbench", "--out", tmp_path / "rb", "--allow-synthetic")
    assert status == 2 and "accuracy='99.9' in results.jsonl is not a number" in err


def test_the_module_runs_as_a_command(run, tmp_path):
    import subprocess

    run_dir, _ = run
    result = subprocess.run([sys.executable, "-m", "blf.export", str(run_dir), "--format", "state_dict", "--out",
                             str(tmp_path / "sd")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sd" / "state_dict.pt").is_file()


def test_torch_export_of_a_2c2f_run_leaks_no_torch_warning(tmp_path, capsys):
    """2C2F trains in channels_last: torch's archive writer warned about its weights' groups."""
    run_dir = tmp_path / "run"
    train(run_dir, "trainer.epochs=1", "analysis=[]", "eval.integrity.enabled=false")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert export(capsys, run_dir, "--format", "torch_export", "--out", tmp_path / "pt2")[0] == 0
