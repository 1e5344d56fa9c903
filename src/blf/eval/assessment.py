"""Assess a run's checkpoint: attacks, worst case, integrity checks and analyses, recorded.

Shared by src/train.py (after training) and src/evaluate.py. Each robustness row stores its
per-example outcome beside it, so the worst case over attacks and the integrity checks use
every attack ever run on this checkpoint and subset, not just the ones of this command. All of
it runs under the run's precision policy (`trainer.amp`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from blf import config as C
from blf.eval import budget_sweep, integrity, loss_surface, operator_norm, robustness
from blf.eval.attacks import PAPER, Attack
from blf.nn import precision
from blf.nn.models import frozen
from blf.run import records, storage
from blf.run.folder import RunFolder
from blf.run.records import WORST_CASE, Kind

if TYPE_CHECKING:
    from blf.assembly import Assembly

log = logging.getLogger(__name__)



def analysis_kind(analysis: str) -> Kind:
    """The record kind that says an analysis ran (operator_norm: its summary row)."""
    return Kind.OPERATOR_NORM_SUMMARY if analysis == "operator_norm" else Kind(analysis)


class Assessment:
    """One checkpoint of one run, evaluated on one subset of the test set."""

    def __init__(self, workspace: RunFolder, run: Assembly, auditor=None):
        self.workspace, self.assembly, self.settings = workspace, run, run.evaluation
        self.cards = []  # audits (analysis=audit) made by this assessment, for the tracker
        # blf.audit.audit, handed in by the app: the audit is a layer above the evaluation it composes.
        self.auditor = auditor
        self.dataset, self.classifier, self.device = run.dataset, run.classifier, run.device
        # As the caller assembled them: a transfer attack holds its source already (blf.sources).
        self.attacks = run.attacks
        self.which = self.settings.checkpoint
        state = workspace.load(self.which)
        workspace.restore(self.classifier, state["model"], self.which)
        self.epoch = state["epoch"]
        # Clean accuracy on the whole test set at the selected epoch (hyper-parameter selection).
        clean = state["test_acc"] if "test_acc" in state else state["history"][-1]["test_acc"]
        trained = state.get("trained") or {}
        self.batch_size = self.settings.batch_size
        self.index = run.dataset.test.subset_index(self.settings.n, self.settings.seed)
        self.subset = run.dataset.test.take(self.index.to(run.dataset.test.labels.device))
        self.seed = self.settings.seed
        # Under eval.selection_split=validation the selection reads the held-out images only.
        validation = state.get("validation_acc", (state.get("history") or [{}])[-1].get("validation_acc"))
        self.validation = None if run.dataset.validation is None else run.dataset.validation.subset(
            min(self.settings.n or len(run.dataset.validation), len(run.dataset.validation)), self.seed)
        self.common = {
            **run.identity(),
            "checkpoint": self.which, "checkpoint_epoch": self.epoch, "clean_test_acc": clean,
            "selection_split": self.settings.selection_split,
            **({} if validation is None else {"clean_validation_acc": validation}),
            "n": len(self.subset), "eval_seed": self.seed,
            **records.provenance(trained), "augmented": trained.get("augmented"), "threads": torch.get_num_threads(),
            # The CPU kernels torch chose (AVX512, AVX2, ...): numbers differ slightly between them.
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "evaluated_at": records.now(), "run_dir": records.recorded_run_dir(workspace.root),
        }

    def mine(self, row: dict) -> bool:
        """Whether a recorded row belongs to this checkpoint (trained this long) and subset."""
        return all(row.get(k) == self.common[k] for k in records.EVALUATION_FIELDS)

    def recorded(self) -> list[dict]:
        return [r for r in self.workspace.results() if self.mine(r)]

    def done(self) -> bool:
        """Whether every record this evaluation would write is there: each attack at each eps, the
        worst case at each eps, the integrity verdicts and the analyses (a run killed after the
        attacks but before the rest is not done)."""
        rows = self.recorded()
        have = {(r.get("kind"), r.get("attack"), r.get("eps")) for r in rows}
        eps = {e for a in self.attacks for e in a.eps}
        wanted = {(Kind.ROBUSTNESS, a.name, e) for a in self.attacks for e in a.eps} | {
            (Kind.WORST_CASE, WORST_CASE, e) for e in eps} | {
            (Kind.VALIDATION, a.name, e) for a, e in self.selection_budgets()}
        kinds = {r.get("kind") for r in rows}
        if self.attacks and self.settings.integrity.enabled:
            kinds_wanted = {Kind.INTEGRITY}
        else:
            kinds_wanted = set()
        kinds_wanted |= {analysis_kind(a) for a in self.settings.analyses}
        return wanted <= have and kinds_wanted <= kinds

    def recorded_attack(self, attack: Attack, recorded: list[dict]) -> bool:
        """Whether every eps of `attack` has a record among `recorded` (this checkpoint's and
        subset's) with the attack's settings, its per-example outcome saved beside it."""
        settings = {f"attack.{k}": str(v) for k, v in attack.settings().items()}
        rows = [r for r in recorded if r.get("kind") == Kind.ROBUSTNESS and r.get("attack") == attack.name
                and all(str(r.get(k)) == v for k, v in settings.items())
                and (self.workspace.root / self.workspace.outcome_name(r)).is_file()]
        validated = {(r.get("attack"), round(r["eps"], 8)) for r in recorded if r.get("kind") == Kind.VALIDATION}
        return (all(any(abs(r["eps"] - e) < records.EPS_TOLERANCE for r in rows) for e in attack.eps)
                and all((a.name, round(e, 8)) in validated for a, e in self.selection_budgets([attack])))

    def run(self, resume: bool = False) -> tuple[list[dict], list[integrity.Verdict]]:
        """(rows added, verdicts). `resume`: the attacks (settings and all) and analyses already
        recorded for this checkpoint and subset are not run again (a training run rerun with an
        analysis added, or killed after its attacks); the worst case and the integrity checks
        are, over every outcome recorded."""
        attacks, analyses = self.attacks, list(self.settings.analyses)
        recorded = self.recorded() if resume else []
        kinds = {r.get("kind") for r in recorded}
        if resume:
            attacks = [a for a in attacks if not self.recorded_attack(a, recorded)]
            analyses = [a for a in analyses if analysis_kind(a) not in kinds]
            if kept := [a.name for a in self.attacks if a not in attacks] + [a for a in self.settings.analyses if a not in analyses]:
                log.info("%s: already recorded, not run again: %s", self.workspace.root, ", ".join(kept))
        with precision.autocast(self.device, self.settings.amp):
            # The norms row comes with the attacks, kept where it is recorded. A resumable run
            # (train.py) keeps each attack as it ends; an evaluation asked for adds all or nothing.
            keep = self.workspace.add_results if resume else None
            attacked = self.attack_rows(attacks, keep, norms=Kind.NORMS not in kinds)
            analysed = self.analysis_rows(analyses)
            self.workspace.add_results(analysed if resume else attacked + analysed)
            new_rows = attacked + analysed
            derived, verdicts = self.derived_rows()
        if self.settings.amp == "bf16" and self.settings.integrity.enabled:
            verdicts.append(integrity.precision_agreement(self.classifier, self.subset, self.batch_size, self.device,
                                                          self.settings.integrity.precision_tolerance))
            derived += [{**self.common, **r} for r in integrity.as_rows(verdicts[-1:])]
        self.workspace.add_results(derived)
        return new_rows + derived, verdicts

    def selection_budgets(self, attacks: list[Attack] | None = None) -> list[tuple[Attack, float]]:
        """(attack, eps) a hyper-parameter selection may score on the validation split: the paper's
        attacks (of `attacks`, default all) at the budgets selections use (the tables' and the
        training's) within their grids."""
        if self.validation is None:
            return []
        return [(a, e) for a in (self.attacks if attacks is None else attacks) if a.name in PAPER for e in a.eps
                if any(abs(e - s) < records.EPS_TOLERANCE for s in self.settings.selection_eps)]

    def validation_rows(self, attacks: list[Attack]) -> list[dict]:
        rows = []
        for attack, eps in self.selection_budgets(attacks):
            torch.manual_seed(self.seed)
            correct = robustness.attacked_correct(self.classifier, self.validation, attack, eps,
                                                  attack.batch_size or self.batch_size, self.device)
            rows.append({**self.common, "kind": Kind.VALIDATION, "attack": attack.name, "eps": eps,
                         "validation_n": len(correct), "correct": int(correct.sum()),
                         "accuracy": robustness.percent(correct),
                         **{f"attack.{k}": v for k, v in attack.settings().items()}})
            log.info("%s eps=%.4g on the validation split: %.2f%% of %d", attack.name, eps, rows[-1]["accuracy"],
                     len(correct))
        return rows

    def attack_rows(self, attacks: list[Attack], keep=None, norms: bool = True) -> list[dict]:
        """The norms row (if `norms`) and each attack's rows at each eps (their outcomes saved).
        `keep`: called with each attack's rows once it is done (the norms row with the first), so
        that a run killed later resumes after it."""
        for attack in attacks:  # every attack accepts the model before any runs
            attack.check(self.classifier, self.dataset.num_classes)
        rows = [{**self.common, **robustness.norms(self.classifier, self.subset, self.batch_size, self.device)}] if norms else []
        done = 0
        for attack in attacks:
            for row, correct in robustness.robustness(self.classifier, self.subset, attack, batch_size=self.batch_size,
                                                      seed=self.seed, device=self.device, progress=self.settings.progress):
                row = {**self.common, **row}
                row["per_example"] = self.workspace.save_outcome(row, correct, self.index)
                rows.append(row)
            with frozen(self.classifier):
                rows += self.validation_rows([attack])
            if keep is not None:
                keep(rows[done:])
                done = len(rows)
        return rows

    def analysis_rows(self, analyses: list[str]) -> list[dict]:
        rows = []
        if "operator_norm" in analyses:
            layers = operator_norm.layer_norms(self.classifier)
            rows += [{**self.common, **r} for r in layers] + [{**self.common, **operator_norm.summary(layers)}]
        if "loss_surface" in analyses:
            rows += self.loss_surface_rows(self.settings.loss_surface)
        if "budget_sweep" in analyses:
            rows += [{**self.common, **r} for r in budget_sweep.sweep(
                self.classifier, self.subset, self.settings.sweep, batch_size=self.batch_size, device=self.device,
                seed=self.seed, progress=self.settings.progress)]
        if "audit" in analyses:
            rows += self.audit_rows(self.settings.audit)
        return rows

    def audit_rows(self, cfg: dict) -> list[dict]:
        """blf.audit on the first `max_n` examples of the subset: its card in the run folder
        (analysis/audit_<budget>.*), one row per eps, and the card kept for the tracker."""
        if self.auditor is None:
            raise C.ConfigError("analysis=[audit] needs the audit; run it from src/evaluate.py or src/train.py")
        subset = self.subset.first(min(len(self.subset), cfg["max_n"]))
        x, y = subset.batch(slice(None), self.device)
        card = self.auditor(self.classifier, x, y, cfg["eps"], dataset=self.dataset.name, budget=cfg["budget"], seed=self.seed,
                     device=self.device, batch_size=self.batch_size, progress=self.settings.progress,
                     name=self.workspace.root.name, data=f"the first {len(y)} examples of the evaluation subset")
        stem = self.workspace.root / "analysis" / f"audit_{cfg['budget']}"
        card.write(stem)
        self.cards.append(card)
        rows = []
        for entry in card.to_dict()["eps"]:
            if entry["eps"] == 0:
                continue
            rows.append({**self.common, "kind": Kind.AUDIT, "attack": f"audit_{cfg['budget']}", "eps": entry["eps"],
                         "audit_n": entry["n"], "accuracy": entry["audited"]["accuracy"],
                         "reported_accuracy": entry["reported"]["accuracy"], "audit.reported_attack": entry["reported"]["attack"],
                         "audit.verdict": entry["audited"]["verdict"], "audit.reason": entry["audited"]["reason"],
                         "audit.reported_verdict": entry["reported_verdict"]["verdict"],
                         "audit.reported_reason": entry["reported_verdict"]["reason"],
                         **{f"audit.flagged.{k}": v["share"] for k, v in entry["indicators"].items()},
                         "arrays": f"analysis/{stem.name}.json"})
        return rows

    def derived_rows(self) -> tuple[list[dict], list[integrity.Verdict]]:
        """Worst case and integrity over every outcome recorded for this checkpoint and subset."""
        robust = [r for r in self.recorded() if r["kind"] == Kind.ROBUSTNESS]
        outcomes = [(r, self.workspace.load_outcome(r)["correct"]) for r in robust]
        rows = [{**self.common, **r} for r in robustness.worst_case(outcomes)]
        verdicts = []
        if self.settings.integrity.enabled and self.attacks and outcomes:  # not for analysis-only calls
            verdicts = integrity.run(self.classifier, self.subset, outcomes, self.settings.integrity,
                                     batch_size=self.batch_size, device=self.device, seed=self.seed,
                                     progress=self.settings.progress)
            rows += [{**self.common, **r} for r in integrity.as_rows(verdicts)]
        return rows, verdicts

    def loss_surface_rows(self, cfg) -> list[dict]:
        axis, index, surfaces, rows = loss_surface.compute(
            self.classifier, getattr(self.dataset, cfg.split), points=cfg.points, radius=cfg.radius, step=cfg.step,
            seed=cfg.seed, clip=C.boolean("eval.loss_surface.clip", cfg.clip), batch_size=cfg.batch_size,
            device=self.device)
        folder = self.workspace.root / "analysis"
        # The arrays only: the study's report draws the surfaces (blf.report.renderers).
        storage.save_checkpoint({"axis": axis, "index": index, "surfaces": surfaces}, folder / "loss_surface.pt")
        return [{**self.common, **r, "arrays": "analysis/loss_surface.pt"} for r in rows]


def assess(workspace: RunFolder, run: Assembly, tracker, *, skip_done: bool, auditor=None) -> tuple[list[dict], list[dict]]:
    """(rows recorded for this checkpoint and subset, rows added by this call); `auditor`:
    blf.audit.audit, for analysis=[audit]."""
    assessment = Assessment(workspace, run, auditor)
    if skip_done and assessment.done():
        log.info("%s: evaluation already recorded, skipped", workspace.root)
        return assessment.recorded(), []
    added, _ = assessment.run(resume=skip_done)
    recorded = assessment.recorded()
    tracker.log_evaluation(recorded, added)
    for card in assessment.cards:
        tracker.log_audit(card.summary(), card.figure())
    return recorded, added
