"""What every signal of attack failure is (Signal), what it sees of one eps (Attempt), and what
its fix did (Fix); the signals themselves: one module each beside this one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch


@dataclass
class Fix:
    """One signal at one eps: what it flagged, the attacks its fix ran, the worst-case accuracy
    before and after them, and what it still flags after every fix."""

    signal: str
    flagged: int = 0
    attacks: list[str] = field(default_factory=list)
    before: float | None = None
    after: float | None = None
    still: int = 0
    note: str = ""


@dataclass(frozen=True)
class Repair:
    """One attack of a fix: its name on the card, the attack, the model it crafts on, and the
    surrogate whose points it made (for transfer failure), if it crafted on one."""

    name: str
    attack: object
    crafter: object
    surrogate: object = None


@dataclass
class Attempt:
    """The audit at one eps as the signals see it: the reported attack's runs, the worst case so
    far (`ledger`), each signal's flags and fix, and what fixes left for later signals (`found`:
    surrogate points, traces of longer attacks, the modules whose gradients disagree)."""

    procedure: object               # the audit's procedure: the subject, the examples, how to run an attack
    eps: float
    ledger: object                  # the worst case per example so far, and what each attack broke
    traces: list                    # the reported attack's restarts, traced
    runs: list[torch.Tensor]        # their survival per example
    points: torch.Tensor            # the first run's points (the number a user would report)
    standing: torch.Tensor          # survived the first run
    flags: dict[str, torch.Tensor] = field(default_factory=dict)
    fixes: dict[str, Fix] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    found: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.standing)

    def none(self) -> torch.Tensor:
        return torch.zeros(self.n, dtype=torch.bool)

    def standing_among(self, index: torch.Tensor) -> torch.Tensor:
        """Of the examples `index`, those no attack has broken yet."""
        return self.ledger.standing(torch.isin(torch.arange(self.n), index))


class Signal(ABC):
    """One signal (module docstring). `cfg` is its entry in conf/signals.yaml (`max_share`: the
    percent of the audited examples above which it fires)."""

    name: str
    title: str
    remedy: str
    after_standard_set = False  # detected on the reported attack (False) or after the standard set

    def __init__(self, cfg):
        self.cfg = cfg

    @abstractmethod
    def detect(self, at: Attempt) -> torch.Tensor:
        """Per example, among those the reported attack left standing: whether it fires."""

    def targets(self, at: Attempt, flags: torch.Tensor) -> torch.Tensor:
        """The examples its fix runs on: the flagged ones still standing."""
        return at.ledger.standing(flags)

    @abstractmethod
    def repair(self, at: Attempt, index: torch.Tensor, fix: Fix) -> None:
        """Run the fix on the flagged examples still standing (`index`), naming its attacks in `fix`."""

    def recheck(self, at: Attempt) -> int:
        """How many examples it still flags after every fix (0: it cannot recur)."""
        return 0
