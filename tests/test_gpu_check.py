"""`make gpu-check` and `make gpu-wheels`, the parts that run without a GPU: the check's cases,
its JSON and its time budget on the CPU (--tiny), the wheels, and wandb staying unimported
when `logger=none` (GPU machines have no wandb)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO


def check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", *args], cwd=REPO, capture_output=True, text=True, timeout=900)


def test_the_check_measures_every_case_and_writes_one_json(tmp_path):
    out = tmp_path / "gpu-check.json"
    result = make(f"GPU_PYTHON={sys.executable}",
                  f"GPU_CHECK_ARGS=--tiny --no-compile --no-end-to-end --batches 1 --out {out}", "gpu-check")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["torch"] and report["epoch_images"] == 50_000
    module = check_module()
    cases = [(c["model"], c["training"], c["amp"], c["compile"], c.get("implementation")) for c in report["training"]]
    expected = [(m, t, a, False, None) for m, t in module.CASES for a in ("fp32", "bf16")]
    expected += [(*module.PEER, a, False, "advertorch") for a in ("fp32", "bf16")]
    expected += [(m, t, "bf16", "reduce-overhead", None) for m, t in module.FAST]
    expected += [(m, t, a, True, None) for m, t in module.CASES for a in ("fp32", "bf16")]
    assert cases == expected and len(cases) == 21
    assert report["bf16_matrix_peak"]["tflops"] > 0
    for case in report["training"]:
        if case["compile"]:
            assert case["status"] == "skipped: --no-compile"
            continue
        assert case["status"] == "measured", case
        assert case["seconds_per_epoch"] == pytest.approx(50_000 / case["images_per_s"], rel=1e-2)
        assert case["tflops"] == pytest.approx(case["gflop_per_image"] * case["images_per_s"] / 1000, rel=0.05, abs=1e-4)
        assert case["share_of_bf16_matrix_peak"] == pytest.approx(case["tflops"] / report["bf16_matrix_peak"]["tflops"],
                                                                  rel=0.05, abs=1e-4)
        assert case["host_syncs_per_pass"] is None  # counted on CUDA only
    flops = {(c["model"], c["training"]): c["gflop_per_image"] for c in report["training"] if c["amp"] == "fp32"
             and c["status"] == "measured" and "implementation" not in c}
    # An AT step costs the attack's steps more than a standard one; TRADES more than PGD-AT at the same steps.
    assert flops["resnet18", "standard"] < flops["resnet18", "pgd_at"] < flops["resnet18", "trades"]
    assert set(report["at_step_vs_advertorch"]) == {"fp32", "bf16"} and all(r > 0 for r in report["at_step_vs_advertorch"].values())
    assert [(r["processes"], r["status"]) for r in report["packing"]] == [(1, "measured"), (2, "measured")]
    assert report["packing"][0]["throughput_vs_one"] == 1.0 and report["packing"][1]["images"] == 2 * report["packing"][0]["images"]
    assert set(report["pgd100_eval"]) == {"fp32", "bf16"} and report["pgd100_eval"]["bf16"]["images_per_s"] > 0
    assert report["precision"]["fp32_model_under_bf16"]["status"] in ("pass", "FAIL")
    assert {"trained_fp32_accuracy", "trained_bf16_accuracy"} <= set(report["precision"])
    assert report["end_to_end"] == {"status": "skipped: --no-end-to-end"}


def test_cases_that_do_not_fit_the_budget_are_skipped_not_run(tmp_path):
    out = tmp_path / "gpu-check.json"
    assert check_module().main(["--tiny", "--budget-s", "0", "--out", str(out)]) == 1  # the end-to-end stage did not pass
    report = json.loads(out.read_text())
    assert all(c["status"].startswith("skipped: ") and "budget" in c["status"] for c in report["training"])
    assert report["precision"] == {"status": "skipped: budget"} and report["wall_seconds"] < 30
    assert {r["status"] for r in report["packing"]} == {"skipped: budget"}
    stage = report["end_to_end"]
    assert stage["passed"] is False and stage["steps"]
    assert all(s["status"].startswith("skipped: ") for s in stage["steps"]), stage["steps"]


def test_a_failing_step_is_reported_with_its_error_and_the_steps_that_need_it_are_skipped(tmp_path):
    import time

    stage = check_module().end_to_end.Stage(tmp_path, time.perf_counter() + 60)
    assert not stage.run("first", ["-c", "import sys; print('the reason'); sys.exit(3)"])
    assert stage.run("second", ["-c", "import blf, hydra"])  # the caller's PYTHONPATH and src reach the step
    assert not stage.run("third", ["-c", "pass"], needs=("first", "second"))
    assert not stage.check("fourth", lambda: (_ for _ in ()).throw(AssertionError("no finished.json")))
    first, second, third, fourth = stage.steps
    assert first["status"] == "fail" and first["error"].startswith("exit 3:") and "the reason" in first["error"]
    assert second["status"] == "pass" and "error" not in second
    assert third["status"] == "skipped: needs first"
    assert fourth["status"] == "fail" and fourth["error"] == "AssertionError: no finished.json"


@pytest.mark.slow
def test_the_end_to_end_stage_passes_on_the_cpu(tmp_path):
    """The stage make gpu-check runs on the GPU, on tiny settings on the CPU (about 5 minutes):
    every app, every attack option, every analysis, the report, each export format and blf.load."""
    import time

    module = check_module()
    stage = module.end_to_end.run(tmp_path, "cpu", time.perf_counter() + 1500, tiny=True)
    failed = {s["step"]: s.get("error", s["status"]) for s in stage["steps"] if s["status"] != "pass"}
    assert stage["passed"] and not failed, failed
    names = [s["step"] for s in stage["steps"]]
    assert {"study_demo_mnist", "train_cifar_standard_bf16_compiled", "train_cifar_pgd_at_bf16_compiled",
            "evaluate_every_attack_checks_analyses", "report", "load_on_device"} <= set(names)
    assert {f"export_{f}" for f in module.end_to_end.FORMATS} <= set(names)
    from blf.run import storage

    rows = storage.read_jsonl(tmp_path / "cifar" / "blf_pgd_at" / "results.jsonl")
    attacked = {r["attack"] for r in rows if r["kind"] == "robustness"}
    assert set(module.end_to_end.ATTACKS) <= attacked
    kinds = {r["kind"] for r in rows}
    assert {"integrity", "operator_norm", "loss_surface", "budget_sweep", "worst_case"} <= kinds
    trained = storage.load_checkpoint(tmp_path / "cifar" / "blf_pgd_at" / "checkpoints" / "best.pt")
    assert trained["config"]["trainer"]["amp"] == "bf16" and trained["config"]["trainer"]["compile"] is True


def test_without_hydra_and_without_wheels_it_says_what_to_do(tmp_path):
    bare = tmp_path / "python3"
    bare.write_text("#!/bin/sh\nexit 1\n")  # a Python that imports nothing of ours
    bare.chmod(0o755)
    result = make(f"GPU_PYTHON={bare}", f"GPU_WHEELS={tmp_path / 'none'}", "gpu-check")
    assert result.returncode != 0
    assert "lacks hydra-core and omegaconf" in result.stderr and "make gpu-wheels" in result.stderr


def test_gpu_wheels_names_the_pinned_packages():
    dry = make("-n", "gpu-wheels").stdout
    pins = {line.split()[0] for line in (REPO / "requirements.txt").read_text().splitlines()
            if line.split("==")[0] in ("hydra-core", "omegaconf", "advertorch", "pyautoattack")}
    assert len(pins) == 4 and all(pin in dry for pin in pins) and "antlr4-python3-runtime==4.9.3" in dry
    assert "--no-deps" in dry


@pytest.mark.slow
def test_gpu_wheels_are_pure_python(tmp_path):
    """Downloads (and builds where PyPI has only sources) the wheels: about 50 MB."""
    result = make(f"GPU_WHEELS={tmp_path / 'w'}", "gpu-wheels")
    assert result.returncode == 0, result.stderr[-3000:]
    wheels = sorted((tmp_path / "w").glob("*.whl"))
    assert len(wheels) == 5 and all(w.name.endswith("-py3-none-any.whl") for w in wheels)
    for wheel in wheels:
        assert zipfile.ZipFile(wheel).testzip() is None


def test_logger_none_does_not_import_wandb(tmp_path):
    """GPU machines have no wandb: with logger=none nothing may import it."""
    code = (
        "import sys\n"
        "class NoWandb:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'wandb' or name.startswith('wandb.'):\n"
        "            raise ImportError('wandb is not installed here')\n"
        "sys.meta_path.insert(0, NoWandb())\n"
        "sys.path.insert(0, 'tests')\n"
        "from conftest import train\n"
        f"train({str(tmp_path / 'run')!r}, 'logger=none')\n"
        "assert 'wandb' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert result.returncode == 0, result.stderr[-3000:]


def test_gpu_wheels_carry_code_not_examples(tmp_path):
    """make gpu-wheels trims what no app imports (pyautoattack's 45 MB example checkpoint)."""
    import importlib.util
    import zipfile

    spec = importlib.util.spec_from_file_location("trim_wheels", REPO / "tools" / "trim_wheels.py")
    trim_wheels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trim_wheels)
    wheel = tmp_path / "pyautoattack-0.2.0-py3-none-any.whl"
    files = {"pyautoattack/__init__.py": b"x = 1\n", "pyautoattack/examples/model_test.pt": b"0" * 5000,
             "pyautoattack-0.2.0.dist-info/METADATA": b"Name: pyautoattack\n"}
    record = "".join(f"{name},sha256=abc,{len(data)}\n" for name, data in files.items())
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("pyautoattack-0.2.0.dist-info/RECORD", record + "pyautoattack-0.2.0.dist-info/RECORD,,\n")
    assert trim_wheels.trim(wheel) == 5000
    with zipfile.ZipFile(wheel) as archive:
        assert sorted(archive.namelist()) == ["pyautoattack-0.2.0.dist-info/METADATA", "pyautoattack-0.2.0.dist-info/RECORD",
                                              "pyautoattack/__init__.py"]
        assert "examples" not in archive.read("pyautoattack-0.2.0.dist-info/RECORD").decode()
    assert trim_wheels.trim(wheel) == 0  # nothing left to drop


def test_each_compiled_case_starts_from_a_fresh_compiler_and_says_what_ran(monkeypatch):
    module = check_module()
    resets = []
    monkeypatch.setattr(module.torch._dynamo, "reset", lambda: resets.append(1))
    monkeypatch.setattr(module, "one_pass", lambda run, generator: 1.0)  # no step: nothing compiles
    args = module.argparse.Namespace(batch=None, tiny=True, batches=1, device="cpu")
    case = module.training_case("resnet18", "standard", "fp32", True, args)
    assert resets == [1] and case["compiled_graphs"] == 0 and case["ran"] == "eager (compilation fell back)"
    def compiling(run, generator):  # a pass that compiles three graphs
        module.counters["stats"]["unique_graphs"] = 3
        return 1.0

    monkeypatch.setattr(module, "one_pass", compiling)
    case = module.training_case("resnet18", "standard", "fp32", True, args)
    assert case["ran"] == "compiled" and case["compiled_graphs"] == 3 and resets == [1, 1]
    assert "ran" not in module.training_case("resnet18", "standard", "fp32", False, args) and resets == [1, 1]


def test_two_compiled_cases_in_one_process_both_run_compiled():
    """With the real torch.compile and dynamo's recompile limit at 1 (it was 8 compiled cases
    before the limit hit; one is enough to show it): without a fresh compiler per case the second
    case falls back to eager, and the check would report it."""
    import torch._dynamo.config

    module = check_module()
    args = module.argparse.Namespace(batch=None, tiny=True, batches=1, device="cpu")
    with torch._dynamo.config.patch(recompile_limit=1):
        first = module.training_case("resnet18", "standard", "fp32", True, args)
        second = module.training_case("resnet18", "standard", "fp32", True, args)
    assert first["ran"] == second["ran"] == "compiled", (first, second)
    assert first["compiled_graphs"] >= 1 and second["compiled_graphs"] >= 1
