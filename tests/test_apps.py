"""The two Hydra apps as users run them: outputs, resumption, re-evaluation, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from blf import storage
from conftest import REPO, TINY, run_app


def read(path):
    return storage.read_jsonl(path)


def without_timing(rows):
    drop = {"seconds", "images_per_second", "evaluated_at", "run_dir"}
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def test_a_run_leaves_checkpoints_metrics_and_tidy_records(tiny_run):
    run_dir, result = tiny_run("head=blf", "head.gamma=1.5", "regularizer=logit_squeezing", "regularizer.lam=0.05", "seed=3")
    assert result.returncode == 0, result.stderr
    assert {p.name for p in run_dir.iterdir()} >= {".hydra", "checkpoints", "metrics.jsonl", "results.jsonl"}
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"last.pt", "best.pt"}
    last = storage.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert {"model", "optimizer", "scheduler", "epoch", "rng", "config"} <= set(last)
    metrics = read(run_dir / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert {"train_loss", "train_acc", "test_acc", "lr", "seconds"} <= set(metrics[0])
    best = storage.load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["test_acc"] == max(m["test_acc"] for m in metrics)
    rows = read(run_dir / "results.jsonl")
    curve = [r for r in rows if r["kind"] == "robustness"]
    assert [r["eps"] for r in curve] == [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    for r in curve:
        assert r["attack"] == "pgd" and r["n"] == 32 and 0 <= r["accuracy"] <= 100 and r["seconds"] >= 0
        assert (r["dataset"], r["model"], r["head"], r["gamma"], r["regularizer"], r["lam"], r["alpha"],
                r["training"], r["seed"]) == ("mnist", "2c2f", "blf", 1.5, "logit_squeezing", 0.05, None, "standard", 3)
        assert r["attack.nb_iter"] == 3 and r["checkpoint"] == "best" and r["checkpoint_epoch"] == best["epoch"]
    norms = [r for r in rows if r["kind"] == "norms"]
    assert len(norms) == 1
    # Theorem 3: BLF logits are bounded by gamma * max g < gamma * (sqrt(5)+1)/2.
    assert 0 < norms[0]["logit_linf"] < 1.5 * 1.62
    assert "eps=0.3" in result.stdout


def test_same_seed_same_numbers(tiny_run):
    first, a = tiny_run("training=pgd_at", "training.nb_iter=2", folder="a")
    second, b = tiny_run("training=pgd_at", "training.nb_iter=2", folder="b")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert without_timing(read(first / "metrics.jsonl")) == without_timing(read(second / "metrics.jsonl"))
    assert without_timing(read(first / "results.jsonl")) == without_timing(read(second / "results.jsonl"))


def test_rerun_resumes_extends_and_skips_finished_work(tiny_run):
    run_dir, result = tiny_run("trainer.epochs=1")
    assert result.returncode == 0, result.stderr
    again = tiny_run("trainer.epochs=1")[1]
    assert "evaluation already recorded, skipped" in again.stdout
    assert len(read(run_dir / "metrics.jsonl")) == 1
    # Extending a finished run continues from its last epoch; it ends where a 2-epoch run ends.
    extended = tiny_run("trainer.epochs=2")[1]
    assert extended.returncode == 0, extended.stderr
    straight, _ = tiny_run(folder="straight")
    assert without_timing(read(run_dir / "metrics.jsonl")) == without_timing(read(straight / "metrics.jsonl"))


def test_killed_run_resumes_to_the_same_result(tmp_path):
    settings = [*TINY, "dataset.synthetic_train=3000", "trainer.epochs=4", "trainer.threads=1"]
    straight = tmp_path / "straight"
    assert run_app("train.py", *settings, f"hydra.run.dir={straight}").returncode == 0
    killed = tmp_path / "killed"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    process = subprocess.Popen([sys.executable, str(REPO / "src/train.py"), *settings, f"hydra.run.dir={killed}"],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # somewhere inside a later epoch, or inside a checkpoint write
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = run_app("train.py", *settings, f"hydra.run.dir={killed}")
    assert resumed.returncode == 0, resumed.stderr
    assert without_timing(read(killed / "metrics.jsonl")) == without_timing(read(straight / "metrics.jsonl"))
    assert without_timing(read(killed / "results.jsonl")) == without_timing(read(straight / "results.jsonl"))


def test_evaluate_adds_records_and_keeps_earlier_ones(tiny_run):
    run_dir, result = tiny_run()
    assert result.returncode == 0, result.stderr
    before = read(run_dir / "results.jsonl")
    evaluated = run_app("evaluate.py", f"run_dir={run_dir}", "logger=none", "progress=false", "eval.n=32",
                        "attack.pgd.nb_iter=5", "attack.pgd.eps=[0.1]")
    assert evaluated.returncode == 0, evaluated.stderr
    after = read(run_dir / "results.jsonl")
    curve = [r for r in before if r["kind"] == "robustness"]
    assert all(r in after for r in curve)  # every earlier observation is still there, unchanged
    added = [r for r in after if r.get("attack.nb_iter") == 5]
    assert [r["eps"] for r in added] == [0.1]
    assert (run_dir / ".hydra" / "config.yaml").read_text().count("nb_iter: 3") >= 1  # training config untouched


def bad(result):
    """One clear line on stderr, exit status 2, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    return errors[0]


@pytest.mark.parametrize("override, named", [
    ("head.gamma=0", "head.gamma=0"),
    ("regularizer.lam=-1", "regularizer.lam=-1"),
    ("regularizer.alpha=1.0", "regularizer.alpha=1.0"),
    ("attack.pgd.eps=[0.1,-0.05]", "attack.pgd.eps=-0.05"),
    ("device=tpu", "device='tpu'"),
])
def test_bad_values_fail_clearly_and_leave_nothing(tiny_run, override, named):
    group = {"head": ["head=blf"], "regularizer": ["regularizer=logit_squeezing" if "lam" in override else "regularizer=label_smoothing"]}
    run_dir, result = tiny_run(*group.get(override.split(".")[0], []), override)
    assert named in bad(result)
    assert "allowed" in bad(result)
    assert not run_dir.exists()


def test_unknown_option_is_hydras_clear_error(tiny_run):
    run_dir, result = tiny_run("head=relu")
    assert result.returncode != 0
    assert "Could not find 'head/relu'" in result.stderr and "blf" in result.stderr
    assert not run_dir.exists()


def test_bad_value_never_touches_an_existing_run(tiny_run):
    run_dir, result = tiny_run("head=blf")
    assert result.returncode == 0
    snapshot = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    message = bad(tiny_run("head=blf", "head.gamma=2.0")[1])
    assert "head.gamma" in message and "different run" in message
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == snapshot


def test_evaluate_without_a_run_or_with_a_corrupted_checkpoint(tiny_run, tmp_path):
    missing = tmp_path / "nothing-here"
    assert "no checkpoints/best.pt" in bad(run_app("evaluate.py", f"run_dir={missing}", "logger=none"))
    assert not missing.exists()
    run_dir, result = tiny_run()
    assert result.returncode == 0
    best = run_dir / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])
    results = (run_dir / "results.jsonl").read_bytes()
    assert "unreadable" in bad(run_app("evaluate.py", f"run_dir={run_dir}", "logger=none"))
    assert (run_dir / "results.jsonl").read_bytes() == results


def test_nan_loss_stops_the_run_and_keeps_the_last_good_state(tiny_run):
    run_dir, result = tiny_run("optim.lr=1e30")
    message = bad(result)
    assert "loss became" in message and "epoch 1" in message
    assert not (run_dir / "checkpoints" / "last.pt").exists()


def test_multirun_sweeps_any_key_into_override_named_folders(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_app("train.py", "-m", *TINY, "trainer.epochs=1", "head=identity,blf", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    folders = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert len(folders) == 2 and any("head:blf" in f for f in folders) and any("head:identity" in f for f in folders)
    assert not any(c in f for f in folders for c in "=,[]")  # usable unquoted as run_dir=<folder>
    heads = {read(sweep / f / "results.jsonl")[0]["head"] for f in folders}
    assert heads == {"identity", "blf"}


def test_wandb_offline_logs_each_job(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_app("train.py", "-m", *TINY, "trainer.epochs=1", "logger=wandb", "seed=0,1",
                     f"hydra.sweep.dir={sweep}", env={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr
    runs = sorted(sweep.glob("*/wandb/offline-run-*"))
    assert len(runs) == 2


def test_nan_check_keeps_epoch_one_when_epoch_two_diverges(tmp_path):
    from omegaconf import OmegaConf

    from blf import data, heads, models, trainer, training
    from blf.errors import NonFiniteLossError
    from blf.regularizers import Regularizer
    from blf.tracking import Tracker
    from blf.workspace import Workspace

    class DivergesInEpochTwo(Regularizer):
        calls = 0

        def __call__(self, logits, y):
            self.calls += 1
            loss = super().__call__(logits, y)
            return loss * float("nan") if self.calls > 2 else loss

    dataset = data.load(OmegaConf.create({"name": "mnist", "synthetic": True, "synthetic_train": 64, "synthetic_test": 16, "synthetic_seed": 0}))
    classifier = models.build(OmegaConf.create({"name": "2c2f"}), heads.Identity(), (1, 28, 28), 10)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [])
    workspace = Workspace(tmp_path)
    with pytest.raises(NonFiniteLossError, match="epoch 2"):
        trainer.fit(workspace, classifier, dataset, training.Standard(), DivergesInEpochTwo(), optimizer, scheduler,
                    epochs=3, batch_size=32, seed=0, config={}, device=torch.device("cpu"), tracker=Tracker(), progress=False)
    assert workspace.load("last")["epoch"] == 1
    assert [m["epoch"] for m in workspace.metrics()] == [1]
    assert all(torch.isfinite(v).all() for v in workspace.load("last")["model"].values())
    json.dumps(workspace.metrics())


@pytest.mark.slow
def test_the_issue_command_on_real_mnist(tmp_path):
    """The 4C3F + BLF + LSQ + PGD-AT smoke command on real MNIST (about a minute on 2 cores)."""
    run_dir = tmp_path / "run"
    result = run_app("train.py", "model=4c3f", "head=blf", "head.gamma=1.0", "regularizer=logit_squeezing",
                     "regularizer.lam=0.1", "training=pgd_at", "trainer.epochs=1", "dataset.n_train=1000",
                     "eval.n=200", "seed=1", "logger=none", "progress=false", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    rows = [r for r in read(run_dir / "results.jsonl") if r["kind"] == "robustness"]
    assert len(rows) == 7 and all(r["n"] == 200 and r["model"] == "4c3f" and r["training"] == "pgd_at" for r in rows)


def test_evaluate_attack_list_reports_worst_case_verdicts_and_analyses(tiny_run):
    run_dir, result = tiny_run("head=blf")
    assert result.returncode == 0, result.stderr
    evaluated = run_app(
        "evaluate.py", f"run_dir={run_dir}", "logger=none", "progress=false", "eval.n=32",
        "attack=[pgd,square,pgd_tanh_surrogate]", "attack.pgd.nb_iter=3", "attack.pgd_tanh_surrogate.nb_iter=3",
        "attack.square.n_queries=30", "analysis=[operator_norm,loss_surface]", "eval.loss_surface.points=2",
        "eval.loss_surface.radius=0.02", "eval.loss_surface.step=0.01",
        "eval.integrity.unbounded.nb_iter=10", "eval.integrity.convergence.nb_iter=3",
        "eval.integrity.convergence.iter_factor=2", "eval.integrity.convergence.restarts=2",
    )
    assert evaluated.returncode == 0, evaluated.stderr
    rows = read(run_dir / "results.jsonl")
    kinds = {r["kind"] for r in rows}
    assert {"robustness", "worst_case", "integrity", "norms", "operator_norm", "operator_norm_summary", "loss_surface"} <= kinds
    worst = {r["eps"]: r for r in rows if r["kind"] == "worst_case"}
    at_015 = [r for r in rows if r["kind"] == "robustness" and r["eps"] == 0.15]
    assert worst[0.15]["attacks"] == "pgd+pgd_tanh_surrogate+square"
    assert worst[0.15]["accuracy"] <= min(r["accuracy"] for r in at_015)
    for r in rows:
        if r["kind"] == "robustness":
            stored = storage.load_tensors(run_dir / r["per_example"])
            assert stored["correct"].shape == (32,) and int(stored["correct"].sum()) == r["correct"]
    checks = {r["check"]: r["status"] for r in rows if r["kind"] == "integrity"}
    assert set(checks) == {"monotonic", "unbounded_attack", "gradient_free_vs_gradient", "input_gradients", "pgd_convergence"}
    assert set(checks.values()) <= {"pass", "FAIL", "skipped"}
    assert "Integrity checks" in evaluated.stdout and "worst_case" in evaluated.stdout
    assert (run_dir / "analysis" / "loss_surface.png").is_file() and (run_dir / "analysis" / "loss_surface.pt").is_file()


def test_surrogate_attack_on_a_baseline_is_refused(tiny_run):
    run_dir, result = tiny_run()
    assert result.returncode == 0
    message = bad(run_app("evaluate.py", f"run_dir={run_dir}", "logger=none", "attack=[pgd_tanh_surrogate]"))
    assert "head=identity" in message and "allowed: blf, lblf" in message


def test_bf16_policy_runs_and_checks_agreement_with_fp32(tiny_run):
    run_dir, result = tiny_run("trainer.amp=bf16")
    assert result.returncode == 0, result.stderr
    rows = read(run_dir / "results.jsonl")
    precision = [r for r in rows if r["kind"] == "integrity" and r["check"] == "precision"]
    assert len(precision) == 1 and precision[0]["status"] in {"pass", "FAIL"}
    assert "bf16" in precision[0]["detail"] and "fp32" in precision[0]["detail"]
    assert "error: trainer.amp='fp16'" in tiny_run("trainer.amp=fp16", folder="fp16")[1].stderr


def test_cifar_without_data_fails_at_once_and_synthetic_runs(tmp_path):
    missing = run_app("train.py", "dataset=cifar10", "model=resnet18", f"paths.data_dir={tmp_path / 'nothing'}",
                      "dataset.download=false", "logger=none", f"hydra.run.dir={tmp_path / 'run'}")
    assert "CIFAR-10 is not in" in bad(missing) and not (tmp_path / "run").exists()
    run_dir = tmp_path / "synthetic"
    result = run_app("train.py", *TINY, "dataset=cifar10", "model=resnet18", "model.width=4", "model.blocks=[1,1,1,1]",
                     "training=trades", "training.nb_iter=2", "trainer.epochs=1", "attack.pgd.eps=[0.0,0.0313725]",
                     f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    assert "eps=8/255" in result.stdout
    rows = [r for r in read(run_dir / "results.jsonl") if r["kind"] == "robustness"]
    assert {(r["dataset"], r["synthetic"], r["training"], r["beta"]) for r in rows} == {("cifar10", True, "trades", 6.0)}


def test_compiled_training_matches_the_plain_run(tiny_run):
    """trainer.compile=true compiles the training steps; the numbers match eager execution."""
    compiled, result = tiny_run("trainer.compile=true", "trainer.epochs=1", folder="compiled")
    assert result.returncode == 0, result.stderr
    eager, result = tiny_run("trainer.epochs=1", folder="eager")
    assert result.returncode == 0, result.stderr
    (a,), (b,) = read(compiled / "metrics.jsonl"), read(eager / "metrics.jsonl")
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert a["test_acc"] == pytest.approx(b["test_acc"], abs=2.0)
