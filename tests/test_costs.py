"""What a study costs on a GPU (blf.study.costs): its runs as the spec plans them, its training
GPU-hours from the epoch times of epoch_seconds.csv, and the docs' tables computed from them."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import yaml

from blf.study import costs, spec
from conftest import CONF, REPO


def docs_cells(path) -> dict[str, list[str]]:
    """{study: the cells of its row} of the targets table in a markdown file."""
    rows = {}
    for line in (REPO / path).read_text().splitlines():
        match = re.match(r"\| `make ([a-z0-9-]+)` \|", line)
        if match:
            rows[match.group(1).replace("-", "_")] = [c.strip() for c in line.strip("|").split("|")]
    return rows


STUDIES = [n for n in spec.names() if n != "demo"]


def test_the_docs_give_the_planned_runs_and_the_computed_gpu_hours():
    tables = {path: docs_cells(path) for path in ("README.md", "docs/reproducing.md")}
    for name in STUDIES:
        row = costs.costs(name)
        runs = str(row["runs"]) if row["exact"] else f"<= {row['runs']}"
        for path, rows in tables.items():
            assert name in rows, (path, name)
            assert any(c == runs or c.startswith(runs + " ") for c in rows[name]), (path, name, runs, rows[name])
            assert costs.cell(row) in rows[name], (path, name, costs.cell(row), rows[name])


def recipe_epochs(model: str, training: str) -> int:
    regime = yaml.safe_load((CONF / "training" / f"{training}.yaml").read_text())["regime"]
    return yaml.safe_load((CONF / "model" / f"{model}.yaml").read_text())["recipe"][regime]["epochs"]


def test_gpu_hours_are_runs_times_epochs_times_the_epoch_time():
    runs = costs.planned_runs("fig4")
    # Fig. 4: 39 grid runs of ResNet-18, each chosen setting on 2 more seeds, WRN on all 3 (spec: transfer).
    assert runs.query("stage == 'grid'")["runs"].sum() == 39 and set(runs.query("stage == 'grid'")["model"]) == {"resnet18"}
    assert runs.query("stage == 'seeds' and model == 'wrn34_10'")["runs"].sum() == 33
    seconds = pd.read_csv(costs.EPOCH_SECONDS).assign(seconds_per_epoch=lambda f: f.index + 1.0)
    expected = sum(r.runs * recipe_epochs(r.model, r.training)
                   * seconds.set_index(["dataset", "model", "training"]).loc[(r.dataset, r.model, r.training), "seconds_per_epoch"]
                   for r in runs.itertuples()) / 3600
    got = costs.costs("fig4", seconds=seconds)
    assert got["gpu_hours"] == pytest.approx(expected, abs=0.05) and got["gpu_hours_packed"] == got["gpu_hours"]  # no MNIST


def test_mnist_runs_are_packed_and_estimated_epochs_are_counted_as_such():
    seconds = pd.read_csv(costs.EPOCH_SECONDS).assign(status="measured")
    one = costs.costs("fig3", seconds=seconds)
    assert one["estimated_share"] == 0.0
    assert one["gpu_hours_packed"] == pytest.approx(one["gpu_hours"] / costs.PACKING.speedup, abs=0.1)
    seconds.loc[seconds["model"] == "4c3f", "status"] = "estimated"
    assert 0.0 < costs.costs("fig3", seconds=seconds)["estimated_share"] < 1.0


def test_a_run_kind_without_an_epoch_time_is_named():
    seconds = pd.read_csv(costs.EPOCH_SECONDS)
    seconds = seconds[~((seconds["model"] == "wrn34_10") & (seconds["training"] == "pgd_at"))]
    with pytest.raises(ValueError, match="no epoch time for cifar10 wrn34_10 pgd_at"):
        costs.costs("fig4", seconds=seconds)


def test_every_measured_epoch_time_names_its_gpu_date_and_source():
    seconds = pd.read_csv(costs.EPOCH_SECONDS)
    assert set(seconds["status"]) <= {"measured", "estimated"}
    measured = seconds[seconds["status"] == "measured"]
    assert measured[["gpu", "date", "source"]].notna().all().all() and len(measured) >= 4


def test_also_seeded_settings_count_the_seeds_no_grid_run_has():
    """mnist_2c2f: 16 grid runs on seed 0, each method's choice on seeds 1-4, and BLF gamma 1.0
    (a grid value) on seeds 1-4 too: at most 36, an upper bound since the protocol may pick gamma 1.0."""
    runs = costs.planned_runs("mnist_2c2f")
    assert runs.query("stage == 'grid'")["runs"].sum() == 16 and runs.query("stage == 'seeds'")["runs"].sum() == 20
    assert not runs.query("stage == 'seeds'")["exact"].all() and costs.costs("mnist_2c2f")["runs"] == 36
