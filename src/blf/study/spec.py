"""A study's spec: `conf/study/<name>.yaml`, composed through `conf/driver.yaml`.

The spec says how the paper draws one figure or table (grids, selection, seeds, report); the
runs it launches use `conf/experiment/<name>.yaml` and never see the spec. A profile trims the
spec (`limits` in conf/driver.yaml): the first values of each tuned hyper-parameter's grid and
the first seeds.
"""

from __future__ import annotations

from collections.abc import Mapping

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from blf import config as C

CONF = C.CONF
REPO = CONF.parent
# The tuned hyper-parameters: the keys a profile may shorten.
HYPERPARAMETERS = ("regularizer.lam", "regularizer.alpha", "head.gamma", "training.beta")


def names() -> list[str]:
    return sorted(p.stem for p in (CONF / "study").glob("*.yaml"))


def load(name: str, profile: str) -> DictConfig:
    """The driver's config for study `name` under `profile`: `study` (the spec), `profile` and
    `limits` (this profile's trimming)."""
    C.choice("study", name, names())
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("driver", overrides=[f"study={name}"])
    C.choice("--profile", profile, cfg.limits)
    OmegaConf.set_struct(cfg, False)
    cfg.name, cfg.profile = name, profile
    return cfg


def run_config(name: str, profile: str, overrides: list[str] | tuple = ()) -> DictConfig:
    """The config of a job of the study with no grid value set (the study's defaults, e.g. its
    dataset); composing it also checks `overrides` before anything launches."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"experiment={name}", f"profile={profile}", *overrides])


def limits(cfg: DictConfig) -> DictConfig:
    return cfg.limits[cfg.profile]


def budgets(spec: DictConfig) -> dict[str, float]:
    """The selection (and table) budget per dataset, resolved: `${per255:8}` -> 0.0313..."""
    return {dataset: float(eps) for dataset, eps in OmegaConf.to_container(spec.select_eps, resolve=True).items()}


def per_dataset(value, dataset: str):
    """A study value given once or per dataset ({mnist: ..., cifar10: ...})."""
    return value[dataset] if isinstance(value, Mapping) else value


def seeds_of(cfg: DictConfig, dataset: str) -> list[int]:
    seeds = list(per_dataset(cfg.study.seeds, dataset))
    limit = limits(cfg).seeds
    return seeds[:limit] if limit else seeds


def _entry(entry, limit: int | None) -> list[str]:
    """A grid entry's overrides (`key=v1,v2,...`), each hyper-parameter's values cut to `limit`."""
    items = []
    for key, value in entry.items():
        values = str(value).split(",")
        if key in HYPERPARAMETERS and limit:
            values = values[:limit]
        items.append(f"{key}={','.join(values)}")
    return items


def grid_overrides(cfg: DictConfig, dataset: str) -> list[list[str]]:
    """One override list per grid entry (one multirun each), on the first seed, hyper-parameter
    grids shortened by the profile; `dataset` is the study's own where an entry names none."""
    limit = limits(cfg).grid_values
    return [[*_entry(entry, limit), f"seed={seeds_of(cfg, entry.get('dataset', dataset))[0]}"]
            for entry in cfg.study.grid.values()]


def also_seeded_overrides(cfg: DictConfig, dataset: str) -> list[list[str]]:
    """One override list per entry of the spec's `also_seeded` (settings run over every seed
    beside the selected ones, whatever the selection picks), over the profile's seeds."""
    limit = limits(cfg).grid_values
    return [[*_entry(entry, limit), "seed=" + ",".join(map(str, seeds_of(cfg, entry.get("dataset", dataset))))]
            for entry in (cfg.study.get("also_seeded") or {}).values()]
