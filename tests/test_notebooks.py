"""The notebooks read the aggregated records and call the same report functions as `make`."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from omegaconf import open_dict

from blf.errors import BLFError
from blf.study import driver
from conftest import REPO, TINY

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_every_notebook_is_valid_and_reads_results_through_the_study():
    assert {p.stem for p in NOTEBOOKS} == {"curves", "tables", "norms"}
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
        assert "s.load()" in code and "s.report(final)" in code, path.name
        assert "savefig" not in code and "plt." not in code, f"{path.name} must not hold its own plotting code"
        assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), f"{path.name} is committed with outputs"


def test_load_without_results_names_the_command(tmp_path):
    with pytest.raises(BLFError, match="make fig3 PROFILE=smoke"):
        driver.Study("fig3", "smoke", out=tmp_path / "nothing").load()


def test_every_notebook_runs_as_the_readme_command_says(tmp_path, monkeypatch):
    s = driver.Study("fig3", "smoke", overrides=[*TINY, "trainer.epochs=1", "dataset.n_train=null"],
                    sweep=tmp_path / "multirun", out=tmp_path / "results")
    with open_dict(s.cfg):
        s.cfg.study.grid = {"baseline": {"model": "2c2f", "training": "standard"},
                            "blf": {"model": "2c2f", "training": "standard", "head": "blf", "head.gamma": "1.0"}}
        s.cfg.study.seeds = [0]
    s.spec = s.cfg.study
    assert s.run("all") == 0
    figure = tmp_path / "results" / "fig3.png"
    figure.unlink()  # the notebook must write it again

    # The README's command, run as it reads from the repository root, with its results folder
    # (relative to the root, as there) replaced by this study's.
    line = next(line for line in (REPO / "README.md").read_text().splitlines() if "jupyter nbconvert" in line)
    results = os.path.relpath(tmp_path / "results", REPO)
    words = shlex.split(line.replace("results/demo", results).replace("BLF_EXPERIMENT=demo", "BLF_EXPERIMENT=fig3"))
    env = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
    command = [w for w in words if "=" not in w or w.startswith("-")]
    assert command[0] == ".venv/bin/jupyter" and "--execute" in command
    command[0] = str(Path(sys.executable).with_name("jupyter"))  # this environment's
    for name in ("curves", "tables", "norms"):  # every notebook, as the README runs curves
        done = subprocess.run([w.replace("curves.ipynb", f"{name}.ipynb") for w in command], cwd=REPO,
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, **env, "BLF_PROFILE": "smoke", "MPLBACKEND": "Agg"})
        assert done.returncode == 0, (name, done.stderr[-3000:])
        page = (tmp_path / "results" / f"{name}.html").read_text()
        assert "Baseline" in page and "BLF (gamma=1)" in page and "image/png" in page, name
    assert figure.is_file()
