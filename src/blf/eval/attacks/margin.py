"""PGD on margin losses, on the logits or on the pre-logits: attacks that a bounded head cannot
mislead by shrinking or saturating its outputs.

- `pgd_cw`, `pgd_dlr` (on logits) and `pgd_cw_prelogits`, `pgd_dlr_prelogits`: PGD ascending the
  Carlini-Wagner margin max_{i != y} v_i - v_y, or the DLR loss -(v_y - max_{i != y} v_i) /
  (v_pi1 - v_pi3) of Croce & Hein 2020 (invariant to shifting and scaling v), where v are the
  logits or the pre-logits z. Cross-entropy's gradient fades as softmax saturates; a margin's
  does not, and on the pre-logits no head stands between the loss and the network.
- `prelogit_targeted`: for each of the `n_target_classes` wrong classes with the largest clean
  pre-logit, PGD ascending z_t - z_y: it drives the true class's pre-logit down and the
  target's up straight through the region where BLF saturates (|z| > z*), until the real
  logits change their order.

For the identity head the pre-logits are the logits: the `_prelogits` options are the plain
margin attacks. Each keeps the first iterate that breaks an example (the logits of a bounded
head are not monotone in the pre-logits).
"""

from __future__ import annotations

import torch
from torch import nn

from blf import config as C
from blf.eval.attacks.pgd import PGD

LOSSES = ("cw", "dlr")
OUTPUTS = ("logits", "prelogits")


def others_max(values: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max over the classes other than y, per example."""
    return values.scatter(1, y[:, None], float("-inf")).amax(dim=1)


def cw_margin(values: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{i != y} v_i - v_y per example (positive: misclassified)."""
    return others_max(values, y) - values.gather(1, y[:, None]).squeeze(1)


def dlr(values: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The DLR loss of Croce & Hein 2020 (eq. 4), per example, to ascend."""
    top = values.sort(dim=1, descending=True).values
    scale = top[:, 0] - top[:, 2] + 1e-12
    return cw_margin(values, y) / scale


def _outputs(model: nn.Module, x: torch.Tensor, outputs: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(the values the loss reads, the logits the model predicts with)."""
    z, logits = model.prelogits_and_logits(x)
    return (z if outputs == "prelogits" else logits), logits


class MarginPGD(PGD):
    """PGD on a margin loss (`loss`: cw | dlr) of the logits or the pre-logits (`outputs`)."""

    name = None  # the option's: pgd_cw, pgd_dlr, pgd_cw_prelogits, pgd_dlr_prelogits
    keep_broken = True

    def __init__(self, eps, nb_iter: int, eps_iter: float, rand_init: bool = True, restarts: int = 1,
                 loss: str = "dlr", outputs: str = "logits", *, name: str | None = None):
        super().__init__(eps, nb_iter, eps_iter, rand_init, restarts, name=name)
        self.loss = C.choice(f"attack.{self.name}.loss", loss, LOSSES)
        self.outputs = C.choice(f"attack.{self.name}.outputs", outputs, OUTPUTS)

    @classmethod
    def from_config(cls, cfg, name: str | None = None) -> MarginPGD:
        a = cls.pgd_arguments(cfg, name)
        return cls(a["eps"], a["nb_iter"], a["eps_iter"], a["rand_init"], a["restarts"], cfg.loss, cfg.outputs, name=name)

    def settings(self) -> dict:
        return {**super().settings(), "loss": self.loss, "outputs": self.outputs}

    def objective(self, model, x, labels):
        values, logits = _outputs(model, x, self.outputs)
        margin = cw_margin if self.loss == "cw" else dlr
        return margin(values.float(), labels), logits


class PrelogitTargeted(PGD):
    """PGD ascending z_t - z_y on the pre-logits, once per target class t (module docstring)."""

    name = "prelogit_targeted"
    keep_broken = True

    def __init__(self, eps, nb_iter: int, eps_iter: float, rand_init: bool = True, restarts: int = 1,
                 n_target_classes: int = 3, *, name: str | None = None):
        super().__init__(eps, nb_iter, eps_iter, rand_init, restarts, name=name)
        self.n_target_classes = C.integer(f"attack.{self.name}.n_target_classes", n_target_classes, ge=1)

    @classmethod
    def from_config(cls, cfg, name: str | None = None) -> PrelogitTargeted:
        a = cls.pgd_arguments(cfg, name)
        return cls(a["eps"], a["nb_iter"], a["eps_iter"], a["rand_init"], a["restarts"], cfg.n_target_classes, name=name)

    def settings(self) -> dict:
        return {**super().settings(), "n_target_classes": self.n_target_classes}

    def check(self, classifier, num_classes: int) -> None:
        if self.n_target_classes > num_classes - 1:
            raise C.ConfigError(f"attack.{self.name}.n_target_classes={self.n_target_classes} exceeds the "
                                f"{num_classes - 1} wrong classes; allowed: 1..{num_classes - 1}")

    def objective(self, model, x, labels):
        # `labels` holds (true class, target) pairs: see perturb.
        z, logits = model.prelogits_and_logits(x)
        z = z.float()
        y, t = labels[:, 0], labels[:, 1]
        return (z.gather(1, t[:, None]) - z.gather(1, y[:, None])).squeeze(1), logits

    def perturb(self, model, x, y, eps):
        with torch.no_grad():
            z, _ = model.prelogits_and_logits(x)
            ranked = z.float().scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)
        best = None
        for k in range(self.n_target_classes):
            pairs = torch.stack([y, ranked[:, k]], dim=1)
            best = self.restarted(model, model, x, y, pairs, eps, best)
        return best
