"""What a study costs on a GPU: its training runs by kind, times the seconds of an epoch.

    python -m blf.study.costs [fig3 fig4 ...] [--profile paper]

The runs follow from the spec (conf/study/<name>.yaml): the grid stage expands each entry's lists;
the seeds stage reruns each selected setting on the other seeds, and on every seed for a model
that reuses another's choice (`transfer`), and runs the spec's `also_seeded` settings on every seed
no grid run has. Where a study tunes per attack (`select: attack`), each attack may choose another
setting, and the selection may pick an `also_seeded` setting: the count is then an upper bound. Epochs come from the runs'
recipes (model.recipe, appendix B.2); the seconds of an epoch per (dataset, model, training) from
`epoch_seconds.csv`, each row measured (which GPU, which date, how) or estimated, and said so.
Evaluation is not included: its cost depends on the attacks and the number of test images, and
was not measured on a GPU.

MNIST's networks leave a GPU mostly idle: with several runs per GPU (docs/clusters.md) they cost
less. `PACKING` is what one measurement found; it is applied to the MNIST runs.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from blf.run import identity
from blf.study import spec, sweep

EPOCH_SECONDS = Path(__file__).with_name("epoch_seconds.csv")


@dataclass(frozen=True)
class Packing:
    """K runs on one GPU at once, and how many runs' worth of work that GPU then does per run's time."""

    runs_per_gpu: int
    speedup: float
    status: str
    gpu: str
    date: str


# NVIDIA H200, 2026-12-04: 1, 4 and 8 concurrent 2C2F MNIST standard trainings of 2 epochs took
# 12.2, 13.3 and 14.0 s of wall time: 8 runs in 1.15 times one run's time.
PACKING = Packing(runs_per_gpu=8, speedup=round(8 * 12.2 / 14.0, 2),
                  status="measured for 2C2F standard training; assumed for MNIST's other runs",
                  gpu="NVIDIA H200", date="2026-12-04")


def _split(value) -> list[str]:
    return [v.strip() for v in str(value).split(",")]


def planned_runs(name: str, profile: str = "paper") -> pd.DataFrame:
    """One row per (stage, dataset, model, training): `runs`, and `exact` (False where per-attack
    tuning makes the seeds stage an upper bound)."""
    return _planned_runs(name, profile).copy()


@functools.cache  # reading a spec composes configs; the docs' tables ask for each study twice
def _planned_runs(name: str, profile: str) -> pd.DataFrame:
    cfg = spec.load(name, profile)
    study = cfg.study
    base = spec.run_config(name, profile)  # what an entry that names no dataset, model or training runs
    limit = spec.limits(cfg).grid_values
    per_attack = study.select == "attack"
    choices = len(study.get("select_attacks") or [None]) if per_attack else 1
    transfer = dict(study.get("transfer") or {})
    rows = []
    for entry in study.grid.values():
        dataset = entry.get("dataset", base.dataset.name)
        models, trainings = _split(entry.get("model", base.model.name)), _split(entry.get("training", base.training.name))
        grid = 1
        for key in spec.HYPERPARAMETERS:
            if key in entry:
                values = _split(entry[key])
                grid *= len(values[:limit] if limit else values)
        seeds = spec.seeds_of(cfg, dataset)
        for model, training in itertools.product(models, trainings):
            rows.append(("grid", dataset, model, training, grid, True))
            if study.select == "none":
                continue
            rows.append(("seeds", dataset, model, training, choices * (len(seeds) - 1), not per_attack or choices == 1))
            for target, source in transfer.items():
                if source == model:
                    rows.append(("seeds", dataset, target, training, choices * len(seeds), not per_attack or choices == 1))
    # `also_seeded`: each such run that no grid run is. It may be a selected setting's too: an upper bound.
    grid_runs = {identity.run_name(job) for overrides in spec.grid_overrides(cfg, base.dataset.name)
                 for job in sweep.expand(overrides)}
    for overrides in spec.also_seeded_overrides(cfg, base.dataset.name):
        for job in sweep.expand(overrides):
            if identity.run_name(job) not in grid_runs:
                chosen = dict(o.split("=", 1) for o in job)
                rows.append(("seeds", chosen.get("dataset", base.dataset.name), chosen.get("model", base.model.name),
                             chosen.get("training", base.training.name), 1, False))
    frame = pd.DataFrame(rows, columns=["stage", "dataset", "model", "training", "runs", "exact"])
    frame = frame[frame["runs"] > 0]
    return frame.groupby(["stage", "dataset", "model", "training"], as_index=False).agg(runs=("runs", "sum"),
                                                                                       exact=("exact", "all"))


@functools.cache  # composing a config takes a while; the docs' tables ask for each many times
def epochs(name: str, profile: str, dataset: str, model: str, training: str) -> int:
    cfg = spec.run_config(name, profile, [f"dataset={dataset}", f"model={model}", f"training={training}"])
    return int(cfg.trainer.epochs)


def costs(name: str, profile: str = "paper", seconds: pd.DataFrame | None = None) -> dict:
    """Runs and training GPU-hours of study `name`: one run per GPU, and with MNIST packed."""
    seconds = pd.read_csv(EPOCH_SECONDS) if seconds is None else seconds
    runs = planned_runs(name, profile)
    if runs.empty:
        return {"study": name, "runs": 0, "exact": True, "gpu_hours": 0.0, "gpu_hours_packed": 0.0,
                "estimated_share": 0.0}
    frame = runs.merge(seconds, on=["dataset", "model", "training"], how="left")
    missing = frame[frame["seconds_per_epoch"].isna()]
    if not missing.empty:
        first = missing.iloc[0]
        raise ValueError(f"{EPOCH_SECONDS.name} has no epoch time for {first.dataset} {first.model} {first.training}; "
                         "add a row (measured with make gpu-check, or estimated and marked so)")
    frame["epochs"] = [epochs(name, profile, r.dataset, r.model, r.training) for r in frame.itertuples()]
    frame["hours"] = frame["runs"] * frame["epochs"] * frame["seconds_per_epoch"] / 3600
    packed = frame["hours"].where(frame["dataset"] != "mnist", frame["hours"] / PACKING.speedup)
    estimated = frame.loc[frame["status"] != "measured", "hours"].sum()
    return {"study": name, "runs": int(frame["runs"].sum()), "exact": bool(frame["exact"].all()),
            "gpu_hours": round(float(frame["hours"].sum()), 1), "gpu_hours_packed": round(float(packed.sum()), 1),
            "estimated_share": round(float(estimated / frame["hours"].sum()), 2) if frame["hours"].sum() else 0.0}


def cell(row: dict) -> str:
    """A study's training GPU-hours as the docs' tables show them (tests/test_costs.py checks them)."""
    text = f"{row['gpu_hours']:,.1f}"
    if row["gpu_hours_packed"] != row["gpu_hours"]:
        text += f" ({row['gpu_hours_packed']:,.1f} packed)"
    share = round(100 * row["estimated_share"])
    return text + (f"; {share}% from estimated epochs" if share else "; measured epochs")


def markdown(rows: list[dict]) -> str:
    lines = ["| target | runs | training GPU-hours, one H200 |", "|---|---|---|"]
    for row in rows:
        runs = f"{row['runs']}" if row["exact"] else f"<= {row['runs']}"
        lines.append(f"| `make {row['study'].replace('_', '-')}` | {runs} | {cell(row)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="studies of conf/study/ (default: every one but demo)")
    parser.add_argument("--profile", default="paper", choices=["paper", "smoke"])
    args = parser.parse_args(argv)
    names = args.names or [n for n in spec.names() if n != "demo"]
    print(markdown([costs(n, args.profile) for n in names]))
    print(f"\nEpoch times: {EPOCH_SECONDS} (measured rows name the GPU and date). MNIST packed: {PACKING.runs_per_gpu} "
          f"runs per GPU do {PACKING.speedup}x one run's work ({PACKING.status}; {PACKING.gpu}, {PACKING.date}). "
          "Evaluation is not included.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
