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

import logging
from pathlib import Path

from torch import nn

from blf import config as C
from blf.errors import BLFError
from blf.eval.attacks.pgd import PGD
from blf.run import records, storage

AUTO = "auto"
log = logging.getLogger(__name__)


IDENTITY = ("dataset", "model", "training", "head", "regularizer", "seed")


def _identity(folder: Path) -> dict | None:
    """Which model a trained run folder holds: from its first record (the records carry the run's
    identity), else from its checkpoint's config (a run trained without evaluation has no
    records); None for a folder without a readable checkpoint."""
    best = folder / "checkpoints" / "best.pt"
    if not best.is_file():
        return None
    rows = storage.read_jsonl(folder / "results.jsonl") if (folder / "results.jsonl").is_file() else []
    if rows:
        return {k: rows[0].get(k) for k in IDENTITY}
    try:
        config = storage.load_checkpoint(best)["config"]
        return {"dataset": config["dataset"]["name"], "model": records.model_name(config["model"]),
                **{k: config[k]["name"] for k in ("training", "head", "regularizer")}, "seed": config["seed"]}
    except (BLFError, KeyError, TypeError):
        return None


def find_baseline(run_dir: Path, own: dict) -> Path | None:
    """The Baseline beside `run_dir` (module docstring) for a run of identity `own`, or None."""
    candidates = []
    for folder in sorted(Path(run_dir).parent.iterdir()):
        other = _identity(folder) if folder.is_dir() else None
        if other and other["head"] == "identity" and other["regularizer"] == "none" and all(
                other[k] == own.get(k) for k in ("dataset", "model", "training")):
            # Another seed first (independent), then the run itself.
            candidates.append((other["seed"] == own.get("seed"), folder.resolve() == Path(run_dir).resolve(), folder.name))
    return Path(run_dir).parent / min(candidates)[2] if candidates else None


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

    def locate(self, run_dir, identity: dict) -> bool:
        run_dir = Path(run_dir)
        if self.source == AUTO:
            found = find_baseline(run_dir, identity)
            if found is None:  # a study without a Baseline (Fig. 5), or one not trained yet
                log.warning("attack %s: no Baseline (head=identity, regularizer=none, same dataset, model and training) "
                            "with a checkpoint beside %s: not run; attack.%s.source=<run folder> names one",
                            self.name, run_dir, self.name)
                return False
        else:
            found = Path(self.source)
            if not (found / "checkpoints" / f"{self.checkpoint}.pt").is_file():
                raise C.ConfigError(f"attack.{self.name}.source={self.source!r} has no checkpoints/{self.checkpoint}.pt; "
                                    "allowed: auto (a Baseline in the same sweep) or the folder of a trained run")
        self.source_dir = found.resolve()
        return True

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
