"""Transfer attack: PGD crafted on an independently trained Baseline, measured on the defended
model (Carlini et al. 2019: a transfer attack must do worse than white-box; where it does
better, the defence masks its own gradients). Label-smoothed models are known to fall to it.

The source is `attack.transfer.source`: a run folder, or `auto`, the Baseline of the same study:
a run folder beside the evaluated one (the same sweep) with the identity head, no regulariser,
and the same dataset, model and training, another seed preferred. A Baseline evaluated with
`auto` and no other seed at hand is its own source (then the attack is plain PGD, as it should
be for an unbounded head); the records name the source either way (`attack.source`).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from blf import config as C
from blf.eval.attacks.pgd import PGD

AUTO = "auto"


def _plain(folder: Path) -> dict | None:
    """The values of a run folder's resolved config that say which model it trained; None where
    it has none or it cannot be read (a folder of another kind)."""
    try:
        cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
        return {"dataset": str(cfg.dataset.name), "model": str(cfg.model.name), "training": str(cfg.training.name),
                "head": str(cfg.head.name), "regularizer": str(cfg.regularizer.name), "seed": int(cfg.seed)}
    except (OSError, OmegaConfBaseException, AttributeError, TypeError, ValueError):
        return None


def find_baseline(run_dir: Path) -> Path | None:
    """The Baseline beside `run_dir` (module docstring), or None."""
    own = _plain(run_dir)
    if own is None:
        return None
    candidates = []
    for folder in sorted(Path(run_dir).parent.iterdir()):
        other = _plain(folder) if (folder / "checkpoints" / "best.pt").is_file() else None
        if other and other["head"] == "identity" and other["regularizer"] == "none" and all(
                other[k] == own[k] for k in ("dataset", "model", "training")):
            # Another seed first (independent), then the run itself.
            candidates.append((other["seed"] == own["seed"], folder.resolve() == Path(run_dir).resolve(), folder))
    return min(candidates)[2] if candidates else None


class TransferPGD(PGD):
    """PGD on the source model's gradients (module docstring); restarts re-craft on the source
    the examples that still survive on the defended model."""

    name = "transfer"

    def __init__(self, eps, nb_iter: int, eps_iter: float, rand_init: bool = True, restarts: int = 1,
                 source: str = AUTO, checkpoint: str = "best", *, name: str | None = None):
        super().__init__(eps, nb_iter, eps_iter, rand_init, restarts, name=name)
        self.source = str(source)
        self.checkpoint = C.choice(f"attack.{self.name}.checkpoint", checkpoint, ("best", "last"))
        self.source_dir: Path | None = None
        self.model: nn.Module | None = None

    @classmethod
    def from_config(cls, cfg, name: str | None = None) -> TransferPGD:
        a = cls.pgd_arguments(cfg, name)
        return cls(a["eps"], a["nb_iter"], a["eps_iter"], a["rand_init"], a["restarts"], cfg.source, cfg.checkpoint,
                   name=name)

    def locate(self, run_dir) -> None:
        run_dir = Path(run_dir)
        found = find_baseline(run_dir) if self.source == AUTO else Path(self.source)
        if found is None or not (found / "checkpoints" / f"{self.checkpoint}.pt").is_file():
            where = (f"no Baseline (head=identity, regularizer=none, same dataset, model and training) with a "
                     f"checkpoint beside {run_dir}" if self.source == AUTO else f"{found} has no checkpoints/{self.checkpoint}.pt")
            raise C.ConfigError(f"attack.{self.name}.source={self.source!r}: {where}; allowed: auto (a Baseline in the "
                                "same sweep) or the folder of a trained run")
        self.source_dir = found.resolve()

    def settings(self) -> dict:
        # The source by name (its folder in the sweep), not by the machine's path.
        source = None if self.source_dir is None else self.source_dir.name
        return {**super().settings(), "source": source, "checkpoint": self.checkpoint}

    def crafting_model(self, model: nn.Module) -> nn.Module:
        if self.source_dir is None:
            raise C.ConfigError(f"attack {self.name} has no source model; allowed: call locate(run_dir) first")
        if self.model is None:
            from blf.trained import load  # the apps' loader (weights_only); imported late: it builds models

            device = next(model.parameters()).device
            self.model = load(self.source_dir, self.checkpoint, device=device).requires_grad_(False)
        return self.model
