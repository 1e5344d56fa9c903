"""Adversarial attacks (the `attack` config group): one module per attack family.

An attack evaluates a classifier at each epsilon of its grid; `perturb` returns adversarial
inputs for one batch at one epsilon. eps = 0 means clean data and is never attacked.

| option | attack | paper |
|---|---|---|
| pgd | L-inf PGD, random start (ours or advertorch's), targeted, restarts | Figs. 3, 4 |
| pgd_tanh_surrogate | PGD crafted with BLF replaced by tanh | Fig. 5 |
| spsa | SPSA (advertorch) | Table 1 |
| square | Square Attack (AutoAttack code) | Table 2 |
| apgd_ce, apgd_t | APGD-CE, targeted APGD-DLR (AutoAttack code) | Table 4 |
| autoattack | the standard AutoAttack ensemble | (RobustBench) |
"""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig

from blf import config as C
from blf.eval.attacks import pgd as pgd_module
from blf.eval.attacks.autoattack import APGDCE, APGDTargeted, AutoAttackStandard, Square
from blf.eval.attacks.base import Attack
from blf.eval.attacks.pgd import PGD, pgd
from blf.eval.attacks.spsa import SPSA
from blf.eval.attacks.surrogate import TanhSurrogatePGD

# Attacks that follow the model's gradient; the others (square, spsa) do not. The integrity
# checks compare the two families example by example.
GRADIENT_BASED = ("pgd", "pgd_tanh_surrogate", "apgd_ce", "apgd_t", "autoattack")
GRADIENT_FREE = ("square", "spsa")


def build(name: str, cfg: DictConfig) -> Attack:
    """The attack `attack.<name>._target_` names (conf/attack/<name>.yaml), from its settings."""
    return C.target(f"attack.{name}", cfg, Attack, name=name).from_config(cfg)


def build_all(cfg: Mapping | None) -> list[Attack]:
    """The attacks of an `attack=[...]` selection, in the order given (may be empty)."""
    return [build(name, sub) for name, sub in (cfg or {}).items()]


__all__ = ["APGDCE", "GRADIENT_BASED", "GRADIENT_FREE", "PGD", "SPSA", "APGDTargeted", "Attack", "AutoAttackStandard", "Square",
           "TanhSurrogatePGD", "build", "build_all", "pgd", "pgd_module"]
