"""Transfer attack: PGD crafted on an independently trained Baseline, measured on the defended
model (Carlini et al. 2019: a transfer attack must do worse than white-box; where it does
better, the defence masks its own gradients). Label-smoothed models are known to fall to it.

The attack crafts on whatever source model its caller hands it (`use_source`); it never reads a
run folder, so any model can be a source. The apps hand it the one `attack.transfer.source` names
(blf.sources): a run folder, or `auto`, the Baseline of the same study beside the evaluated run.
The records name the source (`attack.source`).
"""

from __future__ import annotations

from torch import nn

from blf import config as C
from blf.eval.attacks.pgd import PGD

AUTO = "auto"


class TransferPGD(PGD):
    """PGD on the source model's gradients (module docstring); restarts re-craft on the source
    the examples that still survive on the defended model."""

    name = "transfer"

    def __init__(self, eps, nb_iter: int, eps_iter: float, rand_init: bool = True, restarts: int = 1,
                 source: str = AUTO, checkpoint: str = "best", *, name: str | None = None):
        super().__init__(eps, nb_iter, eps_iter, rand_init, restarts, name=name)
        self.source = str(source)  # where the caller finds the source: auto or a run folder
        self.checkpoint = C.choice(f"attack.{self.name}.checkpoint", checkpoint, ("best", "last"))
        self.source_name: str | None = None
        self.model: nn.Module | None = None

    @classmethod
    def from_config(cls, cfg, name: str | None = None) -> TransferPGD:
        a = cls.pgd_arguments(cfg, name)
        return cls(a["eps"], a["nb_iter"], a["eps_iter"], a["rand_init"], a["restarts"], cfg.source, cfg.checkpoint,
                   name=name)

    def use_source(self, model: nn.Module, name: str) -> None:
        """Craft on `model` (in eval mode, on the evaluated model's device), named `name` in the records."""
        self.model, self.source_name = model, str(name)

    def settings(self) -> dict:
        # The source by name (its folder in the sweep), not by the machine's path.
        return {**super().settings(), "source": self.source_name, "checkpoint": self.checkpoint}

    def crafting_model(self, model: nn.Module) -> nn.Module:
        if self.model is None:
            raise C.ConfigError(f"attack {self.name} has no source model; allowed: hand it one with use_source(model, name)")
        return self.model
