"""What a file may make this code do (docs/security.md).

Trusted: the installed code, the user's own command line and the config files of `conf/`.
Not trusted: every file inside a run folder, checkpoint, record, export or W&B artifact, even
one this project wrote: someone else may have written it, or changed it since.

A config read back from such a file names classes by `_target_` (Hydra's convention), and
resolving a name imports its module: from a folder on `sys.path` (the working directory is),
a planted `plugin.py` would run. So before anything is imported, every `_target_` of such a
config must be one the project's own configs name, or a class defined in the project's own
modules; anything else is refused, unless the user opts in with `trust_code=True`
(`--trust-code`, `trust_code=true`), as `trust_remote_code` does elsewhere.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from blf.config import CONF
from blf.errors import UntrustedFileError

# An option's name becomes a file name (conf/<group>/<name>.yaml): a plain word, never a path.
OPTION_NAME = re.compile(r"^[A-Za-z0-9_]+$")

OPT_IN = "trust_code=True (Python), --trust-code (blf.export), trust_code=true (src/evaluate.py)"


@functools.cache
def project_targets() -> frozenset[str]:
    """Every `_target_` the project's own configs name (conf/**/*.yaml)."""
    names: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key == "_target_" and isinstance(value, str):
                    names.add(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted(CONF.rglob("*.yaml")):
        walk(yaml.safe_load(path.read_text()))
    return frozenset(names)


@functools.cache
def project_modules() -> frozenset[str]:
    """The modules of the installed `blf` package (found on disk, none imported)."""
    # The package's folder from this file, not `blf.__path__`: importing `blf` here would close a
    # circle (blf/__init__.py -> trained -> trust).
    return frozenset({"blf", *(m.name for m in pkgutil.walk_packages([str(Path(__file__).parent)], "blf."))})


def is_project_class(path: str) -> bool:
    """Whether `path` (module.Class) names a class the project's configs name, or a class defined
    in one of the project's modules. Only project modules are ever imported to tell."""
    if path in project_targets():
        return True
    module, _, name = path.rpartition(".")
    if module not in project_modules() or not name.isidentifier():
        return False
    found = getattr(importlib.import_module(module), name, None)
    return isinstance(found, type) and found.__module__ == module


def targets(config, key: str = "") -> list[tuple[str, object]]:
    """(dotted key, value) of every `_target_` in a config tree."""
    found = []
    if isinstance(config, Mapping):
        for k, v in config.items():
            path = f"{key}.{k}" if key else str(k)
            found += [(path, v)] if k == "_target_" else targets(v, path)
    elif isinstance(config, list):
        for i, v in enumerate(config):
            found += targets(v, f"{key}[{i}]")
    return found


def strings(config, key: str = "") -> list[tuple[str, str]]:
    """(dotted key, value) of every string value in a config tree."""
    if isinstance(config, Mapping):
        return [found for k, v in config.items() for found in strings(v, f"{key}.{k}" if key else str(k))]
    if isinstance(config, list):
        return [found for i, v in enumerate(config) for found in strings(v, f"{key}[{i}]")]
    return [(key, config)] if isinstance(config, str) else []


def check_config(config, source, *, trust_code: bool = False) -> None:
    """Refuse a config read from `source` (a file of a run folder, a checkpoint) whose classes
    lie outside the project, before any of them is imported; option names that are not plain
    words (they become file names); and interpolations. `trust_code` lifts the first rule only."""
    if not isinstance(config, Mapping):
        raise UntrustedFileError(f"{source}: the config is a {type(config).__name__}, not a mapping; "
                                 "allowed: a config written by src/train.py")
    # A checkpoint holds the resolved config, so an interpolation in it was put there; OmegaConf
    # would resolve it once the value is read, running a resolver on the file's text (`oc.create`
    # parses YAML, aliases included; `oc.env` reads the environment).
    for key, value in strings(config):
        if "${" in value:
            shown = value if len(value) <= 60 else value[:57] + "..."
            raise UntrustedFileError(f"{source}: {key}={shown!r} is an interpolation, which OmegaConf would resolve "
                                     "with the file's own text; allowed: the resolved values src/train.py writes")
    for key, value in targets(config):
        if not isinstance(value, str):
            raise UntrustedFileError(f"{source}: {key}={value!r} is not a class name; allowed: module.Class")
        if not trust_code and not is_project_class(value):
            raise UntrustedFileError(
                f"{source}: {key}={value!r} names code outside this project, which loading it would import "
                f"and run; allowed: the project's classes (e.g. blf.nn.heads.BLF), or {OPT_IN} for a folder "
                "you trust (docs/security.md)")
    for group in ("dataset", "model", "head", "regularizer", "training"):
        name = (config.get(group) or {}).get("name") if isinstance(config.get(group), Mapping) else None
        if name is not None and not (isinstance(name, str) and OPTION_NAME.match(name)):
            raise UntrustedFileError(f"{source}: {group}.name={name!r} is not an option name; allowed: letters, "
                                     "digits and _ (an option of conf/" + group + "/)")


SCALARS = (str, int, float, bool, type(None))


def check_overrides(entries, source) -> list[str]:
    """The Hydra overrides a run folder records (`.hydra/overrides.yaml`), accepted only as plain
    settings: `key=value` with a scalar or a list of scalars, no `+`, `~`, `++`, no `hydra.*`,
    no `_target_`, no mapping, no sweep, no interpolation. Whether each key exists is for the
    caller to check against the composed schema."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import HydraException

    if not isinstance(entries, list):
        raise UntrustedFileError(f"{source}: holds a {type(entries).__name__}, not a list of overrides; "
                                 "allowed: the list Hydra wrote")
    allowed = "allowed: key=value with a scalar or a list of scalars, for a key of the project's configs"
    parser = OverridesParser.create()
    accepted = []
    for entry in entries:
        if not isinstance(entry, str):
            raise UntrustedFileError(f"{source}: entry {entry!r} is not an override; {allowed}")
        try:
            override = parser.parse_overrides([entry])[0]
        except HydraException:
            raise UntrustedFileError(f"{source}: entry {entry!r} is not an override; {allowed}") from None
        key = override.key_or_group
        why = None
        if override.type != OverrideType.CHANGE:
            why = "adds or deletes a key"
        elif key == "hydra" or key.startswith(("hydra.", "hydra/")) or "_target_" in key or key.startswith("_"):
            why = "sets what the command itself decides"
        elif override.is_sweep_override():
            why = "is a sweep"
        else:
            value = override.value()
            values = value if isinstance(value, list) else [value]
            if not all(isinstance(v, SCALARS) for v in values):
                why = "holds a mapping"
            elif any(isinstance(v, str) and "${" in v for v in values):
                why = "holds an interpolation"
        if why:
            raise UntrustedFileError(f"{source}: entry {entry!r} {why}; {allowed}")
        accepted.append(entry)
    return accepted
