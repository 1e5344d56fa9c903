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


# Every command line of the bash blocks of README.md and docs/*.md is run by a test, in tiny form
# or dry, or stands in a block marked `<!-- not run by the tests: <reason> -->` (a GPU, a cluster,
# root, the internet, hours). Where each line is run:
RUN_BY = {
    "python src/train.py": "tests/test_readme.py::test_train_commands_run",
    "python src/evaluate.py": "tests/test_readme.py::test_evaluate_commands_run",
    "python -m blf.study": "tests/test_readme.py::test_study_commands_run_with_their_overrides",
    "python -m blf.export": "tests/test_readme.py::test_export_commands_run",
    "python -m blf.audit": "tests/test_readme.py::test_audit_commands_run",
    "make fig": "tests/test_readme.py::test_make_targets_pass_their_variables_to_the_study",
    "make demo": "tests/test_newcomer.py::test_the_demo_ends_with_its_table_and_how_to_read_it",
    "make help": "tests/test_readme.py::test_make_help_lists_every_target",
    ".venv/bin/jupyter nbconvert": "tests/test_notebooks.py::test_every_notebook_runs_as_the_readme_command_says",
    # CI runs these itself (.ci/run: make lint, make test, make test-slurm; make test runs make install).
    "make install": ".ci/run", "make test": ".ci/run", "make lint": ".ci/run",
}
UNTESTED = "<!-- not run by the tests:"


def command_lines() -> list[tuple[str, str, bool]]:
    """(document, command, marked) for each command line of each bash block; leading VAR=value
    assignments are dropped (`SLURM_PARTITION=cpu make fig3` is a make line)."""
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text()
        for match in re.finditer(r"```bash\n(.*?)```", text, flags=re.S):
            marked = text[:match.start()].rstrip().endswith("-->") and UNTESTED in text[:match.start()].rstrip().splitlines()[-1]
            for line in match.group(1).replace("\\\n", " ").splitlines():
                line = line.split(" # ")[0].strip()
                if line and not line.startswith("#"):
                    words = shlex.split(line)
                    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                        words.pop(0)
                    found.append((path.name, " ".join(words), marked))
    return found


def test_every_documented_command_is_run_by_a_test_or_marked():
    unrun = [(doc, line) for doc, line, marked in command_lines()
             if not marked and not any(line.startswith(prefix) for prefix in RUN_BY)]
    assert not unrun, f"commands no test runs and no marker excuses: {unrun}"
    for prefix, where in RUN_BY.items():
        path, _, name = where.partition("::")
        assert (REPO / path).is_file() and (not name or f"def {name}(" in (REPO / path).read_text()), (prefix, where)


def test_make_help_lists_every_target():
    result = subprocess.run(["make", "help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    documented = {line.split()[1] for _, line, _ in command_lines() if line.startswith("make ")}
    assert documented <= set(re.findall(r"^\s*make (\S+)", result.stdout, flags=re.M)), result.stdout


@pytest.mark.parametrize("line", [c for c in commands("python -m blf.audit") if "--model" not in c])  # factories: test_audit.py
def test_audit_commands_run(line, tmp_path):
    """The audit as documented, on a tiny MNIST run (and its state_dict and torch.export exports) in
    place of the demo's run folder, `export/` and `program/`, on 20 synthetic test images with the quick budget."""
    from blf.export import export

    run_dir = tmp_path / "run"
    app.train(compose_config("train", as_overrides(tiny_train({"head": "blf"}))), run_dir)
    export(run_dir, "state_dict", tmp_path / "export")
    export(run_dir, "torch_export", tmp_path / "program")
    swap = {"multirun/demo/head:blf+seed:0": str(run_dir), "export/": str(tmp_path / "export"),
            "program/model.pt2": str(tmp_path / "program" / "model.pt2"), "audit/": str(tmp_path / "audit")}
    words = [swap.get(w, w) for w in shlex.split(line)[3:]]
    result = subprocess.run([sys.executable, "-m", "blf.audit", *words, "--synthetic", "--n", "20", "--budget", "quick",
                             "--no-progress"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=300)
    if "--strict" in words:  # 20 images and the quick budget are never "reliable": --strict says so
        assert result.returncode == 1 and "!! --strict" in result.stderr, result.stderr[-2000:]
    else:
        assert result.returncode == 0, result.stderr[-2000:]
    assert "# Audit of" in result.stdout and "(a) the audited number" in result.stdout


@pytest.mark.parametrize("line", commands("python -m blf.export"))
def test_export_commands_run(line, tmp_path):
    """The export as documented, on a tiny CIFAR-10-shaped run in place of `<run>` (synthetic data
    must be allowed explicitly)."""
    run_dir = tmp_path / "run"
    overrides = {**tiny_train({"dataset": "cifar10", "model": "resnet18", "head": "blf"}),
                 "attack.pgd.eps": f"[0.0,{8 / 255!r}]"}  # the budget the entry reports
    app.train(compose_config("train", as_overrides(overrides)), run_dir)
    words = [str(run_dir) if w.endswith("<run>") else w for w in shlex.split(line)[3:]]
    words = [str(tmp_path / "export") if w == "export/" else w for w in words]
    result = subprocess.run([sys.executable, "-m", "blf.export", *words, "--allow-synthetic"], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert any((tmp_path / "export").rglob("*.json")) and any((tmp_path / "export").rglob("*.pt"))
