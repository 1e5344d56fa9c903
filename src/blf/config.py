"""Config helpers shared by the apps: OmegaConf resolvers and value checks."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from blf.errors import ConfigError
from blf.run import identity

CONF = Path(__file__).resolve().parents[2] / "conf"


def per255(value: Any) -> Any:
    """`${per255:8}` -> 8/255; a list is converted element-wise (CIFAR-10 budgets in pixels)."""
    if isinstance(value, (list, tuple)) or OmegaConf.is_list(value):
        return [float(v) / 255.0 for v in value]
    return float(value) / 255.0


def mul(a: Any, b: Any) -> float:
    """`${mul:${dataset.threat.eps},0.25}`: a step size as a fraction of a budget."""
    return float(a) * float(b)


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("per255", per255, replace=True)
    OmegaConf.register_new_resolver("mul", mul, replace=True)
    OmegaConf.register_new_resolver("run_name", identity.run_name, replace=True)


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
        allowed = "integers" if ge is None else f"integers >= {ge}"
        raise ConfigError(f"{key}={value!r} is not an integer; allowed: {allowed}")
    if ge is not None and value < ge:
        raise ConfigError(f"{key}={value!r} is out of range; allowed: integers >= {ge}")
    return value


def count_argument(what: str):
    """An argparse `type` for an integer >= 1 counting `what` (jobs, examples): one line naming
    the text and what is allowed."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {what}; allowed: integers >= 1")
        return value

    return parse


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is not a boolean; allowed: true, false")
    return value


def to_container(cfg: DictConfig | Mapping) -> dict:
    """A plain, fully resolved dict (what checkpoints, records and W&B receive)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def target(key: str, cfg: DictConfig | Mapping, base: type, name: str | None = None) -> type:
    """The class a config names with `_target_` (Hydra's convention), checked to be a `base`:
    the configs say which class they build, and a user's own subclass works the same way. The
    option's name (`cfg.name`, or `name`) labels run folders and records, so a class with a name
    of its own must bear the same one."""
    path = cfg.get("_target_")
    allowed = f"a subclass of {base.__module__}.{base.__qualname__}, as module.Class"
    if not isinstance(path, str):
        raise ConfigError(f"{key}._target_={path!r} is missing; allowed: {allowed}")
    try:
        cls = get_class(path)
    except (ImportError, ValueError, AttributeError, TypeError):
        raise ConfigError(f"{key}._target_={path!r} cannot be imported; allowed: {allowed}") from None
    if not issubclass(cls, base):
        raise ConfigError(f"{key}._target_={path!r} is not a {base.__qualname__}; allowed: {allowed}")
    named, own = cfg.get("name") if name is None else name, getattr(cls, "name", None)
    if isinstance(named, str) and isinstance(own, str) and own != named:
        raise ConfigError(f"{key}._target_={path!r} is the class of {own!r}, not of {key}.name={named!r}; "
                          f"allowed: a class named {named!r}, or {key}.name={own!r}")
    return cls


def instantiate(key: str, cfg: DictConfig, base: type, *, skip: Iterable[str] = ("name",)) -> Any:
    """An object of the class `cfg._target_` names, built from the config's other keys (those in
    `skip` name the option or pick a recipe; they are not arguments). Values are checked by the
    class itself, so a bad one fails with its key and the allowed range."""
    cls = target(key, cfg, base)
    kwargs = {k: v for k, v in to_container(cfg).items() if k != "_target_" and k not in set(skip)}
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as error:
        takes = ", ".join(inspect.signature(cls).parameters) or "no keys"
        raise ConfigError(f"{key}: {cls.__qualname__} cannot take {sorted(kwargs)} ({error}); allowed: {takes}") from None
    return cls(**kwargs)
