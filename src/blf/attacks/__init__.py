"""Adversarial attacks (the `attack` config group): one module per attack family.

An attack evaluates a classifier at each epsilon of its grid; `perturb` returns adversarial
inputs for one batch at one epsilon. eps = 0 means clean data and is never attacked.
"""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig

from .. import config as C
from .base import Attack
from .pgd import PGD, pgd

ATTACKS = {"pgd": PGD}


def build(name: str, cfg: DictConfig) -> Attack:
    C.choice("attack", name, ATTACKS)
    return ATTACKS[name].from_config(cfg)


def build_all(cfg: Mapping) -> list[Attack]:
    """The attacks of an `attack=[...]` selection, in the order given."""
    if not cfg:
        raise C.ConfigError(f"attack is empty; allowed: a list of {', '.join(sorted(ATTACKS))}")
    return [build(name, sub) for name, sub in cfg.items()]


__all__ = ["ATTACKS", "Attack", "PGD", "build", "build_all", "pgd"]
