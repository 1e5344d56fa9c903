"""On a real SLURM (`make test-slurm` brings up a single-node one with tools/slurm/local-cluster.sh):
a sweep through `hydra/launcher=slurm_cpu`, a study through the driver (and a rerun that launches
nothing), a preemption (USR2) and a requeue mid-training that resume from last.pt with no epoch
or record twice, and a failing job that sacct calls FAILED and the driver names with its logs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(shutil.which("sbatch") is None or subprocess.run(["sinfo"], capture_output=True).returncode != 0,
                       reason="no running SLURM (make test-slurm brings one up)"),
]

# One core and 1 GB per job on the local node's CPU partition; short jobs.
LAUNCHER = ["hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
            "hydra.launcher.timeout_min=20", "trainer.threads=1"]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "WANDB_MODE": "disabled", "PYTHONHASHSEED": "0"}


def run(*command: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**ENV, **(env or {})})


def sacct(job: str) -> list[tuple[str, str, str]]:
    """(job id, state, exit code) of a job's allocation (not its steps)."""
    out = run("sacct", "-n", "-P", "-X", "-j", job, "-o", "JobID,State,ExitCode").stdout
    return [tuple(line.split("|")) for line in out.splitlines() if line.strip()]


def final_states(sweep: Path) -> set[str]:
    """The sacct states of a sweep's jobs once they have ended (a job whose result submitit has
    read may still be wrapping up for a moment)."""
    ending = {"PENDING", "RUNNING", "COMPLETING", "REQUEUED"}

    def ended():
        states = {state for job in job_ids(sweep) for _, state, _ in sacct(job)}
        return states if states and not states & ending else None

    return wait_until(ended, 60, "the jobs to end in sacct")


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_until(condition, seconds: float, what: str, every: float = 1.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


def job_ids(sweep: Path) -> list[str]:
    """The SLURM jobs of a sweep (submitit's folders under <sweep>/.submitit/)."""
    return sorted(p.name for p in (sweep / ".submitit").iterdir() if p.is_dir() and p.name[0].isdigit())


def test_a_sweep_runs_on_slurm(tmp_path):
    sweep = tmp_path / "sweep"
    result = run(sys.executable, "src/train.py", "-m", *TINY, *LAUNCHER, "trainer.epochs=1", "seed=0,1",
                 f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p for p in sweep.iterdir() if (p / "finished.json").is_file())
    assert len(runs) == 2 and all(read(r / "results.jsonl") for r in runs)
    assert final_states(sweep) == {"COMPLETED"}


STUDY = ["dataset.synthetic=true", "dataset.n_train=null", "dataset.synthetic_train=256", "dataset.synthetic_test=64", "eval.n=32",
         "trainer.epochs=1", "attack.pgd.nb_iter=2", "eval.integrity.enabled=false", "analysis=[]", "logger=none",
         "progress=false", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=20"]


def study(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "blf.study", "demo", "--profile", "smoke", "--launcher", "slurm_cpu",
               "--progress-every", "5", "--sweep-dir", str(tmp_path / "multirun"), "--out-dir", str(tmp_path / "results"),
               *STUDY, *extra)


def test_a_study_runs_through_the_driver_and_a_rerun_launches_nothing(tmp_path):
    first = study(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "[grid] 2/2 runs finished" in first.stderr
    assert (tmp_path / "results" / "records.csv").is_file() and (tmp_path / "results" / "demo.md").is_file()
    jobs = job_ids(tmp_path / "multirun")
    again = study(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished, not launched" in again.stdout and not [c for c in again.stdout.splitlines() if c.startswith("$ ")]
    assert job_ids(tmp_path / "multirun") == jobs  # nothing new was submitted


def start_slow_sweep(sweep: Path, epochs: int) -> subprocess.Popen:
    """A one-job sweep whose epochs take seconds (BLF_SLOW), launched in the background."""
    return subprocess.Popen([sys.executable, "src/train.py", "-m", *TINY, *LAUNCHER, f"trainer.epochs={epochs}",
                             "analysis=[]", "eval.integrity.enabled=false", f"hydra.sweep.dir={sweep}"],
                            cwd=REPO, env={**ENV, "BLF_SLOW": "epoch:3"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def the_run(sweep: Path) -> Path:
    return wait_until(lambda: next((p for p in sweep.glob("*") if (p / ".hydra").is_dir()), None), 120, "the run folder")


def epochs_done(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    return len(read(metrics)) if metrics.is_file() else 0


def release_when_requeued(job: str) -> None:
    """A requeued job waits about two minutes (its BeginTime) before it runs again: start it now."""
    def pending() -> bool:
        state = run("squeue", "-h", "-j", job, "-o", "%T").stdout.strip()
        return state == "PENDING"

    wait_until(pending, 120, f"job {job} to be requeued")
    run("scontrol", "update", f"JobId={job}", "StartTime=now")


def assert_resumed_once(run_dir: Path, epochs: int) -> None:
    history = read(run_dir / "metrics.jsonl")
    assert [row["epoch"] for row in history] == list(range(1, epochs + 1))  # no epoch twice, none missing
    rows = read(run_dir / "results.jsonl")
    keys = [(r["kind"], r.get("attack"), r.get("eps"), r.get("check"), r.get("layer")) for r in rows]
    assert len(keys) == len(set(keys)) and any(r["kind"] == "robustness" for r in rows)
    assert "resuming" in (run_dir / "train.log").read_text()
    assert (run_dir / "finished.json").is_file()


@pytest.mark.parametrize("interruption", ["preemption", "requeue"])
def test_an_interrupted_job_resumes_from_its_last_checkpoint(tmp_path, interruption):
    sweep = tmp_path / "sweep"
    # 3 s per epoch: a requeued job goes on for KillWait (10 s) before it is killed, and must
    # still have epochs left when it resumes.
    epochs = 12
    process = start_slow_sweep(sweep, epochs)
    run_dir = the_run(sweep)
    wait_until(lambda: epochs_done(run_dir) >= 2, 300, "two epochs")
    (job,) = job_ids(sweep)
    if interruption == "preemption":
        run("scancel", "--signal=USR2", job)  # what a preempting scheduler sends; submitit requeues the job
    else:
        run("scontrol", "requeue", job)  # the job is killed (at KillWait) and queued again
    release_when_requeued(job)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    assert_resumed_once(run_dir, epochs)
    assert epochs_done(run_dir) == epochs


def test_a_failing_job_is_failed_in_sacct_and_named_by_the_driver(tmp_path):
    # An lr that makes the loss overflow: the app's NonFiniteLossError, inside the job.
    result = study(tmp_path, "optim.lr=1e30", "optim.momentum=0.9")
    assert result.returncode == 2 and f"error: no records in {tmp_path / 'multirun'}" in result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith("!! not finished: ")]
    assert len(failed) == 2 and all("train.log" in line and "_log." in line for line in failed)
    assert final_states(tmp_path / "multirun") == {"FAILED"}
