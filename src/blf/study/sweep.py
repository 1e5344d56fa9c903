"""A multirun's jobs, and how they are launched.

The driver needs the jobs of a multirun before it launches it (to skip one whose jobs all
finished); it expands the overrides as Hydra's basic sweeper does, through Hydra's public
override parser, so that the run folders it looks in are the ones Hydra creates.
"""

from __future__ import annotations

import itertools
import os

from hydra.core.override_parser.overrides_parser import OverridesParser

from blf import config as C
from blf.errors import ConfigError

LAUNCHERS = ("basic", "joblib", "submitit_local", "slurm", "slurm_cpu", "slurm_shared")


def expand(overrides: list[str]) -> list[list[str]]:
    """The Cartesian product of a multirun's overrides (`a=1,2 b=x` -> [a=1 b=x], [a=2 b=x]),
    each value spelled as Hydra spells it (`true` -> `True`): that spelling names the run
    folders. A key given twice keeps its first place and its last value, as in Hydra."""
    choices: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise ConfigError(f"{override.input_line!r} is a range or interval sweep; allowed: a list of values (a,b,c)")
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*choices.values())]


def launcher_overrides(launcher: str, jobs: int) -> list[str]:
    """The Hydra overrides that launch a multirun's jobs with `launcher`."""
    C.choice("--launcher", launcher, LAUNCHERS)
    if launcher == "joblib":
        # Parallel jobs share the cores: each gets its share of torch threads.
        threads = max(1, (os.cpu_count() or 1) // jobs)
        return ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}", f"trainer.threads={threads}"]
    if launcher == "basic":
        return []
    return [f"hydra/launcher={launcher}"]
