"""The audit of one model on one set of examples at each eps (blf.audit.audit).

Per eps:
1. the reported attack (by default the paper's PGD), `restarts` independent runs, each traced
   (the first run is the number a user would have reported);
2. the indicators of attack failure on its runs, per example (indicators.py);
3. each indicator's fix, on the examples it flagged that still stand, in a fixed order
   (unstable predictions first: EOT changes how every later attack sees the model); an example
   broken by any attack stays broken (the worst case per example);
4. the standard set on every example still standing: APGD-CE, targeted APGD-DLR, Square;
5. the indicators again, on the attacks that ran as fixes and on the examples still standing,
   and the budget check: the final attack with twice the steps and restarts must not break
   materially more (Carlini et al. 2019).
The two answers are read from that (verdicts.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig
from torch import nn

from blf.audit import indicators as I
from blf.audit.subject import Subject
from blf.console import bar as progress_bar
from blf.eval.attacks import APGDCE, BPDA, PGD, APGDTargeted, Attack, MarginPGD, PrelogitTargeted, Square
from blf.nn.heads import Tanh
from blf.nn.models import frozen

log = logging.getLogger(__name__)


@dataclass
class Fix:
    """One indicator on one eps: what it flagged, the fix that ran on those examples, and the
    worst-case accuracy before and after it."""

    indicator: str
    flagged: int = 0
    attacks: list[str] = field(default_factory=list)
    before: float | None = None
    after: float | None = None
    still: int = 0  # flagged again after the fixes, among the examples still standing
    note: str = ""


@dataclass
class EpsResult:
    """Everything the audit found at one eps (survival per example in [0, 1]: 1 robust, 0 broken;
    between for a randomized model, the share of draws it survives)."""

    eps: float
    reported: torch.Tensor
    audited: torch.Tensor
    attacks: dict[str, torch.Tensor]
    flags: dict[str, torch.Tensor]
    fixes: dict[str, Fix]
    budget: dict
    seconds: float
    skipped: list[str] = field(default_factory=list)


class Ledger:
    """The worst case per example over every attack run at one eps."""

    def __init__(self, survive: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                 x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor):
        self.survive, self.x, self.y = survive, x, y
        self.survival = clean.clone()
        self.points = x.clone()
        self.attacks: dict[str, torch.Tensor] = {}

    def standing(self, among: torch.Tensor | None = None) -> torch.Tensor:
        """Indices of the examples no attack has broken yet (in `among` where given)."""
        alive = self.survival > 0
        if among is not None:
            alive &= among
        return torch.nonzero(alive).flatten()

    def accuracy(self) -> float:
        return 100.0 * float(self.survival.mean())

    def record(self, name: str, index: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """The survival of the examples `index` at `x_adv` under attack `name`; the worst case
        takes the smaller. Examples the attack did not try keep their survival for it."""
        if len(index) == 0:
            return torch.empty(0)
        values = self.survive(x_adv, self.y[index], index)
        mine = self.attacks.setdefault(name, self.survival.clone())
        mine[index] = torch.minimum(mine[index], values)
        lower = values < self.survival[index]
        self.survival[index[lower]] = values[lower]
        self.points[index[lower]] = x_adv[lower.to(x_adv.device)]
        return values


class Procedure:
    """Runs steps 1-5 of the module docstring for one subject on one set of examples."""

    def __init__(self, subject: Subject, x: torch.Tensor, y: torch.Tensor, cfg: DictConfig, budget: DictConfig, *,
                 reported: PGD, seed: int, batch_size: int, progress: bool, transfer_from: nn.Module | None = None):
        self.subject, self.x, self.y, self.cfg, self.budget = subject, x, y, cfg, budget
        self.reported, self.seed, self.batch_size, self.progress = reported, seed, batch_size, progress
        self.transfer_from = transfer_from
        self.thresholds = cfg.indicators

    # --- running attacks ----------------------------------------------------------------------

    def survival(self, x: torch.Tensor, y: torch.Tensor, draws: int | None = None) -> torch.Tensor:
        """1.0 where the model classifies x correctly; for a randomized model the share of `draws`
        (default `eot_draws`) forward passes that do (accuracy as an expectation)."""
        draws = (draws or self.budget.eot_draws) if self.subject.randomized else 1
        out = []
        with torch.no_grad():
            for start in range(0, len(x), self.batch_size):
                xb, yb = x[start:start + self.batch_size], y[start:start + self.batch_size]
                right = torch.stack([(self.subject.model(xb).argmax(1) == yb).float() for _ in range(draws)]).mean(0)
                out.append(right.cpu())
        return torch.cat(out) if out else torch.empty(0)

    def run(self, attack: Attack, model: nn.Module, index: torch.Tensor, eps: float, bar=None,
            traced: bool = False, seed_offset: int = 0) -> tuple[torch.Tensor, I.Trace | None]:
        """`attack` on the examples `index`, crafted on `model`; the points and, if `traced` (a
        PGD-family attack), the merged trace of its iterates."""
        torch.manual_seed(self.seed + seed_offset)
        points, traces = [], []
        for start in range(0, len(index), self.batch_size):
            part = index[start:start + self.batch_size]
            xb, yb = self.x[part], self.y[part]
            if traced:
                trace = I.Trace(yb)
                attack.observe = trace
            try:
                points.append(attack.perturb(model, xb, yb, eps).detach())
            finally:
                if traced:
                    attack.observe = None
            if traced:
                traces.append(trace)
            if bar is not None:
                bar.update(len(part))
        if not points:
            return self.x[:0], None
        return torch.cat(points), merge(traces) if traced else None

    # --- the audit at one eps -----------------------------------------------------------------

    def at(self, eps: float, clean: torch.Tensor) -> EpsResult:
        start = time.perf_counter()
        ledger = Ledger(lambda x, y, index: self.survival(x, y), self.x, self.y, clean)
        n = len(self.y)
        fixes = {name: Fix(name) for name in I.NAMES}
        flags = {name: torch.zeros(n, dtype=torch.bool) for name in I.NAMES}
        skipped: list[str] = []
        if eps == 0:
            return EpsResult(eps, clean, clean, {}, flags, fixes, {}, time.perf_counter() - start)
        # The reported attack sees the model as a user's attack would: no BPDA, no EOT.
        plain = self.subject.view
        everyone = torch.arange(n)

        # 1. The reported attack, restarts traced.
        runs, traces, ends = [], [], []
        with self.bar(f"eps={eps:g} reported {self.reported.name}", n * self.budget.restarts) as bar:
            for r in range(self.budget.restarts):
                points, trace = self.run(self.reported, plain, everyone, eps, bar, traced=True, seed_offset=r)
                ends.append(points)
                traces.append(trace)
        reported_points = ends[0]
        # The first run is the number a user would report; the others count for the audit only.
        runs = [ledger.record(self.reported.name, everyone, points) for points in ends]
        reported = runs[0].clone()

        # 2. The indicators on the reported attack (per example, among the examples it left standing).
        standing = reported > 0
        t = self.thresholds
        flags["silent_success"] = I.silent_success(traces[0], standing)
        flags["incomplete_optimization"] = I.incomplete_optimization(
            traces[0], standing, t.incomplete_optimization.window, t.incomplete_optimization.min_gain)
        flags["non_converging_restarts"] = I.non_converging_restarts(
            traces, [(s > 0) for s in runs], standing, t.non_converging_restarts.margin_spread)
        flags["unavailable_gradients"] = self.gradient_flags(plain, reported_points, standing)
        flags["unstable_predictions"] = self.unstable(reported_points) & standing if self.subject.randomized else \
            torch.zeros(n, dtype=torch.bool)

        # 3. The fixes, each on the flagged examples still standing.
        self.fix_unstable(eps, ledger, flags, fixes["unstable_predictions"])
        self.fix_silent(ledger, traces[0], flags, fixes["silent_success"])
        surrogate_points = self.fix_gradients(eps, ledger, flags, fixes["unavailable_gradients"], skipped)
        longer = self.fix_incomplete(eps, ledger, flags, fixes["incomplete_optimization"])
        more = self.fix_restarts(eps, ledger, flags, fixes["non_converging_restarts"])
        flags["transfer_failure"] = self.transfer_flags(ledger, surrogate_points)
        self.fix_transfer(eps, ledger, flags, fixes["transfer_failure"], skipped)

        # 4. The standard set on every example still standing.
        self.standard_set(eps, ledger)

        # 5. The indicators again, on the fixes' attacks and the examples still standing.
        self.after(ledger, fixes, longer, more, surrogate_points)
        budget = self.budget_check(eps, ledger)
        audited = ledger.survival.clone()
        if self.subject.randomized:
            # The worst point per example was chosen on few draws each, and the smallest of several
            # noisy estimates is biased low: the expectation at that point is measured afresh.
            audited = self.survival(ledger.points, self.y, draws=self.budget.expectation_draws)
            reported = self.survival(reported_points, self.y, draws=self.budget.expectation_draws)
        return EpsResult(eps, reported, audited, dict(ledger.attacks), flags, fixes, budget,
                         time.perf_counter() - start, skipped)

    # --- detection helpers --------------------------------------------------------------------

    def gradient_flags(self, model: nn.Module, points: torch.Tensor, standing: torch.Tensor) -> torch.Tensor:
        """Unavailable gradients at the clean input or at the reported attack's point."""
        floor = self.thresholds.unavailable_gradients.relative_floor
        flagged = torch.zeros(len(self.y), dtype=torch.bool)
        with frozen(self.subject.model):
            for where in (self.x, points):
                for start in range(0, len(self.y), self.batch_size):
                    part = slice(start, start + self.batch_size)
                    flagged[part] |= I.unavailable_gradients(model, where[part], self.y[part], standing[part], floor)
        return flagged & standing

    def unstable(self, points: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, len(points), self.batch_size):
            out.append(I.unstable_predictions(self.subject.view, points[start:start + self.batch_size],
                                              self.budget.stability_draws))
        return torch.cat(out)

    def transfer_flags(self, ledger: Ledger, surrogate_points: dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Examples that a surrogate's points broke on the surrogate but not on the model."""
        flagged = torch.zeros(len(self.y), dtype=torch.bool)
        standing = ledger.survival > 0
        for surrogate, index, points in surrogate_points.values():
            if len(index):
                flagged[index] |= I.transfer_failure(surrogate, self.subject.view, points, self.y[index], standing[index])
        return flagged

    # --- the fixes ----------------------------------------------------------------------------

    def flagged_standing(self, ledger: Ledger, flags: dict, name: str, fix: Fix) -> torch.Tensor:
        index = ledger.standing(flags[name])
        fix.flagged = int(flags[name].sum())
        fix.before = ledger.accuracy()
        return index

    def fix_unstable(self, eps, ledger, flags, fix: Fix) -> None:
        index = self.flagged_standing(ledger, flags, "unstable_predictions", fix)
        if len(index):
            # EOT: the gradient of the expected loss over `eot_draws` draws (subject.crafter).
            attack = self.pgd_like(self.reported)
            with self.bar(f"eps={eps:g} fix: EOT-{self.reported.name}", len(index)) as bar:
                points, _ = self.run(attack, self.subject.crafter(), index, eps, bar)
            ledger.record(f"eot_{self.reported.name}", index, points)
            fix.attacks.append(f"eot_{self.reported.name}")
        fix.after = ledger.accuracy()

    def fix_silent(self, ledger, trace: I.Trace, flags, fix: Fix) -> None:
        index = self.flagged_standing(ledger, flags, "silent_success", fix)
        if len(index):
            ledger.record("best_iterate", index, trace.first[index.to(trace.first.device)])
            fix.attacks.append("best iterate")
        fix.after = ledger.accuracy()

    def fix_gradients(self, eps, ledger, flags, fix: Fix, skipped: list[str]) -> dict:
        """BPDA through blocking modules (in the crafter already) and through the head's envelope,
        margin losses on the pre-logits (or the logits), Square."""
        index = self.flagged_standing(ledger, flags, "unavailable_gradients", fix)
        surrogates: dict = {}
        if len(index):
            for name, attack, model, surrogate in self.gradient_fixes(skipped):
                part = ledger.standing(torch.isin(torch.arange(len(self.y)), index))
                if not len(part):
                    break
                with self.bar(f"eps={eps:g} fix: {name}", len(part)) as bar:
                    points, _ = self.run(attack, model, part, eps, bar)
                ledger.record(name, part, points)
                fix.attacks.append(name)
                if surrogate is not None:
                    surrogates[name] = (surrogate, part, points)
        fix.after = ledger.accuracy()
        return surrogates

    def gradient_fixes(self, skipped: list[str]):
        """(name, attack, model to craft on, surrogate model or None) for unavailable gradients."""
        steps, step = self.reported.nb_iter, self.reported.eps_iter
        found = []
        if self.subject.blockers:  # the reported attack again, across the blocking modules by BPDA
            found.append((f"bpda_{self.reported.name}", self.pgd_like(self.reported), self.subject.crafter(), None))
        if self.subject.bounded:
            classifier = self.subject.classifier_crafter()
            for surrogate in ("envelope", "tanh"):
                attack = BPDA([1.0], steps, step, surrogate=surrogate, name=f"bpda_{surrogate}")
                found.append((f"bpda_{surrogate}", attack, classifier, self.surrogate_classifier(surrogate)))
        else:
            skipped.append("BPDA through the head: no bounded head known (pass a blf Classifier or a model from "
                           "blf.with_head)")
        outputs = "prelogits" if self.subject.has_prelogits else "logits"
        if not self.subject.has_prelogits:
            skipped.append("margin losses on the pre-logits: no pre-logits known (prelogits=); the logits' instead")
        found.append((f"pgd_dlr_{outputs}", MarginPGD([1.0], steps, step, loss="dlr", outputs=outputs,
                                                      name=f"pgd_dlr_{outputs}"), self.subject.crafter(), None))
        found.append(("square", Square([1.0], self.budget.square_queries, 0.8, 1, "margin", self.seed), self.subject.view, None))
        return found

    def surrogate_classifier(self, surrogate: str) -> nn.Module:
        """The classifier with the surrogate head in place of the real one, forward and backward:
        a point that is adversarial here but not on the model is a transfer failure."""
        from blf.eval.attacks.surrogate import envelope

        classifier = self.subject.classifier
        function, gamma = self.subject.function, classifier.head.scale()
        if surrogate == "tanh":
            return classifier.with_head(Tanh(gamma))
        return classifier.with_head(EnvelopeHead(function, gamma, envelope))

    def fix_incomplete(self, eps, ledger, flags, fix: Fix) -> tuple[torch.Tensor, I.Trace] | None:
        """More steps (the reported attack's step, `steps_factor` x its steps, best iterate kept),
        then APGD-CE, whose step size schedule does not depend on a step chosen by hand."""
        index = self.flagged_standing(ledger, flags, "incomplete_optimization", fix)
        result = None
        if len(index):
            steps = self.reported.nb_iter * self.budget.steps_factor
            longer = self.pgd_like(self.reported, nb_iter=steps)
            with self.bar(f"eps={eps:g} fix: {self.reported.name}-{steps}", len(index)) as bar:
                points, trace = self.run(longer, self.subject.crafter(), index, eps, bar, traced=True)
            ledger.record(f"{self.reported.name}-{steps}", index, points)
            fix.attacks.append(f"{self.reported.name}-{steps}")
            result = (index, trace)
            part = ledger.standing(torch.isin(torch.arange(len(self.y)), index))
            if len(part):
                apgd = APGDCE([1.0], steps, 1, 0.75, self.seed)
                with self.bar(f"eps={eps:g} fix: apgd_ce-{steps}", len(part)) as bar:
                    points, _ = self.run(apgd, self.subject.crafter(), part, eps, bar)
                ledger.record(f"apgd_ce-{steps}", part, points)
                fix.attacks.append(f"apgd_ce-{steps}")
        fix.after = ledger.accuracy()
        return result

    def fix_restarts(self, eps, ledger, flags, fix: Fix) -> tuple[torch.Tensor, list, list] | None:
        index = self.flagged_standing(ledger, flags, "non_converging_restarts", fix)
        result = None
        if len(index):
            # At the longer attack's steps: restarts of an attack that has not finished disagree for that reason.
            count = self.budget.restarts * self.budget.restarts_factor
            attack = self.pgd_like(self.reported, nb_iter=self.reported.nb_iter * self.budget.steps_factor)
            traces, outcomes = [], []
            with self.bar(f"eps={eps:g} fix: {count} restarts", len(index) * count) as bar:
                for r in range(count):
                    points, trace = self.run(attack, self.subject.crafter(), index, eps, bar, traced=True,
                                             seed_offset=100 + r)
                    outcomes.append(ledger.record(f"{self.reported.name}-{attack.nb_iter}_x{count}_restarts", index, points) > 0)
                    traces.append(trace)
            fix.attacks.append(f"{self.reported.name}-{attack.nb_iter} x {count} restarts")
            result = (index, traces, outcomes)
        fix.after = ledger.accuracy()
        return result

    def fix_transfer(self, eps, ledger, flags, fix: Fix, skipped: list[str]) -> None:
        """The other surrogates' losses straight on the pre-logits: CW margin and the pre-logit
        targeted attack."""
        index = self.flagged_standing(ledger, flags, "transfer_failure", fix)
        if len(index):
            steps, step = self.reported.nb_iter, self.reported.eps_iter
            outputs = "prelogits" if self.subject.has_prelogits else "logits"
            found = [(f"pgd_cw_{outputs}", MarginPGD([1.0], steps, step, loss="cw", outputs=outputs, name=f"pgd_cw_{outputs}"))]
            if self.subject.has_prelogits:
                found.append(("prelogit_targeted", PrelogitTargeted([1.0], steps, step, n_target_classes=min(
                    3, self.num_classes() - 1))))
            for name, attack in found:
                part = ledger.standing(torch.isin(torch.arange(len(self.y)), index))
                if not len(part):
                    break
                with self.bar(f"eps={eps:g} fix: {name}", len(part)) as bar:
                    points, _ = self.run(attack, self.subject.crafter(), part, eps, bar)
                ledger.record(name, part, points)
                fix.attacks.append(name)
        fix.after = ledger.accuracy()

    def standard_set(self, eps: float, ledger: Ledger) -> None:
        """APGD-CE, targeted APGD-DLR and Square (AutoAttack's code) on every example standing,
        and the transfer attack where a source model was given."""
        b = self.budget
        found = [("apgd_ce", APGDCE([1.0], b.apgd_iter, b.apgd_restarts, 0.75, self.seed), self.subject.crafter())]
        if self.num_classes() > 2:
            targets = min(b.apgd_targets, self.num_classes() - 1)
            found.append(("apgd_t", APGDTargeted([1.0], b.apgd_iter, b.apgd_restarts, 0.75, self.seed, targets),
                          self.subject.crafter()))
        found.append(("square", Square([1.0], b.square_queries, 0.8, 1, "margin", self.seed), self.subject.view))
        if self.transfer_from is not None:
            found.append(("transfer", PGD([1.0], self.reported.nb_iter, self.reported.eps_iter), self.transfer_from))
        for name, attack, model in found:
            index = ledger.standing()
            if not len(index):
                break
            with self.bar(f"eps={eps:g} {name}", len(index)) as bar:
                points, _ = self.run(attack, model, index, eps, bar)
            ledger.record(name, index, points)

    # --- after the fixes ----------------------------------------------------------------------

    def after(self, ledger: Ledger, fixes: dict[str, Fix], longer, more, surrogate_points) -> None:
        """Each indicator measured again where its fix ran, on the examples still standing."""
        t = self.thresholds
        standing = ledger.survival > 0
        if longer is not None:
            index, trace = longer
            flagged = I.incomplete_optimization(trace, standing[index], t.incomplete_optimization.window,
                                                t.incomplete_optimization.min_gain)
            fixes["incomplete_optimization"].still = int(flagged.sum())
        if more is not None:
            index, traces, _ = more
            fixes["non_converging_restarts"].still = int(I.restarts_still_pay(
                traces, standing[index], t.non_converging_restarts.still_gain).sum())
        fixes["transfer_failure"].still = int(self.transfer_flags(ledger, surrogate_points).sum()) if surrogate_points else 0
        # Gradients: unavailable where no loss the fixes ascended has one (cross-entropy through
        # the crafter, the margin on the pre-logits or logits, and for a bounded head the envelope's).
        index = ledger.standing()
        if len(index) and fixes["unavailable_gradients"].flagged:
            fixes["unavailable_gradients"].still = int(self.gradients_at(ledger.points[index], index).sum())
        if self.subject.randomized and len(index):
            # After EOT: two independent expectations still disagree on the prediction.
            eot = self.subject.crafter()
            with torch.no_grad():
                a = torch.cat([eot(p).argmax(1).cpu() for p in ledger.points[index].split(self.batch_size)])
                b = torch.cat([eot(p).argmax(1).cpu() for p in ledger.points[index].split(self.batch_size)])
            fixes["unstable_predictions"].still = int((a != b).sum())
        # Silent success cannot recur: every attack that ran as a fix kept its best iterate.
        fixes["silent_success"].still = 0

    def gradients_at(self, points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Per example at `points`: True where every loss the gradient fixes ascend lacks a gradient."""
        floor = self.thresholds.unavailable_gradients.relative_floor
        outputs = "prelogits" if self.subject.has_prelogits else "logits"
        crafter = self.subject.crafter()
        out = []
        with frozen(self.subject.model):
            for start in range(0, len(index), self.batch_size):
                part, where = index[start:start + self.batch_size], points[start:start + self.batch_size]
                y = self.y[part]
                stuck = I.unavailable_gradients(crafter, where, y, torch.ones(len(part), dtype=torch.bool), floor)
                stuck &= I.margin_gradient_unavailable(crafter, where, y, outputs)
                if self.subject.bounded:
                    stuck &= I.unavailable_gradients(self.surrogate_classifier("envelope"), where, y,
                                                     torch.ones(len(part), dtype=torch.bool), floor)
                out.append(stuck)
        return torch.cat(out)

    def budget_check(self, eps: float, ledger: Ledger) -> dict:
        """The final gradient attack (the reported one at `steps_factor` x its steps), and then
        with twice the steps and twice the restarts, on the first `budget_max_n` examples still
        standing: what the doubling breaks, in points of all examples."""
        index = ledger.standing()[: self.cfg.verdict.budget_max_n]
        steps = self.reported.nb_iter * self.budget.steps_factor
        result = {"steps": steps, "restarts": 1, "doubled_steps": 2 * steps, "doubled_restarts": 2,
                  "tried": int(len(index)), "broken": 0, "drop": 0.0}
        if len(index):
            doubled = self.pgd_like(self.reported, nb_iter=2 * steps, restarts=2)
            with self.bar(f"eps={eps:g} budget x2", len(index)) as bar:
                points, _ = self.run(doubled, self.subject.crafter(), index, eps, bar, seed_offset=1000)
            before = ledger.survival[index].clone()
            after = ledger.record(f"{self.reported.name}-{2 * steps}x2", index, points)
            result["broken"] = int(((before > 0) & (after == 0)).sum())
            result["drop"] = 100.0 * float((before - torch.minimum(before, after)).sum()) / len(self.y)
        return result

    # --- small helpers ------------------------------------------------------------------------

    def pgd_like(self, attack: PGD, **changes) -> PGD:
        settings = {"nb_iter": attack.nb_iter, "eps_iter": attack.eps_iter, "rand_init": attack.rand_init,
                    "restarts": attack.restarts, **changes}
        made = PGD([1.0], **settings)
        made.keep_broken = True  # an audit's own runs keep the best iterate (silent success)
        return made

    def num_classes(self) -> int:
        with torch.no_grad():
            return int(self.subject.model(self.x[:1]).shape[1])

    def bar(self, desc: str, total: int):
        return progress_bar(total=total, desc=f"audit {desc}", unit="img", enabled=self.progress)


class EnvelopeHead(nn.Module):
    """gamma x the head's smooth envelope (eval/attacks/surrogate.py), forward and backward."""

    name = "envelope"

    def __init__(self, function, gamma: float, envelope):
        super().__init__()
        self.function, self.gamma, self.envelope = function, gamma, envelope

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.gamma * self.envelope(self.function, z)


def merge(traces: list[I.Trace]) -> I.Trace:
    """The traces of consecutive batches as one trace over all their examples."""
    merged = I.Trace(torch.cat([t.y for t in traces]))
    merged.losses = [torch.cat(rows) for rows in zip(*[t.losses for t in traces])]
    merged.margins = [torch.cat(rows) for rows in zip(*[t.margins for t in traces])]
    merged.adversarial = [torch.cat(rows) for rows in zip(*[t.adversarial for t in traces])]
    merged.first = torch.cat([t.first for t in traces])
    merged.found = torch.cat([t.found.cpu() for t in traces])
    return merged
