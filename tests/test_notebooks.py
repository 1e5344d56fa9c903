"""The notebooks read the aggregated records and call the same report functions as `make`."""

import json

import nbformat
import pytest
from nbclient import NotebookClient
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


def test_curves_notebook_runs_on_a_small_study(tmp_path, monkeypatch):
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

    monkeypatch.setenv("BLF_EXPERIMENT", "fig3")
    monkeypatch.setenv("BLF_PROFILE", "smoke")
    monkeypatch.setenv("BLF_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("PYTHONPATH", str(REPO / "src"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(REPO / "notebooks" / "curves.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    assert figure.is_file()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    text = json.dumps([o.get("data", {}).get("text/markdown", "") for o in outputs])
    assert "Baseline" in text and "BLF (gamma=1)" in text
