"""The two apps as users run them: `blf.app.train` / `blf.app.evaluate` in process on composed
configs (what src/train.py and src/evaluate.py call), and the command lines themselves where the
process matters (exit status, console, log files, kills, multiruns)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from blf import app
from blf.errors import CheckpointError, ConfigError, DataError, NonFiniteLossError
from blf.nn import models, regularizers
from blf.run import records, storage
from conftest import REPO, TINY, bad, compose_config, evaluate, run_app, train, without_timing


def read(path):
    return storage.read_jsonl(path)


def test_a_run_leaves_checkpoints_metrics_and_tidy_records(tmp_path):
    run_dir = tmp_path / "run"
    outcome = train(run_dir, "head=blf", "head.gamma=1.5", "regularizer=logit_squeezing", "regularizer.lam=0.05", "seed=3")
    assert {p.name for p in run_dir.iterdir()} >= {"checkpoints", "metrics.jsonl", "results.jsonl", "finished.json"}
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"last.pt", "best.pt"}
    last = storage.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert {"model", "optimizer", "scheduler", "epoch", "rng", "config", "trained"} <= set(last)
    metrics = read(run_dir / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2] and metrics == outcome.progress.history
    assert {"train_loss", "train_acc", "test_acc", "lr", "seconds"} <= set(metrics[0])
    best = storage.load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["test_acc"] == max(m["test_acc"] for m in metrics)
    rows = read(run_dir / "results.jsonl")
    assert rows == outcome.rows
    curve = [r for r in rows if r["kind"] == "robustness"]
    assert [r["eps"] for r in curve] == [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    for r in curve:
        assert r["attack"] == "pgd" and r["n"] == 32 and 0 <= r["accuracy"] <= 100 and r["seconds"] >= 0
        assert (r["dataset"], r["model"], r["head"], r["gamma"], r["regularizer"], r["lam"], r["alpha"],
                r["training"], r["seed"]) == ("mnist", "2c2f", "blf", 1.5, "logit_squeezing", 0.05, None, "standard", 3)
        assert r["attack.nb_iter"] == 3 and r["checkpoint"] == "best" and r["checkpoint_epoch"] == best["epoch"]
        # Provenance: schema, the code that evaluated and the code that trained, the thread count.
        assert r["schema_version"] == 3 and r["trained_schema_version"] == 3 and r["augmented"] is False
        assert r["code_commit"] == r["trained_code_commit"] and len(r["code_commit"] or "x" * 40) == 40
        assert r["threads"] == torch.get_num_threads() and len(r["run_key"]) == 40
    norms = [r for r in rows if r["kind"] == "norms"]
    assert len(norms) == 1
    # Theorem 3: BLF logits are bounded by gamma * max g < gamma * (sqrt(5)+1)/2.
    assert 0 < norms[0]["logit_linf"] < 1.5 * 1.62


def test_same_seed_same_numbers(tmp_path):
    a = train(tmp_path / "a", "training=pgd_at", "training.nb_iter=2")
    b = train(tmp_path / "b", "training=pgd_at", "training.nb_iter=2")
    assert without_timing(a.progress.history) == without_timing(b.progress.history)
    assert without_timing(a.rows) == without_timing(b.rows)


def test_rerun_resumes_extends_and_skips_finished_work(tmp_path, caplog):
    run_dir = tmp_path / "run"
    train(run_dir, "trainer.epochs=1")
    caplog.clear()
    again = train(run_dir, "trainer.epochs=1")
    assert "evaluation already recorded, skipped" in caplog.text and again.added == []
    assert len(read(run_dir / "metrics.jsonl")) == 1
    # Extending a finished run continues from its last epoch; it ends where a 2-epoch run ends.
    train(run_dir, "trainer.epochs=2")
    straight = train(tmp_path / "straight")
    assert without_timing(read(run_dir / "metrics.jsonl")) == without_timing(straight.progress.history)
    # Asking for fewer epochs than the run has trained is refused, not silently mislabelled.
    with pytest.raises(CheckpointError, match=r"trained 2 epochs, but trainer.epochs=1; allowed: trainer.epochs >= 2"):
        train(run_dir, "trainer.epochs=1")


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


def test_evaluate_adds_records_and_keeps_earlier_ones(tmp_path):
    run_dir = tmp_path / "run"
    before = train(run_dir).rows
    evaluate(run_dir, "logger=none", "progress=false", "eval.n=32", "attack.pgd.nb_iter=5", "attack.pgd.eps=[0.1]")
    after = read(run_dir / "results.jsonl")
    curve = [r for r in before if r["kind"] == "robustness"]
    assert all(r in after for r in curve)  # every earlier observation is still there, unchanged
    added = [r for r in after if r.get("attack.nb_iter") == 5]
    assert [r["eps"] for r in added] == [0.1]
    # The run's training config is untouched: its checkpoint still says what it trained with.
    assert storage.load_checkpoint(run_dir / "checkpoints" / "last.pt")["config"]["attack"]["pgd"]["nb_iter"] == 3


@pytest.mark.parametrize("override, named", [
    ("head.gamma=0", "head.gamma=0"),
    ("regularizer.lam=-1", "regularizer.lam=-1"),
    ("regularizer.alpha=1.0", "regularizer.alpha=1.0"),
    ("attack.pgd.eps=[0.1,-0.05]", "attack.pgd.eps=-0.05"),
    ("device=tpu", "device='tpu'"),
    ("eval.n=0", "eval.n=0"),
    ("eval.checkpoint=middle", "eval.checkpoint='middle'"),
    ("trainer.compile=maybe", "trainer.compile='maybe'"),
])
def test_bad_values_fail_at_once_by_name(tmp_path, override, named):
    group = {"head": ["head=blf"], "regularizer": ["regularizer=logit_squeezing" if "lam" in override else "regularizer=label_smoothing"]}
    with pytest.raises(ConfigError) as error:
        train(tmp_path / "run", *group.get(override.split(".")[0], []), override)
    assert named in str(error.value) and "allowed" in str(error.value)
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any training


def test_bad_values_on_the_command_line_give_one_line_and_leave_nothing(tmp_path):
    run_dir = tmp_path / "run"
    result = run_app("train.py", *TINY, "head=blf", "head.gamma=0", f"hydra.run.dir={run_dir}")
    assert "head.gamma=0" in bad(result) and "allowed" in bad(result)
    assert not run_dir.exists()


def test_unknown_option_is_hydras_clear_error(tmp_path):
    run_dir = tmp_path / "run"
    result = run_app("train.py", *TINY, "head=relu", f"hydra.run.dir={run_dir}")
    assert result.returncode != 0
    assert "Could not find 'head/relu'" in result.stderr and "blf" in result.stderr
    assert not run_dir.exists()


def test_bad_value_never_touches_an_existing_run(tmp_path):
    run_dir = tmp_path / "run"
    train(run_dir, "head=blf")
    snapshot = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match="head.gamma.*different run|different run.*head.gamma"):
        train(run_dir, "head=blf", "head.gamma=2.0")
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == snapshot


def test_study_bookkeeping_does_not_make_another_run(tmp_path):
    """A run's config carries no study spec; run folders written when it did (a `study` section
    and `study_limits`) stay resumable and finished."""
    from blf.run import identity

    base = ["experiment=fig3", "profile=smoke", "trainer.epochs=1", "dataset.n_train=null"]
    run_dir = tmp_path / "run"
    first = train(run_dir, *base)
    assert "study" not in compose_config(overrides=base) and "study_limits" not in compose_config(overrides=base)
    edited = ["+study.title=another", "+study.seeds=[7]", "+study_limits.seeds=3", "+study.grid={}"]
    again = train(run_dir, *base, *edited)
    assert again.added == [] and again.progress.epoch == 1  # resumed, found finished
    configs = [app.assembly.for_training(compose_config(overrides=[*TINY, *base, *e])).config for e in ([], edited)]
    assert identity.job_key(configs[0]) == identity.job_key(configs[1])
    assert first.rows[0]["run_key"] == again.rows[0]["run_key"]


def test_evaluate_without_a_run_or_with_a_corrupted_checkpoint(tmp_path):
    missing = tmp_path / "nothing-here"
    assert f"error: {missing} does not exist; allowed: a run folder" in bad(run_app("evaluate.py", f"run_dir={missing}", "logger=none"))
    assert not missing.exists()
    run_dir = tmp_path / "run"
    train(run_dir)
    best = run_dir / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])
    results = (run_dir / "results.jsonl").read_bytes()
    assert "unreadable" in bad(run_app("evaluate.py", f"run_dir={run_dir}", "logger=none"))
    assert (run_dir / "results.jsonl").read_bytes() == results


def test_nan_loss_stops_the_run_and_keeps_the_last_good_state(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="loss became.*epoch 1"):
        train(run_dir, "optim.lr=1e30")
    assert not (run_dir / "checkpoints" / "last.pt").exists()


def test_nan_check_keeps_epoch_one_when_epoch_two_diverges(tmp_path, monkeypatch):
    calls = {"n": 0}
    plain = regularizers.Regularizer.__call__

    def diverges_in_epoch_two(self, logits, y):
        calls["n"] += 1
        loss = plain(self, logits, y)
        return loss * float("nan") if calls["n"] > 8 else loss  # 256 images in batches of 32

    monkeypatch.setattr(regularizers.Regularizer, "__call__", diverges_in_epoch_two)
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="epoch 2"):
        train(run_dir, "trainer.epochs=3", "trainer.batch_size=32")
    last = storage.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["epoch"] == 1 and [m["epoch"] for m in read(run_dir / "metrics.jsonl")] == [1]
    assert all(torch.isfinite(v).all() for v in last["model"].values())


def test_multirun_sweeps_any_key_into_override_named_folders(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_app("train.py", "-m", *TINY, "trainer.epochs=1", "head=identity,blf", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    folders = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert len(folders) == 2 and any("head:blf" in f for f in folders) and any("head:identity" in f for f in folders)
    assert not any(c in f for f in folders for c in "=,[]")  # usable unquoted as run_dir=<folder>
    assert not any("epochs" in f for f in folders)  # raising trainer.epochs continues these folders
    heads = {read(sweep / f / "results.jsonl")[0]["head"] for f in folders}
    assert heads == {"identity", "blf"}


def test_raising_epochs_continues_the_default_folder(tmp_path):
    """The README's promise, with the folders Hydra names by default (outputs/<run name>)."""
    first = run_app("train.py", *TINY, "trainer.epochs=1", "head=blf", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = run_app("train.py", *TINY, "trainer.epochs=2", "head=blf", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    (run_dir,) = (tmp_path / "outputs").iterdir()
    assert "resuming" in second.stdout and [m["epoch"] for m in read(run_dir / "metrics.jsonl")] == [1, 2]


def test_the_log_file_holds_what_the_console_showed_without_progress_floods(tmp_path):
    run_dir = tmp_path / "run"
    result = run_app("train.py", *[o for o in TINY if o != "progress=false"], "attack=[pgd,square]",
                     "attack.square.n_queries=5", "attack.square.eps=[0.1]", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    log = (run_dir / "train.log").read_text()
    for text in ("epoch 1/2", "epoch 2/2", "worst_case", "Integrity checks", "gradient_free_vs_gradient", "eps=0.3",
                 "best epoch", "square eps=0.1"):
        assert text in result.stdout and text in log, text
    # stderr is a pipe here: no carriage-return bar redraws, one line per epoch and per (attack, eps).
    assert "\r" not in result.stderr + result.stdout
    assert result.stdout.count("epoch 1/2") == 1 and result.stdout.count("pgd eps=0.05:") == 1
    evaluated = run_app("evaluate.py", f"run_dir={run_dir}", "logger=none", "eval.n=32", "attack.pgd.nb_iter=2",
                        "attack.pgd.eps=[0.1]", "eval.integrity.enabled=false")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "pgd eps=0.1:" in (run_dir / "evaluate.log").read_text() and "worst_case" in evaluated.stdout


def test_wandb_offline_logs_each_job(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_app("train.py", "-m", *TINY, "trainer.epochs=1", "logger=wandb", "seed=0,1",
                     f"hydra.sweep.dir={sweep}", env={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr
    runs = sorted(sweep.glob("*/wandb/offline-run-*"))
    assert len(runs) == 2


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


def test_evaluate_attack_list_reports_worst_case_verdicts_and_analyses(tmp_path, caplog):
    run_dir = tmp_path / "run"
    train(run_dir, "head=blf")
    evaluate(
        run_dir, "logger=none", "progress=false", "eval.n=32",
        "attack=[pgd,square,pgd_tanh_surrogate]", "attack.pgd.nb_iter=3", "attack.pgd_tanh_surrogate.nb_iter=3",
        "attack.square.n_queries=30", "analysis=[operator_norm,loss_surface]", "eval.loss_surface.points=2",
        "eval.loss_surface.radius=0.02", "eval.loss_surface.step=0.01",
        "eval.integrity.unbounded.nb_iter=10", "eval.integrity.gradient_free.n_queries=20",
        "eval.integrity.convergence.iter_factor=2", "eval.integrity.convergence.restarts=2",
    )
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
    assert set(checks) == {"monotonic", "unbounded_attack", "gradient_free_vs_gradient", "input_gradients", "pgd_convergence",
                           "saturation", "attack_gap"}
    # Every record of an attack carries its outcome: the one the per-example file holds.
    for r in rows:
        if r["kind"] == "robustness":
            assert (records.decode_outcome(r["outcome"], 32) == storage.load_tensors(run_dir / r["per_example"])["correct"].numpy()).all()
    assert set(checks.values()) <= {"pass", "FAIL", "skipped"}
    assert "Integrity checks" in caplog.text and "worst_case" in caplog.text
    # The arrays only: figures are drawn at report time (blf.report.renderers), never by a run.
    assert (run_dir / "analysis" / "loss_surface.pt").is_file() and not list(run_dir.rglob("*.png"))


def test_surrogate_attack_on_a_baseline_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    train(run_dir)
    message = bad(run_app("evaluate.py", f"run_dir={run_dir}", "logger=none", "attack=[pgd_tanh_surrogate]"))
    assert "head=identity" in message and "allowed: blf, lblf" in message


def test_cifar_without_data_fails_at_once_and_synthetic_runs(tmp_path):
    with pytest.raises(DataError, match="CIFAR-10 is not in"):
        train(tmp_path / "run", "dataset=cifar10", "model=resnet18", f"paths.data_dir={tmp_path / 'nothing'}",
              "dataset.download=false", "logger=none", tiny=False)
    assert not (tmp_path / "run").exists()
    outcome = train(tmp_path / "synthetic", "dataset=cifar10", "model=resnet18", "model.width=4", "model.blocks=[1,1,1,1]",
                    "training=trades", "training.nb_iter=2", "trainer.epochs=1", "attack.pgd.eps=[0.0,0.0313725]")
    rows = [r for r in outcome.rows if r["kind"] == "robustness"]
    assert {(r["dataset"], r["synthetic"], r["training"], r["beta"], r["augmented"]) for r in rows} == {
        ("cifar10", True, "trades", 6.0, True)}


# --- settings reach what they configure (the defect class of a built-but-unused setting) ---


CIFAR = ["dataset=cifar10", "model=resnet18", "model.width=4", "model.blocks=[1,1,1,1]", "trainer.epochs=1",
         "dataset.synthetic_train=64", "dataset.synthetic_test=32", "trainer.batch_size=32", "eval.integrity.enabled=false",
         "attack.pgd.eps=[0.0,0.03]", "attack.pgd.nb_iter=1"]


def test_augmentation_runs_in_every_cifar_training_step(tmp_path, monkeypatch):
    from blf import data

    calls = []
    original = data.Augmentation.__call__

    def spy(self, x):
        calls.append(x.shape[0])
        return original(self, x)

    monkeypatch.setattr(data.Augmentation, "__call__", spy)
    train(tmp_path / "on", *CIFAR)
    assert calls == [32, 32]  # every batch of the epoch, before the step
    calls.clear()
    train(tmp_path / "off", *CIFAR, "dataset.augment.crop_padding=0", "dataset.augment.flip=false")
    assert calls == []


@pytest.mark.parametrize("change", ["dataset.augment.flip=false", "dataset.augment.crop_padding=2", "trainer.amp=bf16",
                                    "optim.weight_decay=0.1"])
def test_cifar_settings_change_the_training_metrics(tmp_path, change):
    """Done-means of the wiring issue: the same seed, two values, different training metrics."""
    base = train(tmp_path / "base", *CIFAR).progress.history[0]
    changed = train(tmp_path / "changed", *CIFAR, change).progress.history[0]
    assert (base["train_loss"], base["train_acc"]) != (changed["train_loss"], changed["train_acc"])


def test_bf16_autocast_covers_training_steps_training_attacks_and_evaluation(tmp_path, monkeypatch):
    seen = []
    forward = models.Classifier.forward

    def spy(self, x):
        seen.append((self.training, torch.is_grad_enabled(), torch.is_autocast_enabled("cpu")))
        return forward(self, x)

    monkeypatch.setattr(models.Classifier, "forward", spy)
    settings = ["training=pgd_at", "training.nb_iter=2", "trainer.epochs=1", "eval.integrity.enabled=false"]
    outcome = train(tmp_path / "bf16", *settings, "trainer.amp=bf16")
    steps = [s for s in seen if s[0]]  # train mode: the update steps
    crafting = [s for s in seen if not s[0] and s[1]]  # eval mode with gradients: PGD during training and evaluation
    assert steps and crafting and all(s[2] for s in steps) and all(s[2] for s in crafting)
    assert all(autocast for _, _, autocast in seen)
    precision = [r for r in outcome.rows if r["kind"] == "integrity"]
    assert precision == []  # integrity disabled: no precision verdict either
    seen.clear()
    train(tmp_path / "fp32", *settings)
    assert seen and not any(autocast for _, _, autocast in seen)


def test_bf16_policy_checks_agreement_with_fp32(tmp_path):
    outcome = train(tmp_path / "run", "trainer.amp=bf16")
    precision = [r for r in outcome.rows if r["kind"] == "integrity" and r["check"] == "precision"]
    assert len(precision) == 1 and precision[0]["status"] in {"pass", "FAIL"}
    assert "bf16" in precision[0]["detail"] and "fp32" in precision[0]["detail"]
    with pytest.raises(ConfigError, match="trainer.amp='fp16'"):
        train(tmp_path / "fp16", "trainer.amp=fp16")


def test_compile_is_applied_to_the_training_steps(tmp_path, monkeypatch):
    compiled = []

    class Counting(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module, self.calls = module, 0

        def forward(self, x):
            self.calls += 1
            return self.module(x)

    modes = []

    def fake_compile(module, **kwargs):
        compiled.append(Counting(module))
        modes.append(kwargs.get("mode"))
        return compiled[-1]

    monkeypatch.setattr(torch, "compile", fake_compile)
    train(tmp_path / "eager", "trainer.epochs=1")
    assert compiled == []
    train(tmp_path / "compiled", "trainer.epochs=1", "trainer.compile=true", "trainer.batch_size=32")
    assert len(compiled) == 1 and compiled[0].calls == 8  # every step of the epoch (256 images / 32)
    # A mode's name reaches torch.compile (reduce-overhead: CUDA graphs on a GPU).
    train(tmp_path / "graphs", "trainer.epochs=1", "trainer.compile=reduce-overhead", "trainer.batch_size=32")
    assert modes == [None, "reduce-overhead"] and compiled[1].calls == 8


def test_compiled_training_matches_the_plain_run(tmp_path):
    """trainer.compile=true with the real torch.compile: the numbers match eager execution
    (with dropout drawn by eager's RNG: inductor's own random numbers differ by design)."""
    import torch._inductor.config

    # The config module's own patch: monkeypatch's undo would hide the setting from torch afterwards.
    with torch._inductor.config.patch(fallback_random=True):
        (a,) = train(tmp_path / "compiled", "trainer.compile=true", "trainer.epochs=1").progress.history
    (b,) = train(tmp_path / "eager", "trainer.epochs=1").progress.history
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert a["test_acc"] == pytest.approx(b["test_acc"], abs=2.0)


@pytest.mark.slow
def test_the_fast_adversarial_training_step_matches_eager(tmp_path):
    """The fast path of make gpu-check, `trainer.compile=reduce-overhead` (CUDA graphs on a GPU;
    on a CPU, torch.compile's default) with fused SGD, on PGD adversarial training: after the same
    steps, the same accuracy as eager within 0.5 points and the same weights (up to six minutes of
    compilation on a 2-core CPU)."""
    import torch._inductor.config

    at = ("training=pgd_at", "training.nb_iter=3", "trainer.epochs=1")
    with torch._inductor.config.patch(fallback_random=True):
        fast = train(tmp_path / "fast", *at, "trainer.compile=reduce-overhead", "+optim.fused=true")
    (a,) = fast.progress.history
    (b,) = train(tmp_path / "eager", *at).progress.history
    assert abs(a["test_acc"] - b["test_acc"]) <= 0.5, (a, b)
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
    from blf.run import storage

    saved = storage.load_checkpoint(tmp_path / "fast" / "checkpoints" / "last.pt")
    assert saved["optimizer"]["param_groups"][0]["fused"] is True  # the fused SGD kernel trained it
    # The same updates: the weights agree to 1e-6 (measured 5e-10; a learning rate 5% off moves them 1e-4).
    eager = storage.load_checkpoint(tmp_path / "eager" / "checkpoints" / "last.pt")["model"]
    for name, weight in saved["model"].items():
        torch.testing.assert_close(weight, eager[name], atol=1e-6, rtol=0, msg=name)


def test_runs_saved_before_the_configs_named_their_classes_resume_and_evaluate(tmp_path):
    """Checkpoints whose config has no `_target_` (written before the options named their class)
    still resume and evaluate: the class is the one the option names now."""
    run_dir = tmp_path / "run"
    first = train(run_dir, "head=blf", "trainer.epochs=1")
    for which in ("best", "last"):
        path = run_dir / "checkpoints" / f"{which}.pt"
        state = storage.load_checkpoint(path)
        for group in ("model", "head", "regularizer", "training"):
            del state["config"][group]["_target_"]
        storage.save_checkpoint(state, path)
    again = evaluate(run_dir, "eval.n=16", "logger=none", "attack.pgd.nb_iter=2")
    clean = {r["eps"]: r["accuracy"] for r in again.added if r["kind"] == "robustness"}
    assert again.added and clean[0.0] == next(r["accuracy"] for r in first.rows if r["kind"] == "robustness" and r["eps"] == 0.0)
    resumed = train(run_dir, "head=blf", "trainer.epochs=2")
    assert resumed.progress.epoch == 2 and [h["epoch"] for h in storage.read_jsonl(run_dir / "metrics.jsonl")] == [1, 2]
