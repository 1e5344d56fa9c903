"""Assess a run's checkpoint: attacks, worst case, integrity checks and analyses, recorded.

Shared by src/train.py (after training) and src/evaluate.py. Each robustness row stores its
per-example outcome beside it, so the worst case over attacks and the integrity checks use
every attack ever run on this checkpoint and subset, not just the ones of this command. All of
it runs under the run's precision policy (`trainer.amp`).
"""

from __future__ import annotations

from omegaconf import DictConfig

from . import config as C
from . import evaluation, figures, integrity, loss_surface, operator_norm, precision, records, storage
from .data import Dataset
from .workspace import Workspace

ANALYSES = ("operator_norm", "loss_surface")


class Assessment:
    """One checkpoint of one run, evaluated on one subset of the test set."""

    def __init__(self, workspace: Workspace, cfg: DictConfig, config: dict, dataset: Dataset, classifier, parts, device):
        self.workspace, self.cfg, self.dataset, self.classifier, self.device = workspace, cfg, dataset, classifier, device
        regularizer, mode, self.attacks = parts
        self.analyses = cfg.get("analysis") or {}
        for name in self.analyses:
            C.choice("analysis", name, ANALYSES)
        self.which = cfg.eval.checkpoint
        state = workspace.load(self.which)
        classifier.load_state_dict(state["model"])
        self.epoch = state["epoch"]
        # Clean accuracy on the whole test set at the selected epoch (hyper-parameter selection).
        clean = state["test_acc"] if "test_acc" in state else state["history"][-1]["test_acc"]
        self.batch_size = C.integer("eval.batch_size", cfg.eval.batch_size, ge=1)
        self.index = dataset.test.subset_index(cfg.eval.n, cfg.eval.seed)
        self.subset = dataset.test.take(self.index.to(dataset.test.labels.device))
        self.seed = cfg.eval.seed
        self.amp = config.get("trainer", {}).get("amp")
        self.progress = cfg.get("progress", True)
        self.common = {
            **records.identity(config, classifier.head.describe(), regularizer.describe(), mode.describe(),
                               {"synthetic": dataset.synthetic}),
            "checkpoint": self.which, "checkpoint_epoch": self.epoch, "clean_test_acc": clean,
            "n": len(self.subset), "eval_seed": self.seed,
            "evaluated_at": records.now(), "run_dir": str(workspace.root),
        }

    def mine(self, row: dict) -> bool:
        """Whether a recorded row belongs to this checkpoint and subset."""
        return all(row.get(k) == self.common[k] for k in ("checkpoint", "checkpoint_epoch", "n", "eval_seed"))

    def recorded(self) -> list[dict]:
        return [r for r in self.workspace.results() if self.mine(r)]

    def done(self) -> bool:
        wanted = {(a.name, e) for a in self.attacks for e in a.eps}
        return wanted <= {(r.get("attack"), r.get("eps")) for r in self.recorded() if r["kind"] == "robustness"}

    def run(self) -> tuple[list[dict], list[integrity.Verdict]]:
        """(rows added, verdicts)."""
        with precision.autocast(self.device, self.amp):
            new_rows = self.attack_rows() + self.analysis_rows()
            self.workspace.add_results(new_rows)
            derived, verdicts = self.derived_rows()
        if precision.policy(self.amp) == "bf16" and self.cfg.eval.integrity.enabled:
            verdicts.append(integrity.precision_agreement(self.classifier, self.subset, self.batch_size, self.device,
                                                          self.cfg.eval.integrity.get("precision_tolerance", 1.0)))
            derived += [{**self.common, **r} for r in integrity.as_rows(verdicts[-1:])]
        self.workspace.add_results(derived)
        return new_rows + derived, verdicts

    def attack_rows(self) -> list[dict]:
        norms, outcomes = evaluation.evaluate(
            self.classifier, self.subset, self.attacks, seed=self.seed, batch_size=self.batch_size, device=self.device,
            num_classes=self.dataset.num_classes, progress=self.progress)
        rows = [{**self.common, **norms}]
        for row, correct in outcomes:
            row = {**self.common, **row}
            row["per_example"] = self.workspace.save_outcome(row, correct, self.index)
            rows.append(row)
        return rows

    def analysis_rows(self) -> list[dict]:
        rows = []
        if "operator_norm" in self.analyses:
            layers = operator_norm.layer_norms(self.classifier)
            rows += [{**self.common, **r} for r in layers] + [{**self.common, **operator_norm.summary(layers)}]
        if "loss_surface" in self.analyses:
            rows += self.loss_surface_rows(self.cfg.eval.loss_surface)
        return rows

    def derived_rows(self) -> tuple[list[dict], list[integrity.Verdict]]:
        """Worst case and integrity over every outcome recorded for this checkpoint and subset."""
        robust = [r for r in self.recorded() if r["kind"] == "robustness"]
        outcomes = [(r, self.workspace.load_outcome(r)["correct"]) for r in robust]
        rows = [{**self.common, **r} for r in evaluation.worst_case(outcomes)]
        verdicts = []
        if self.cfg.eval.integrity.enabled and self.attacks and outcomes:  # not for analysis-only calls
            verdicts = integrity.run(self.classifier, self.subset, outcomes, self.cfg.eval.integrity,
                                     batch_size=self.batch_size, device=self.device, seed=self.seed, progress=self.progress)
            rows += [{**self.common, **r} for r in integrity.as_rows(verdicts)]
        return rows, verdicts

    def loss_surface_rows(self, cfg) -> list[dict]:
        split_name = C.choice("eval.loss_surface.split", cfg.split, ("train", "test"))
        axis, index, surfaces, rows = loss_surface.compute(
            self.classifier, getattr(self.dataset, split_name),
            points=C.integer("eval.loss_surface.points", cfg.points, ge=1),
            radius=C.number("eval.loss_surface.radius", cfg.radius, gt=0),
            step=C.number("eval.loss_surface.step", cfg.step, gt=0),
            seed=cfg.seed, clip=bool(cfg.clip), batch_size=cfg.batch_size, device=self.device)
        folder = self.workspace.root / "analysis"
        storage.save_checkpoint({"axis": axis, "index": index, "surfaces": surfaces}, folder / "loss_surface.pt")
        c = self.common
        figures.loss_surfaces(axis, surfaces, folder / "loss_surface", title=f"{c['model']} + {c['head']} ({c['training']}), {c['dataset']}"
                              + (" [SYNTHETIC DATA]" if c.get("synthetic") else ""))
        return [{**c, **r, "arrays": "analysis/loss_surface.pt"} for r in rows]


def assess(workspace: Workspace, cfg: DictConfig, config: dict, dataset: Dataset, classifier, parts, device,
           tracker, *, skip_done: bool) -> tuple[list[dict], list[integrity.Verdict]]:
    """(rows recorded for this checkpoint and subset, integrity verdicts of this call)."""
    assessment = Assessment(workspace, cfg, config, dataset, classifier, parts, device)
    if skip_done and assessment.done():
        print(f"{workspace.root}: evaluation already recorded, skipped")
        return assessment.recorded(), []
    added, verdicts = assessment.run()
    tracker.log_records(added)
    return assessment.recorded(), verdicts
