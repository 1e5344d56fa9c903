"""The audit of one model on one set of examples at each eps (blf.audit.audit).

Per eps:
1. the reported attack (by default the paper's PGD), `restarts` independent runs, each traced
   (the first run is the number a user would have reported);
2. each signal of attack failure (signals/), in the registry's order: detected per example on
   the reported attack's runs, then its fix on the flagged examples still standing; an example
   broken by any attack stays broken (the worst case per example);
3. the standard set on every example still standing: APGD-CE, targeted APGD-DLR, Square;
4. the signals read from the whole ensemble (another family wins), and their fixes;
5. every signal re-checked on the examples still standing, and the budget check: the final
   attack with twice the steps and restarts must not break materially more (Carlini et al. 2019).
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

from blf.audit.subject import Subject
from blf.console import bar as progress_bar
from blf.eval import signals as S
from blf.eval.attacks import APGDCE, PGD, APGDTargeted, Attack, Square
from blf.eval.attacks.base import PERTURB_ONLY
from blf.eval.signals.trace import Trace, merge

log = logging.getLogger(__name__)


@dataclass
class EpsResult:
    """Everything the audit found at one eps (survival per example in [0, 1]: 1 robust, 0 broken;
    between for a randomized model, the share of draws it survives)."""

    eps: float
    reported: torch.Tensor
    audited: torch.Tensor
    attacks: dict[str, torch.Tensor]
    flags: dict[str, torch.Tensor]
    fixes: dict[str, S.Fix]
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
        self.broke: dict[str, torch.Tensor] = {}  # per attack: the examples it broke itself (survival below 1/2)

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
        self.broke.setdefault(name, torch.zeros(len(self.y), dtype=torch.bool))[index] |= values < 0.5
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
        self.thresholds = cfg.signals

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
            traced: bool = False, seed_offset: int = 0) -> tuple[torch.Tensor, Trace | None]:
        """`attack` on the examples `index`, crafted on `model`; the points and, if `traced` (a
        PGD-family attack), the merged trace of its iterates."""
        torch.manual_seed(self.seed + seed_offset)
        points, traces = [], []
        for start in range(0, len(index), self.batch_size):
            part = index[start:start + self.batch_size]
            xb, yb = self.x[part], self.y[part]
            if traced:
                trace = Trace(yb)
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

    def attack(self, at: S.Attempt, name: str, attack: Attack, model: nn.Module, index: torch.Tensor, fix: S.Fix,
               traced: bool = False):
        """A fix's attack on the examples `index`, crafted on `model`, recorded as `name` and named
        in `fix`; its points (and trace, if `traced`)."""
        if not len(index):
            return (self.x[:0], None) if traced else self.x[:0]
        with self.bar(f"eps={at.eps:g} fix: {name}", len(index)) as bar:
            points, trace = self.run(attack, model, index, at.eps, bar, traced=traced)
        at.ledger.record(name, index, points)
        fix.attacks.append(name)
        return (points, trace) if traced else points

    # --- the audit at one eps -----------------------------------------------------------------

    def at(self, eps: float, clean: torch.Tensor) -> EpsResult:
        start = time.perf_counter()
        ledger = Ledger(lambda x, y, index: self.survival(x, y), self.x, self.y, clean)
        n = len(self.y)
        fixes = {s.name: S.Fix(s.name) for s in S.SIGNALS}
        flags = {s.name: torch.zeros(n, dtype=torch.bool) for s in S.SIGNALS}
        if eps == 0:
            return EpsResult(eps, clean, clean, {}, flags, fixes, {}, time.perf_counter() - start)
        # The reported attack sees the model as a user's attack would: no BPDA, no EOT.
        everyone = torch.arange(n)

        # 1. The reported attack, restarts traced.
        traces, ends = [], []
        with self.bar(f"eps={eps:g} reported {self.reported.name}", n * self.budget.restarts) as bar:
            for r in range(self.budget.restarts):
                points, trace = self.run(self.reported, self.subject.view, everyone, eps, bar, traced=True, seed_offset=r)
                ends.append(points)
                traces.append(trace)
        # The first run is the number a user would report; the others count for the audit only.
        runs = [ledger.record(self.reported.name, everyone, points) for points in ends]
        reported = runs[0].clone()
        at = S.Attempt(self, eps, ledger, traces, runs, ends[0], reported > 0, flags, fixes)

        # 2-4. Each signal detected and fixed in the registry's order, the standard set between.
        signals = [s(self.thresholds[s.name]) for s in S.SIGNALS]
        for signal in [s for s in signals if not s.after_standard_set]:
            self.detect_and_fix(at, signal)
        self.standard_set(eps, ledger)
        for signal in [s for s in signals if s.after_standard_set]:
            self.detect_and_fix(at, signal)

        # 5. Every signal again, on the examples still standing; the budget.
        for signal in signals:
            fixes[signal.name].still = signal.recheck(at)
        budget = self.budget_check(eps, ledger)
        audited = ledger.survival.clone()
        if self.subject.randomized:
            # The worst point per example was chosen on few draws each, and the smallest of several
            # noisy estimates is biased low: the expectation at that point is measured afresh.
            audited = self.survival(ledger.points, self.y, draws=self.budget.expectation_draws)
            reported = self.survival(ends[0], self.y, draws=self.budget.expectation_draws)
        return EpsResult(eps, reported, audited, dict(ledger.attacks), flags, fixes, budget,
                         time.perf_counter() - start, at.skipped)

    def detect_and_fix(self, at: S.Attempt, signal: S.Signal) -> None:
        flags = at.flags[signal.name] = signal.detect(at)
        fix = at.fixes[signal.name]
        fix.flagged, fix.before = int(flags.sum()), at.ledger.accuracy()
        index = signal.targets(at, flags)
        if len(index):
            signal.repair(at, index, fix)
        fix.after = at.ledger.accuracy()

    def standard_set(self, eps: float, ledger: Ledger) -> None:
        """APGD-CE, targeted APGD-DLR and Square (AutoAttack's code) on every example standing,
        and the transfer attack where a source model was given."""
        b = self.budget
        found = [("apgd_ce", APGDCE(PERTURB_ONLY, b.apgd_iter, b.apgd_restarts, 0.75, self.seed), self.subject.crafter())]
        if self.num_classes() > 2:
            targets = min(b.apgd_targets, self.num_classes() - 1)
            found.append(("apgd_t", APGDTargeted(PERTURB_ONLY, b.apgd_iter, b.apgd_restarts, 0.75, self.seed, targets),
                          self.subject.crafter()))
        found.append(("square", Square(PERTURB_ONLY, b.square_queries, 0.8, 1, "margin", self.seed), self.subject.view))
        if self.transfer_from is not None:
            found.append(("transfer", PGD(PERTURB_ONLY, self.reported.nb_iter, self.reported.eps_iter), self.transfer_from))
        for name, attack, model in found:
            index = ledger.standing()
            if not len(index):
                break
            with self.bar(f"eps={eps:g} {name}", len(index)) as bar:
                points, _ = self.run(attack, model, index, eps, bar)
            ledger.record(name, index, points)

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
        made = PGD(PERTURB_ONLY, **settings)
        made.keep_broken = True  # an audit's own runs keep the best iterate (silent success)
        return made

    @property
    def outputs(self) -> str:
        """What the margin losses read: the pre-logits where known, else the logits."""
        return "prelogits" if self.subject.has_prelogits else "logits"

    def num_classes(self) -> int:
        with torch.no_grad():
            return int(self.subject.model(self.x[:1]).shape[1])

    def bar(self, desc: str, total: int):
        return progress_bar(total=total, desc=f"audit {desc}", unit="img", enabled=self.progress)
