"""Adversarial attacks (the `attack` config group): one module per attack family.

An attack evaluates a classifier at each epsilon of its grid; `perturb` returns adversarial
inputs for one batch at one epsilon. eps = 0 means clean data and is never attacked.

| option | attack | paper |
|---|---|---|
| pgd | L-inf PGD, random start (ours or advertorch's), targeted, restarts | Figs. 3, 4 |
| pgd_tanh_surrogate | PGD crafted with BLF replaced by tanh | Fig. 5 |
| bpda_identity, bpda_tanh, bpda_envelope | BPDA: the real forward, a surrogate head's backward | (adaptive) |
| pgd_cw, pgd_dlr, pgd_cw_prelogits, pgd_dlr_prelogits | PGD on the CW margin or DLR, of logits or pre-logits | (adaptive) |
| prelogit_targeted | PGD on z_t - z_y for the likeliest wrong classes | (adaptive) |
| transfer | PGD crafted on a Baseline of the same study | (adaptive) |
| spsa | SPSA (advertorch) | Table 1 |
| square | Square Attack (AutoAttack code) | Table 2 |
| apgd_ce, apgd_t | APGD-CE, targeted APGD-DLR (AutoAttack code) | Table 4 |
| autoattack | the standard AutoAttack ensemble | (RobustBench) |

`adaptive` (conf/attack/adaptive.yaml) is the adaptive set every headline study runs beside the
paper's attack (docs/evaluation.md); `eval.adaptive=false` leaves it out (a pure paper replay).
"""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig

from blf import config as C
from blf.eval.attacks import pgd as pgd_module
from blf.eval.attacks.autoattack import APGDCE, APGDTargeted, AutoAttackStandard, Square
from blf.eval.attacks.base import Attack
from blf.eval.attacks.margin import MarginPGD, PrelogitTargeted
from blf.eval.attacks.pgd import PGD, pgd
from blf.eval.attacks.spsa import SPSA
from blf.eval.attacks.surrogate import BPDA, TanhSurrogatePGD
from blf.eval.attacks.transfer import TransferPGD

# Attacks that follow the model's gradient; the others (square, spsa) do not. The integrity
# checks compare the two families example by example.
GRADIENT_BASED = ("pgd", "pgd_tanh_surrogate", "apgd_ce", "apgd_t", "autoattack", "bpda_identity", "bpda_tanh",
                  "bpda_envelope", "pgd_cw", "pgd_dlr", "pgd_cw_prelogits", "pgd_dlr_prelogits", "prelogit_targeted",
                  "transfer")
# The attacks whose numbers the paper reports as robustness (sections 5.2-5.3, appendix C). Every
# other option is an adaptive attack, the tanh surrogate included: Fig. 5 runs it as a check of
# BLF's gradients, and it crafts through another head, as BPDA does.
PAPER = ("pgd", "spsa", "square", "apgd_ce", "apgd_t")
GRADIENT_FREE = ("square", "spsa")


def build(name: str, cfg: DictConfig) -> Attack:
    """The attack `attack.<name>._target_` names (conf/attack/<name>.yaml), from its settings; a
    class several options share (its `name` is None) takes the option's name."""
    cls = C.target(f"attack.{name}", cfg, Attack, name=name)
    return cls.from_config(cfg, name=name) if cls.name is None else cls.from_config(cfg)


def build_all(cfg: Mapping | None, adaptive: bool = True) -> list[Attack]:
    """The attacks of an `attack=[...]` selection, in the order given (may be empty); without
    `adaptive` (eval.adaptive=false) the members of the adaptive set (`in_adaptive_set: true`,
    conf/attack/adaptive.yaml) are left out."""
    return [build(name, sub) for name, sub in (cfg or {}).items()
            if adaptive or not sub.get("in_adaptive_set", False)]


__all__ = ["APGDCE", "BPDA", "GRADIENT_BASED", "GRADIENT_FREE", "PAPER", "PGD", "SPSA", "APGDTargeted", "Attack",
           "AutoAttackStandard", "MarginPGD", "PrelogitTargeted", "Square", "TanhSurrogatePGD", "TransferPGD", "build",
           "build_all", "pgd", "pgd_module"]
