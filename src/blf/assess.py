"""Assess a run's checkpoint: attacks, worst case, integrity checks and analyses, recorded.

Shared by src/train.py (after training) and src/evaluate.py. Each robustness row stores its
per-example outcome beside it, so the worst case over attacks and the integrity checks use
every attack ever run on this checkpoint and subset, not just the ones of this command.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from . import config as C
from . import evaluation, figures, integrity, loss_surface, operator_norm, records, storage
from .data import Dataset
from .workspace import Workspace

ANALYSES = ("operator_norm", "loss_surface")


def _same_subset(row: dict, which: str, epoch: int, n: int, seed: int) -> bool:
    return (row.get("checkpoint") == which and row.get("checkpoint_epoch") == epoch
            and row.get("n") == n and row.get("eval_seed") == seed)


def assess(workspace: Workspace, cfg: DictConfig, config: dict, dataset: Dataset, classifier, parts, device,
           tracker, *, skip_done: bool) -> tuple[list[dict], list[integrity.Verdict]]:
    """(rows recorded for this checkpoint and subset, integrity verdicts of this call)."""
    regularizer, mode, attack_list = parts
    for name in cfg.get("analysis") or {}:
        C.choice("analysis", name, ANALYSES)
    which = cfg.eval.checkpoint
    state = workspace.load(which)
    classifier.load_state_dict(state["model"])
    epoch = state["epoch"]
    batch_size = C.integer("eval.batch_size", cfg.eval.batch_size, ge=1)
    subset_index = dataset.test.subset_index(cfg.eval.n, cfg.eval.seed)
    subset = dataset.test.take(subset_index.to(dataset.test.labels.device))
    n, seed = len(subset), cfg.eval.seed

    recorded = [r for r in workspace.results() if _same_subset(r, which, epoch, n, seed)]
    if skip_done:
        wanted = {(a.name, e) for a in attack_list for e in a.eps}
        if wanted <= {(r.get("attack"), r.get("eps")) for r in recorded if r["kind"] == "robustness"}:
            print(f"{workspace.root}: evaluation already recorded, skipped")
            return recorded, []

    common = {
        **records.identity(config, classifier.head.describe(), regularizer.describe(), mode.describe()),
        "checkpoint": which, "checkpoint_epoch": epoch, "n": n, "eval_seed": seed,
        "evaluated_at": records.now(), "run_dir": str(workspace.root),
    }
    norms, outcomes = evaluation.evaluate(classifier, subset, attack_list, seed=seed, batch_size=batch_size,
                                          device=device, num_classes=dataset.num_classes, progress=cfg.get("progress", True))
    new_rows = [{**common, **norms}]
    for row, correct in outcomes:
        row = {**common, **row}
        row["per_example"] = workspace.save_outcome(row, correct, subset_index)
        new_rows.append(row)
    analyses = cfg.get("analysis") or {}
    if "operator_norm" in analyses:
        layers = operator_norm.layer_norms(classifier)
        new_rows += [{**common, **r} for r in layers] + [{**common, **operator_norm.summary(layers)}]
    if "loss_surface" in analyses:
        new_rows += _loss_surface(workspace, classifier, dataset, analyses.loss_surface, common, device)
    workspace.add_results(new_rows)

    # Worst case and integrity over every outcome recorded for this checkpoint and subset.
    robust = [r for r in workspace.results() if r["kind"] == "robustness" and _same_subset(r, which, epoch, n, seed)]
    all_outcomes = [(r, workspace.load_outcome(r)["correct"]) for r in robust]
    derived = [{**common, **r} for r in evaluation.worst_case(all_outcomes)]
    verdicts = []
    if cfg.eval.integrity.enabled and attack_list and all_outcomes:  # not for analysis-only calls
        verdicts = integrity.run(classifier, subset, all_outcomes, cfg.eval.integrity, batch_size=batch_size,
                                 device=device, seed=seed, progress=cfg.get("progress", True))
        derived += [{**common, **r} for r in integrity.as_rows(verdicts)]
    workspace.add_results(derived)
    tracker.log_records(new_rows + derived)
    return [r for r in workspace.results() if _same_subset(r, which, epoch, n, seed)], verdicts


def _loss_surface(workspace, classifier, dataset, cfg, common, device) -> list[dict]:
    split = {"train": dataset.train, "test": dataset.test}[C.choice("analysis.loss_surface.split", cfg.split, ("train", "test"))]
    axis, index, surfaces, rows = loss_surface.compute(
        classifier, split, points=C.integer("analysis.loss_surface.points", cfg.points, ge=1),
        radius=C.number("analysis.loss_surface.radius", cfg.radius, gt=0),
        step=C.number("analysis.loss_surface.step", cfg.step, gt=0),
        seed=cfg.seed, clip=bool(cfg.clip), batch_size=cfg.batch_size, device=device)
    folder = workspace.root / "analysis"
    storage.save_checkpoint({"axis": axis, "index": index, "surfaces": surfaces}, folder / "loss_surface.pt")
    title = f"{common['model']} + {common['head']} ({common['training']}), {common['dataset']}"
    figures.loss_surfaces(axis, surfaces, folder / "loss_surface", title=title)
    return [{**common, **r, "arrays": "analysis/loss_surface.pt"} for r in rows]
