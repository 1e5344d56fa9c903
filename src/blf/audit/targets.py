"""What `python -m blf.audit TARGET` audits, by the kind of TARGET:

- a run folder of this project, or a checkpoint in one (`blf.load`: the network and its head,
  so the pre-logit attacks and BPDA through the head run);
- a folder or file written by `python -m blf.export`: `state_dict` (`state_dict.pt` with its
  `config.yaml`: rebuilt as our classifier), `robustbench` (`<name>.pt` with `config.json`: the
  same), `torch_export` (`model.pt2`) and `torchscript` (`model.torchscript.pt`): programs of
  torch operators, logits only. Loading a program can run code of its author (torch's own
  loaders unpickle without weights_only; TorchScript may read and write files), so a program is
  loaded only with `trust_code` (`--trust-code`), and is recognised by its file name alone;
- a weights file with `--model package.module:factory` (the user's own code, named on their
  command line: the one place code may come from) and the factory's keyword arguments; no
  weights file where the factory loads its own (`robustbench.utils:load_model`). `--head blf
  --gamma G` puts a head on the factory's outputs (they are then the pre-logits).

Without `trust_code`, nothing read from a TARGET runs code (docs/security.md): weights are read
with `weights_only=True` within the bounds of blf.run.untrusted, configs are checked by blf.trust
before any class they name is built.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf
from torch import nn

from blf import config as C
from blf import trained, trust
from blf.assembly import name_components
from blf.errors import CheckpointError, ConfigError, UntrustedFileError
from blf.nn import heads
from blf.nn.models import with_head
from blf.run import storage, untrusted


@dataclass
class Target:
    model: nn.Module
    kind: str
    name: str
    dataset: str | None  # the dataset the target says it was trained on, where it says


def load(target: Path | None, *, factory: str | None = None, arguments: list[str] = (), head: str | None = None,
         gamma: float | None = None, trust_code: bool = False) -> Target:
    """The model TARGET (module docstring) names; one error naming what is wrong and what is allowed."""
    if factory is not None:
        model = from_factory(factory, arguments, target)
        name = factory
        kind = "factory" + (" + weights" if target is not None else "")
        found = Target(model, kind, name, None)
    else:
        if target is None:
            raise ConfigError("no TARGET; allowed: a run folder or checkpoint, an export of python -m blf.export, or a "
                              "weights file with --model package.module:factory (or --model alone)")
        found = ours(Path(target), trust_code)
    if head is not None:
        found.model = with_head(found.model, build_head(head, gamma))
        found.name += f" + {head}" + (f" (gamma={gamma:g})" if gamma is not None else "")
    elif gamma is not None:
        raise ConfigError("--gamma without --head; allowed: --head blf|tanh|sigmoid|... --gamma G")
    return found


def ours(path: Path, trust_code: bool) -> Target:
    """A run folder, checkpoint or export of this project."""
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; allowed: a run folder or checkpoint, an export of "
                              "python -m blf.export, or a weights file with --model package.module:factory")
    if path.is_dir():
        if (path / "checkpoints").is_dir():
            model = trained.load(path, trust_code=trust_code)
            return Target(model, "run folder", path.name, model.config.dataset.name)
        # Found by name, whatever kind of file: a FIFO or device so named is refused by its reader.
        for name in ("model.pt2", "model.torchscript.pt"):
            if (path / name).exists():
                return ours(path / name, trust_code)
        if (path / "state_dict.pt").exists():
            return ours(path / "state_dict.pt", trust_code)
        weights = sorted(path.glob("*.pt"))
        if (path / "config.json").exists() and len(weights) == 1:
            return rebuilt(weights[0], read_config(path / "config.json"), "robustbench export", trust_code)
        raise ConfigError(f"{path} is a folder of no known kind; allowed: a run folder (checkpoints/), or an export "
                          "folder of python -m blf.export (state_dict.pt, model.pt2, model.torchscript.pt, or "
                          "<name>.pt with config.json)")
    if path.suffix == ".pt2":
        return Target(program(path, "torch_export", trust_code), "torch_export", path.parent.name or path.name,
                      dataset_beside(path))
    if path.name.endswith(".torchscript.pt"):
        return Target(program(path, "torchscript", trust_code), "torchscript", path.parent.name or path.name,
                      dataset_beside(path))
    state = read_weights(path)
    if isinstance(state.get("config"), dict) and "model" in state:  # a checkpoint of src/train.py
        model = trained.load(path, trust_code=trust_code)
        return Target(model, "checkpoint", path.name, model.config.dataset.name)
    beside = path.parent / "config.yaml"
    if beside.exists():
        return rebuilt(path, read_config(beside), "state_dict export", trust_code)
    raise ConfigError(f"{path} holds weights without a config; allowed: a checkpoint of src/train.py, a state_dict "
                      "export (config.yaml beside it), or weights with --model package.module:factory")


def read_config(path: Path) -> dict:
    """An export's config (YAML or JSON), plain data: untrusted, so read within bounds (no YAML
    aliases, a bounded size and depth: storage.read_yaml) and checked by blf.trust before use."""
    allowed = "allowed: the config python -m blf.export wrote"
    if path.suffix != ".json":
        config = storage.read_yaml(path)
    else:
        config = untrusted.read_json(path, allowed, limit=storage.YAML_MAX_BYTES)
    if not isinstance(config, dict):
        raise UntrustedFileError(f"{path} holds a {type(config).__name__}, not a config; allowed: the config "
                                 "python -m blf.export wrote")
    return config


def rebuilt(weights: Path, config: dict, kind: str, trust_code: bool) -> Target:
    """Our classifier rebuilt from an export's config, with the export's weights."""
    trust.check_config(config, weights.parent, trust_code=trust_code)
    cfg = name_components(OmegaConf.create(config))
    model = trained.architecture(cfg)
    fit(model, read_weights(weights), weights)
    model.config = cfg
    return Target(model.eval(), kind, weights.parent.name, cfg.dataset.name)


def dataset_beside(path: Path) -> str | None:
    beside = path.parent / "config.yaml"
    if not beside.exists():
        return None
    name = (read_config(beside).get("dataset") or {}).get("name")
    return name if isinstance(name, str) else None


PROGRAM_OPT_IN = ("loading a program runs its author's code (torch.export.load unpickles without weights_only; "
                  "TorchScript can read and write files); allowed: --trust-code (trust_code=True in Python) for a file "
                  "you trust, or ask for the export python -m blf.export --format state_dict, which loads as weights")


def program(path: Path, kind: str, trust_code: bool) -> nn.Module:
    """A torch.export or TorchScript program: its author's code, so only with `trust_code`."""
    if not trust_code:
        raise UntrustedFileError(f"{path} is a {kind} program; {PROGRAM_OPT_IN}")
    allowed = f"allowed: what python -m blf.export --format {kind} wrote"
    untrusted.open_regular(path, allowed).close()  # a FIFO or device is refused, not waited on
    try:
        if kind == "torch_export":
            return torch.export.load(str(path)).module()
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as error:  # noqa: BLE001 - any failure to read the archive means "not a program"
        raise CheckpointError(f"{path} is not a readable {kind} program ({type(error).__name__}: "
                              f"{(str(error).splitlines() or [''])[0][:160]}); {allowed}") from None


def read_weights(path: Path) -> dict:
    """A weights file as a mapping (tensors and plain values only: weights_only, bounded)."""
    state = untrusted.read_torch(path, "allowed: a file of torch.save'd tensors (a state dict), read with "
                                       "weights_only=True")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict; allowed: a mapping of names "
                              "to tensors")
    return state


def fit(model: nn.Module, state: dict, source: Path) -> None:
    """Load a state dict (or one under "state_dict" / "model") into `model`, strictly."""
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, KeyError) as error:
        reason = " ".join(str(error).split())[:300]
        raise CheckpointError(f"{source} does not fit the model ({reason}); allowed: weights of this architecture, "
                              "with the same parameter names and shapes") from None


def parse_argument(text: str) -> tuple[str, object]:
    """`key=value` of the factory's keyword arguments; the value as YAML reads a scalar (3, 0.5,
    true, null, a string)."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise ConfigError(f"--arg {text!r} is not key=value; allowed: a keyword argument of the factory, e.g. "
                          "--arg model_name=Standard")
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    if not isinstance(parsed, (str, int, float, bool, type(None))):
        parsed = value  # lists and mappings stay strings: a factory's arguments are plain values
    return key, parsed


def from_factory(spec: str, arguments, weights: Path | None) -> nn.Module:
    """`package.module:factory(**arguments)`, then the weights file's state dict if one is given."""
    module_name, sep, function = spec.partition(":")
    if not sep or not module_name or not function.isidentifier():
        raise ConfigError(f"--model {spec!r} is not package.module:factory; allowed: e.g. mypkg.nets:build or "
                          "robustbench.utils:load_model")
    kwargs = dict(parse_argument(a) for a in arguments)
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - the user's module failed to import: say so in one line
        raise ConfigError(f"--model {spec!r}: importing {module_name} failed ({type(error).__name__}: "
                          f"{(str(error).splitlines() or [''])[0][:160]}); allowed: a module importable here") from None
    factory = getattr(module, function, None)
    if not callable(factory):
        raise ConfigError(f"--model {spec!r}: {module_name} has no callable {function}; allowed: a function or class "
                          "returning an nn.Module")
    try:
        model = factory(**kwargs)
    except Exception as error:  # noqa: BLE001 - the user's factory raised: say so in one line
        raise ConfigError(f"--model {spec!r} raised {type(error).__name__} with arguments {kwargs}: "
                          f"{(str(error).splitlines() or [''])[0][:200]}; allowed: arguments the factory takes "
                          "(--arg key=value)") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--model {spec!r} returned a {type(model).__name__}; allowed: a factory returning an "
                          "nn.Module from images in [0, 1] to logits")
    if weights is not None:
        if not Path(weights).is_file():
            raise CheckpointError(f"{weights} is not a file; allowed: a weights file (a state dict) for --model")
        fit(model, read_weights(Path(weights)), Path(weights))
    return model.eval()


def build_head(name: str, gamma: float | None) -> nn.Module:
    """A head of conf/head/ (`--head blf --gamma 1.0`), on a factory's outputs as pre-logits."""
    option = C.choice("--head", name, sorted(p.stem for p in (C.CONF / "head").glob("*.yaml")))
    cfg = OmegaConf.load(C.CONF / "head" / f"{option}.yaml")
    if gamma is not None:
        if "gamma" not in cfg:
            raise ConfigError(f"--gamma with --head {option}, which has no gamma; allowed: --gamma with a scaled head "
                              "(blf, tanh, sigmoid, sine, single_wave)")
        cfg.gamma = C.number("--gamma", gamma, gt=0)
    return heads.build(cfg)
