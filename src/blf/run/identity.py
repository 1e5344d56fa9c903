"""Which config keys identify a run, and everything derived from that: the run folder's name,
the resume check, the job key of a finished job, and the identity columns of its records.

Every key of a composed `train` config has one role:

- **identity** (everything not listed below): what the trained model is. Two commands that
  differ here are two runs; a run folder refuses a command that asks for different values.
- **duration** (`trainer.epochs`): how long the same run trains. Raising it continues a run in
  the same folder; the folder name never holds it.
- **evaluation** (`attack`, `analysis`, `eval`, and the attack budgets of `dataset.threat` that
  no training reads: eval_eps, pgd_eval, table_eps, spsa, square, apgd, apgd_t, adaptive,
  unbounded_eps): how a checkpoint is evaluated. Changing them re-evaluates the same run
  (src/evaluate.py changes nothing else); the training budgets (`dataset.threat.eps`, `pgd_at`,
  `trades`) stay identity.
  The exception: under `eval.selection_split=validation` training holds images out (the
  validation split), so that key and `eval.validation_n` are identity then; under the paper's
  protocol (`test`, the default) they are not, and runs trained before the option keep their keys.
- **execution** (`logger`, `device`, `progress`, `paths`, `dataset.root`, `dataset.download`,
  `trainer.threads`): where and how a job runs and where its data comes from, not what it
  computes.
- **bookkeeping** (`experiment_name`, `profile_name`): which study a run belongs to. A study's
  spec is not part of a run's config (conf/study/, read by the driver only); `study` and
  `study_limits` are listed for run folders written when it was, so they stay resumable.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

DURATION = ("trainer.epochs",)
EVALUATION = ("attack", "analysis", "eval", *(f"dataset.threat.{k}" for k in (
    "eval_eps", "pgd_eval", "table_eps", "spsa", "square", "apgd", "apgd_t", "adaptive", "unbounded_eps")))
EXECUTION = ("logger", "device", "progress", "paths", "dataset.root", "dataset.download", "trainer.threads")
BOOKKEEPING = ("experiment_name", "profile_name", "study", "study_limits")

# Keys of the validation split: identity when it holds images out of training (HOLD_OUT_VALUE).
HOLD_OUT = ("eval.selection_split", "eval.validation_n")
HOLD_OUT_VALUE = "validation"

# Overrides that select a whole config rather than a value. The experiment and profile pick the
# sweep folder (multirun/<experiment>/<profile>/), so they do not name the run inside it.
SELECTORS = ("experiment", "profile")

# Folder names longer than this are shortened with a hash (file systems cap a name at 255).
_MAX_RUN_NAME = 200


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def role(key: str) -> str:
    """The role of a dotted config key: identity, duration, evaluation, execution or bookkeeping."""
    for name, prefixes in (("duration", DURATION), ("evaluation", EVALUATION), ("execution", EXECUTION),
                           ("bookkeeping", BOOKKEEPING)):
        if _under(key, prefixes):
            return name
    return "identity"


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


def run_view(config: Mapping) -> dict[str, Any]:
    """The identity keys of a resolved config: equal views mean the same trained model."""
    flat = flatten(config)
    view = {k: v for k, v in flat.items() if role(k) == "identity"}
    if flat.get(HOLD_OUT[0]) == HOLD_OUT_VALUE:
        view.update({k: flat.get(k) for k in HOLD_OUT})
    return view


def job_view(config: Mapping) -> dict[str, Any]:
    """What a job computes: the run, how long it trains, and how it is evaluated."""
    return {k: v for k, v in flatten(config).items() if role(k) in ("identity", "duration", "evaluation")}


def _digest(view: Mapping) -> str:
    return hashlib.sha1(json.dumps(view, sort_keys=True, default=str).encode()).hexdigest()


def run_key(config: Mapping) -> str:
    """A digest of the run's identity (recorded with every row as `run_key`)."""
    return _digest(run_view(config))


def job_key(config: Mapping) -> str:
    """A digest of a resolved job config: equal keys mean the same training and evaluation, so a
    finished job with this key has nothing left to do (the study driver then does not launch it)."""
    return _digest(job_view(config))


def differences(saved: Mapping, requested: Mapping) -> list[tuple[str, Any, Any]]:
    """(key, saved value, requested value) for every identity key on which two configs differ."""
    before, after = run_view(saved), run_view(requested)
    # A config saved before the options named their class (`_target_`) built the class its option
    # names: a `_target_` it lacks is no difference.
    keys = {k for k in set(before) | set(after) if not (k.endswith("._target_") and k not in before)}
    return [(k, before.get(k), after.get(k)) for k in sorted(keys) if before.get(k) != after.get(k)]


def run_name(overrides) -> str:
    """A folder name derived from the overrides that identify a run (drqv2-style), e.g.
    `head:blf+head.gamma:1.0+seed:1`.

    Running the same command again lands in the same folder, which is what makes runs and
    sweeps resumable; `trainer.epochs` is left out, so raising it continues the run. Characters
    that would create sub-folders, upset shells, or that Hydra's override grammar does not accept
    unquoted (so that `run_dir=<folder>` works) are replaced.
    """
    items = []
    pairs = [str(o).partition("=")[::2] for o in overrides or []]
    holds_out = any(k.lstrip("+~") == HOLD_OUT[0] and v == HOLD_OUT_VALUE for k, v in pairs)
    for key, value in pairs:
        key = key.lstrip("+~")
        if (role(key) == "identity" or (holds_out and key in HOLD_OUT)) and not _under(key, SELECTORS):
            items.append(f"{key}:{value}")
    if not items:
        return "default"
    text = "+".join(sorted(items))
    name = re.sub(r"[^A-Za-z0-9:+._-]", "_", text)
    if len(name) > _MAX_RUN_NAME:
        digest = hashlib.sha1(text.encode()).hexdigest()[:10]
        name = f"{name[: _MAX_RUN_NAME - 11]}-{digest}"
    return name
