"""The documentation does what it says: its commands run, with tiny overrides appended.

Every `python src/train.py`, `python src/evaluate.py`, `python -m blf.study` and `make <target>`
line of the bash blocks of README.md and docs/*.md is run here: training and evaluation in
process on tiny synthetic data (a sweep runs its first job), the study driver with --dry-run,
make with -n.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from blf import app
from conftest import REPO, TINY, as_overrides, compose_config

README = "\n".join(p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])


def commands(prefix: str) -> list[str]:
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].strip()
            if line.startswith(prefix):
                lines.append(line)
    return lines


def as_dict(tokens: list[str]) -> dict:
    """Overrides as {key: value}; a sweep (a,b,c outside brackets) keeps its first value."""
    overrides = {}
    for token in tokens:
        if token == "-m" or "=" not in token:
            continue
        key, value = token.split("=", 1)
        overrides[key] = value if value.startswith("[") else value.split(",")[0]
    return overrides


# Tiny versions of what the README runs at full size: synthetic data, a few images, one epoch,
# small networks, cheap attacks. They replace the README's values, never add settings it lacks.
TINY_TRAIN = {**as_dict(TINY), "trainer.epochs": 1, "trainer.compile": False, "dataset.n_train": None}
TINY_MODEL = {"resnet18": {"model.width": 4, "model.blocks": "[1,1,1,1]"},
              "wrn34_10": {"model.depth": 10, "model.widen_factor": 1}}
TINY_CIFAR = {"dataset.synthetic_train": 32, "dataset.synthetic_test": 32, "attack.pgd.eps": "[0.0,0.03]",
              "attack.pgd.nb_iter": 1, "training.nb_iter": 1, "eval.integrity.enabled": False}
TINY_EVAL = {"eval.n": 8, "logger": "none", "progress": False, "attack.pgd.nb_iter": 2, "attack.spsa.nb_iter": 1,
             "attack.spsa.nb_sample": 8, "attack.square.n_queries": 5, "attack.apgd_ce.n_iter": 2,
             "attack.apgd_ce.n_restarts": 1, "attack.apgd_t.n_iter": 2, "attack.apgd_t.n_restarts": 1,
             "attack.apgd_t.n_target_classes": 1, "eval.integrity.enabled": False}


def tiny_train(overrides: dict) -> dict:
    tiny = {**overrides, **TINY_TRAIN}
    if overrides.get("dataset") == "cifar10":
        tiny.update(TINY_CIFAR)
    tiny.update(TINY_MODEL.get(overrides.get("model"), {}))
    if "training" not in overrides:
        tiny.pop("training.nb_iter", None)
    return {k: v for k, v in tiny.items() if not k.startswith("hydra")}


TRAIN = commands("python src/train.py")
EVALUATE = commands("python src/evaluate.py")


def test_the_readme_has_the_commands_this_file_runs():
    assert len(TRAIN) >= 12 and len(EVALUATE) >= 3
    assert commands("python -m blf.study") and commands("make fig")


@pytest.mark.parametrize("line", TRAIN)
def test_train_commands_run(line, tmp_path):
    overrides = tiny_train(as_dict(shlex.split(line)[2:]))
    outcome = app.train(compose_config("train", as_overrides(overrides)), tmp_path / "run")
    assert outcome.progress.epoch == 1 and any(r["kind"] == "norms" for r in outcome.rows)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("readme") / "run"
    app.train(compose_config("train", [*TINY, "head=blf", "trainer.epochs=1"]), run_dir)
    return run_dir


@pytest.mark.parametrize("line", EVALUATE)
def test_evaluate_commands_run(line, trained):
    overrides = {**as_dict(shlex.split(line)[2:]), **TINY_EVAL}
    overrides.pop("run_dir")
    outcome = app.evaluate(compose_config("evaluate", [f"run_dir={trained}", *as_overrides(overrides)]), trained)
    wanted = set(overrides.get("attack", "[pgd]").strip("[]").split(","))
    assert {r["attack"] for r in outcome.added if r["kind"] == "robustness"} == wanted


@pytest.mark.parametrize("line", commands("python -m blf.study"))
def test_study_commands_run_with_their_overrides(line, tmp_path):
    args = [a for a in shlex.split(line)[3:] if a != "--dry-run"]
    result = subprocess.run([sys.executable, "-m", "blf.study", *args, "--dry-run", "--sweep-dir", str(tmp_path / "m"),
                             "--out-dir", str(tmp_path / "r")], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=300)
    assert result.returncode == 0, result.stderr
    launched = [c for c in result.stdout.splitlines() if c.startswith("$ ")]
    overrides = [a for a in args if "=" in a]
    assert launched and all(all(o in c for o in overrides) for c in launched)


@pytest.mark.parametrize("line", commands("make fig"))
def test_make_targets_pass_their_variables_to_the_study(line, tmp_path):
    result = subprocess.run(["make", "-n", *shlex.split(line)[1:]], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    (study,) = [c for c in result.stdout.splitlines() if "-m blf.study" in c]
    variables = dict(v.split("=", 1) for v in shlex.split(line)[2:])
    assert f"--launcher {variables.get('LAUNCHER', 'basic')}" in study
    assert f"--profile {variables.get('PROFILE', 'paper')}" in study
    for override in shlex.split(variables.get("OVERRIDES", "")):
        assert override in study


def test_launcher_settings_reach_slurm_from_the_environment_and_overrides(monkeypatch):
    from hydra import compose, initialize_config_dir

    monkeypatch.setenv("SLURM_GPUS_PER_NODE", "0")
    monkeypatch.setenv("SLURM_MEM_GB", "8")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=cpu"], return_hydra_config=True)
        launcher = cfg.hydra.launcher
        assert (launcher.gpus_per_node, launcher.mem_gb, launcher.cpus_per_task, launcher.partition) == (0, 8, 8, "cpu")
