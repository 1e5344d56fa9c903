"""Config helpers shared by the apps: OmegaConf resolvers and value checks."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError

# Folder names longer than this are shortened with a hash (file systems cap a name at 255).
_MAX_RUN_NAME = 200


def per255(value: Any) -> Any:
    """`${per255:8}` -> 8/255; a list is converted element-wise (CIFAR-10 budgets in pixels)."""
    if isinstance(value, (list, tuple)) or OmegaConf.is_list(value):
        return [float(v) / 255.0 for v in value]
    return float(value) / 255.0


# Overrides that do not change the trained model, and so do not name its folder: evaluating a
# run with other attacks, or logging it elsewhere, finds the same folder.
NOT_IN_RUN_NAME = ("experiment", "profile", "logger", "device", "progress", "eval", "attack", "analysis", "paths",
                   "trainer.threads")


def run_name(overrides) -> str:
    """A folder name derived from the overrides that define a run (drqv2-style), e.g.
    `head:blf+head.gamma:1.0+seed:1`.

    Running the same command again lands in the same folder, which is what makes runs and
    sweeps resumable. Characters that would create sub-folders, upset shells, or that Hydra's
    override grammar does not accept unquoted (so that `run_dir=<folder>` works) are replaced.
    """
    items = []
    for override in overrides or []:
        key, _, value = str(override).partition("=")
        key = key.lstrip("+~")
        if not any(key == p or key.startswith(p + ".") for p in NOT_IN_RUN_NAME):
            items.append(f"{key}:{value}")
    if not items:
        return "default"
    text = "+".join(sorted(items))
    name = re.sub(r"[^A-Za-z0-9:+._-]", "_", text)
    if len(name) > _MAX_RUN_NAME:
        digest = hashlib.sha1(text.encode()).hexdigest()[:10]
        name = f"{name[: _MAX_RUN_NAME - 11]}-{digest}"
    return name


def mul(a: Any, b: Any) -> float:
    """`${mul:${dataset.threat.eps},0.25}`: a step size as a fraction of a budget."""
    return float(a) * float(b)


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("per255", per255, replace=True)
    OmegaConf.register_new_resolver("mul", mul, replace=True)
    OmegaConf.register_new_resolver("run_name", run_name, replace=True)


register_resolvers()


def choice(key: str, value: Any, allowed: Iterable[str]) -> str:
    allowed = sorted(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not an option; allowed: {', '.join(allowed)}")
    return value


def number(
    key: str,
    value: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> float:
    """Return `value` as a float after checking it lies in the stated range."""
    bounds = []
    if gt is not None:
        bounds.append(f"> {gt}")
    if ge is not None:
        bounds.append(f">= {ge}")
    if lt is not None:
        bounds.append(f"< {lt}")
    if le is not None:
        bounds.append(f"<= {le}")
    allowed = " and ".join(bounds) if bounds else "a finite number"
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not a number; allowed: {allowed}") from None
    ok = math.isfinite(x)
    ok = ok and (gt is None or x > gt) and (ge is None or x >= ge)
    ok = ok and (lt is None or x < lt) and (le is None or x <= le)
    if not ok:
        raise ConfigError(f"{key}={value!r} is out of range; allowed: {allowed}")
    return x


def integer(key: str, value: Any, *, ge: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}={value!r} is not an integer; allowed: integers >= {ge}")
    if ge is not None and value < ge:
        raise ConfigError(f"{key}={value!r} is out of range; allowed: integers >= {ge}")
    return value


def to_container(cfg: DictConfig | Mapping) -> dict:
    """A plain, fully resolved dict (what checkpoints, records and W&B receive)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


# Keys that change how a job runs, not what it computes.
NOT_IN_JOB_KEY = ("progress", "logger", "device", "trainer.threads", "study", "study_limits")


def job_key(config: Mapping) -> str:
    """A digest of a resolved job config: equal keys mean the same training and evaluation, so a
    finished job with this key has nothing left to do (the study driver then does not launch it)."""
    kept = {k: v for k, v in flatten(config).items() if not any(k == p or k.startswith(p + ".") for p in NOT_IN_JOB_KEY)}
    return hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
