"""The end-to-end stage of `make gpu-check`: the real apps, on tiny settings, on this machine's device.

Timed cases say how fast a step is; this stage says whether the whole path works on the device,
as a researcher would run it, each step a subprocess of the same Python:
- the study driver on MNIST 2C2F (`python -m blf.study demo`: the Baseline and BLF, trained,
  evaluated with the paper's attacks, the adaptive set and the integrity checks, reported);
- `src/train.py` on synthetic CIFAR-10 with a tiny ResNet-18 under `trainer.amp=bf16
  trainer.compile=true`: standard training (the Baseline) and PGD adversarial training (BLF);
- `src/evaluate.py` on the BLF run with every option of `conf/attack` (the transfer attack from the
  Baseline), the integrity checks and every analysis;
- `python -m blf.report`, `python -m blf.export` in each format, and `blf.load` onto the device;
- then, in this process: every run folder finished, every record on the schema and finite.
Each step's pass or failure, with its error text, goes into the check's JSON; a failed step does not
stop the later ones that do not need it.

Settings stay small (a few batches, cheap attack budgets): the stage proves the path, it does not
measure robustness. `tiny=True` shrinks them further for the CPU (tests/test_gpu_check.py).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# Every option of conf/attack but the set (adaptive.yaml names the others, which run here anyway).
ATTACKS = sorted({p.stem for p in (CONF / "attack").glob("*.yaml")} - {"adaptive"})
# Budgets that make each attack cheap: a few iterations, one restart, one budget.
CHEAP = {"square": {"n_queries": 20}, "apgd_ce": {"n_iter": 3, "n_restarts": 1},
         "apgd_t": {"n_iter": 3, "n_restarts": 1, "n_target_classes": 1}, "spsa": {"nb_iter": 1, "nb_sample": 8},
         "autoattack": {"version": "rand"}}
EPS = "0.03"  # the one budget of the CIFAR evaluation (and of the RobustBench export's model info)
FORMATS = ("robustbench", "torch_export", "torchscript", "state_dict")
ANALYSES = sorted(p.stem for p in (CONF / "analysis").glob("*.yaml"))

QUIET = ["logger=none", "progress=false"]
# The integrity checks and analyses at budgets a tiny run can afford.
CHECKS = ["eval.integrity.unbounded.nb_iter=20", "eval.integrity.convergence.iter_factor=2",
          "eval.integrity.convergence.restarts=2", "eval.integrity.gradient_free.n_queries=20",
          "analysis.budget_sweep.steps=[2,4]", "analysis.budget_sweep.restarts=[1,2]",
          "analysis.budget_sweep.restart_steps=2", "analysis.budget_sweep.max_n=16",
          "eval.loss_surface.points=2", "eval.loss_surface.step=${per255:8}"]


def attack_overrides(eps: str) -> list[str]:
    """Every attack option at one budget `eps`, each at its cheap settings."""
    overrides = [f"attack=[{','.join(ATTACKS)}]"]
    for name in ATTACKS:
        overrides.append(f"attack.{name}.eps=[{eps}]")
        settings = CHEAP.get(name, {"nb_iter": 3} if name != "autoattack" else {})
        overrides += [f"attack.{name}.{key}={value}" for key, value in settings.items()]
    return overrides


@dataclass
class Stage:
    """Runs the steps in `work`, each within what is left of the time until `deadline`
    (time.perf_counter() seconds), and keeps their outcomes."""

    work: Path
    deadline: float
    steps: list[dict] = field(default_factory=list)

    def environment(self) -> dict:
        # The caller's PYTHONPATH (GPU machines bring hydra and the attacks through it) after src.
        paths = [str(REPO / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "WANDB_MODE": "disabled"}

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def record(self, name: str, begin: float, error: str | None) -> bool:
        status = "pass" if error is None else ("skipped: " + error[len("skip:"):].strip() if error.startswith("skip:")
                                                else "fail")
        step = {"step": name, "status": status, "seconds": round(time.perf_counter() - begin, 1)}
        if status == "fail":
            step["error"] = error
        self.steps.append(step)
        print(json.dumps(step), flush=True)
        return error is None

    def run(self, name: str, argv: list[str], needs: tuple[str, ...] = ()) -> bool:
        """One app as a subprocess; its output goes to <work>/logs/<name>.log."""
        begin = time.perf_counter()
        missing = [n for n in needs if not self.passed(n)]
        if missing:
            return self.record(name, begin, f"skip: needs {', '.join(missing)}")
        if self.left() < 5:
            return self.record(name, begin, "skip: the check's time budget is spent")
        log = self.work / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            with log.open("w") as out:
                done = subprocess.run([sys.executable, *argv], cwd=REPO, env=self.environment(), stdout=out,
                                      stderr=subprocess.STDOUT, timeout=self.left(), check=False)
        except subprocess.TimeoutExpired:
            return self.record(name, begin, f"timed out at the check's budget; see {log}")
        if done.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-12:]
            return self.record(name, begin, f"exit {done.returncode}: " + "\n".join(tail)[-1500:])
        return self.record(name, begin, None)

    def check(self, name: str, test, needs: tuple[str, ...] = ()) -> bool:
        """An in-process check: `test()` raises (AssertionError, OSError, ...) to fail."""
        begin = time.perf_counter()
        missing = [n for n in needs if not self.passed(n)]
        if missing:
            return self.record(name, begin, f"skip: needs {', '.join(missing)}")
        try:
            test()
        except Exception as error:  # noqa: BLE001 - the step fails with its error; later steps still run
            return self.record(name, begin, f"{type(error).__name__}: {error}"[:1500])
        return self.record(name, begin, None)

    def passed(self, name: str) -> bool:
        return any(s["step"] == name and s["status"] == "pass" for s in self.steps)


def run_folders(root: Path) -> list[Path]:
    """The run folders below `root`: those with checkpoints."""
    return sorted(p.parent.parent for p in root.rglob("checkpoints/best.pt"))


def check_runs(root: Path, expected: int) -> None:
    """Every run below `root` finished, and every record is on this code's schema with finite
    numbers (accuracies within 0-100)."""
    from blf.run import records, storage

    folders = run_folders(root)
    assert len(folders) >= expected, f"{len(folders)} run folders below {root}, expected {expected}"
    for folder in folders:
        assert (folder / "finished.json").is_file(), f"{folder} did not finish (no finished.json)"
        rows = storage.read_jsonl(folder / "results.jsonl")
        assert rows, f"{folder}/results.jsonl holds no record"
        kinds = {k.value for k in records.Kind}
        for row in rows:
            where = f"{folder}/results.jsonl ({row.get('kind')}, {row.get('attack')}, eps {row.get('eps')})"
            assert row.get("schema_version") == records.SCHEMA_VERSION, f"{where}: schema {row.get('schema_version')}"
            assert row.get("kind") in kinds, f"{where}: kind {row.get('kind')!r}"
            if row["kind"] == "robustness":
                missing = [f for f in records.KEY_FIELDS if f not in row]
                assert not missing, f"{where}: lacks {missing}"
            for name, value in row.items():
                if isinstance(value, float):
                    assert math.isfinite(value) or name in ("gamma", "lam", "alpha", "beta", "value", "threshold"), \
                        f"{where}: {name}={value}"
            if row["kind"] in ("robustness", "worst_case", "validation", "budget_sweep"):
                assert 0.0 <= row["accuracy"] <= 100.0, f"{where}: accuracy {row['accuracy']}"


def check_device(folder: Path, device: str) -> list[str]:
    """A subprocess command: `blf.load` puts the classifier on `device` and it predicts there."""
    code = ("import sys, torch, blf\n"
            "m = blf.load(sys.argv[1], device=sys.argv[2])\n"
            "p = next(m.parameters())\n"
            "assert p.device.type == torch.device(sys.argv[2]).type, p.device\n"
            "shape = (1, 28, 28) if m.config['dataset']['name'] == 'mnist' else (3, 32, 32)\n"
            "x = torch.rand(4, *shape, device=p.device)\n"
            "with torch.no_grad():\n"
            "    y = m(x)\n"
            "assert y.shape == (4, 10) and bool(torch.isfinite(y).all()), y\n"
            "print('blf.load:', p.device, tuple(y.shape))\n")
    return ["-c", code, str(folder), device]


def real_mnist(tiny: bool) -> bool:
    """Whether the demo trains on real MNIST: where its files are here (a GPU machine carries
    data/MNIST/raw) and the stage is not the CPU's tiny one."""
    return (REPO / "data" / "MNIST" / "raw").is_dir() and not tiny


def mnist_overrides(tiny: bool) -> list[str]:
    """The demo's settings for this stage: real MNIST or synthetic data (real_mnist); one epoch, a
    few hundred test images."""
    real = real_mnist(tiny)
    data = ["dataset.download=false", "dataset.n_train=6000"] if real else [
        "dataset.synthetic=true", "dataset.synthetic_train=256", "dataset.synthetic_test=64"]
    n = 200 if not tiny else 32
    return [*data, "trainer.epochs=1", f"eval.n={n}", f"eval.batch_size={n}", "attack.pgd.nb_iter=3",
            *CHECKS[:4], *QUIET]


def cifar_overrides(run: Path, head: str, training: str, tiny: bool, device: str) -> list[str]:
    images, n = (256, 64) if tiny else (1024, 128)
    return [f"hydra.run.dir={run}", "dataset=cifar10", "dataset.synthetic=true", f"dataset.synthetic_train={images}",
            f"dataset.synthetic_test={n}", "model=resnet18", "model.width=8", "model.blocks=[1,1,1,1]", f"head={head}",
            f"training={training}", *(["training.nb_iter=2"] if training == "pgd_at" else []),
            "trainer.amp=bf16", "trainer.compile=true", "trainer.epochs=1", "trainer.batch_size=64", f"eval.n={n}",
            f"eval.batch_size={n}", "attack=[pgd]", "attack.pgd.nb_iter=2", "attack.pgd.eps=[0.03]", "analysis=[]",
            "eval.integrity.enabled=false", f"device={device}", *QUIET]


def run(work: Path, device: str, deadline: float, tiny: bool) -> dict:
    """The stage; returns its JSON entry."""
    begin = time.perf_counter()
    stage = Stage(work, deadline)
    demo = work / "mnist_demo"
    stage.run("study_demo_mnist", ["-m", "blf.study", "demo", "--sweep-dir", str(demo / "sweep"), "--out-dir",
                                   str(demo / "results"), *mnist_overrides(tiny), f"device={device}"])
    stage.check("demo_runs_complete", lambda: check_runs(demo / "sweep", 2), needs=("study_demo_mnist",))

    cifar = work / "cifar"
    baseline, blf_run = cifar / "baseline_standard", cifar / "blf_pgd_at"
    stage.run("train_cifar_standard_bf16_compiled", ["src/train.py", *cifar_overrides(baseline, "identity", "standard",
                                                                                      tiny, device)])
    stage.run("train_cifar_pgd_at_bf16_compiled", ["src/train.py", *cifar_overrides(blf_run, "blf", "pgd_at", tiny,
                                                                                     device)])
    trained = ("train_cifar_standard_bf16_compiled", "train_cifar_pgd_at_bf16_compiled")
    n = 64 if tiny else 128
    stage.run("evaluate_every_attack_checks_analyses", [
        "src/evaluate.py", f"run_dir={blf_run}", *attack_overrides(EPS), f"attack.transfer.source={baseline}",
        f"analysis=[{','.join(ANALYSES)}]", *CHECKS, f"analysis.budget_sweep.max_n={min(n, 32)}",
        "eval.integrity.enabled=true", f"eval.n={n}", f"eval.batch_size={n}", f"device={device}", *QUIET,
    ], needs=trained)
    stage.check("cifar_runs_complete", lambda: check_runs(cifar, 2), needs=("evaluate_every_attack_checks_analyses",))
    stage.run("report", ["-m", "blf.report", str(cifar), str(work / "report"), "--strict"], needs=trained)
    stage.check("report_tables", lambda: _report_holds(work / "report", 2), needs=("report",))
    for fmt in FORMATS:
        stage.run(f"export_{fmt}", ["-m", "blf.export", str(blf_run), "--format", fmt, "--out", str(work / "export" / fmt),
                                    "--allow-synthetic", "--eps", EPS], needs=trained)
    stage.run("load_on_device", check_device(blf_run, device), needs=trained)
    failed = [s["step"] for s in stage.steps if s["status"] != "pass"]
    return {"device": device, "seconds": round(time.perf_counter() - begin, 1), "passed": not failed,
            "not_passed": failed, "steps": stage.steps, "attacks": ATTACKS, "analyses": ANALYSES,
            "export_formats": list(FORMATS), "mnist": "real (6,000 training images)" if real_mnist(tiny) else "synthetic"}


def _report_holds(out: Path, runs: int) -> None:
    import pandas as pd

    frame = pd.read_csv(out / "records.csv")
    assert frame["run_dir"].nunique() == runs, f"records.csv holds {frame['run_dir'].nunique()} runs, expected {runs}"
    jobs = pd.read_csv(out / "jobs.csv")
    assert len(jobs) == runs, f"jobs.csv lists {len(jobs)} runs"
