"""Export a trained run for use elsewhere: `python -m blf.export <run_dir> --format F --out DIR`.

- `robustbench`: what a new entry of RobustBench's model zoo needs. The state dict
  (`<name>.pt`), the architecture by reference (`model_zoo_entry.py`: this package's classes,
  built from the run's config in `config.json`), the model-info JSON
  (`model_info/<dataset>/Linf/<name>.json`) filled from the run's records, and `benchmark.py`,
  which runs RobustBench's own `benchmark(...)` to confirm the numbers where CIFAR-10 is at hand.
- `torch_export`: `model.pt2` (`torch.export`, any batch size; `torch.export.load(path).module()`
  runs with plain torch, no import of this package) and `config.yaml`.
- `torchscript`: `model.torchscript.pt` (traced, for tools that still read TorchScript, which
  torch deprecates) and `config.yaml`.
- `state_dict`: `state_dict.pt` (tensors only) and `config.yaml`; `blf.load` reads the
  run folder itself.

The numbers come from the run's records of the exported checkpoint and nothing else: rows of
another run, checkpoint or epoch are left out, and a value that is not a number is refused.
Files are written atomically, and an export never overwrites files already in `--out` unless
`--force` says so.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch
from omegaconf import OmegaConf

from blf import config as C
from blf import console, data, trained
from blf.errors import BLFError, CheckpointError, ConfigError
from blf.report import labels
from blf.report.tables import budget_text
from blf.run import identity, storage
from blf.run.records import Kind, same_eps

FORMATS = ("robustbench", "torch_export", "torchscript", "state_dict")
# RobustBench's datasets that this package trains on (it has no MNIST leaderboard).
ROBUSTBENCH_DATASETS = ("cifar10",)
PAPER = {
    "link": "https://arxiv.org/abs/2010.02558",
    "name": "Constraining Logits by Bounded Function for Adversarial Robustness",
    "authors": "Sekitoshi Kanai, Masanori Yamada, Shin'ya Yamaguchi, Hiroshi Takahashi, Yasutoshi Ida",
}
ARCHITECTURES = {"2c2f": "2C2F", "4c3f": "4C3F", "resnet18": "ResNet-18", "wrn34_10": "WideResNet-34-10"}


def parse_eps(text: str) -> float:
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"--eps={text!r} is not a budget; allowed: a number or a fraction such as 8/255") from None
    return C.number("--eps", value, ge=0, le=1)


def _number(row: dict, key: str) -> float:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CheckpointError(f"{row.get('run_dir', 'a record')}: {key}={value!r} in results.jsonl is not a number; "
                              "allowed: records written by src/train.py or src/evaluate.py")
    return float(value)


def evaluation(run_dir: Path, state: dict, which: str) -> list[dict]:
    """The records of the exported checkpoint: this run's, this checkpoint and epoch, the largest
    test subset it was evaluated on."""
    run = identity.run_key(state["config"])
    rows = [r for r in storage.read_jsonl(Path(run_dir) / "results.jsonl")
            if isinstance(r, dict) and r.get("run_key") == run and r.get("checkpoint") == which
            and r.get("checkpoint_epoch") == state.get("epoch")]
    robust = [r for r in rows if r.get("kind") == Kind.ROBUSTNESS]
    if not robust:
        raise CheckpointError(f"{run_dir} has no robustness records of its {which} checkpoint (epoch {state.get('epoch')}); "
                              f"allowed: a run evaluated by src/train.py or src/evaluate.py")
    n = max(int(_number(r, "n")) for r in robust)
    return [r for r in rows if r.get("n") == n]


def model_info(rows: list[dict], config: dict, eps: float, allow_synthetic: bool) -> dict:
    """RobustBench's model-info fields from the records at `eps`, with the number of test points
    and the worst case beside them."""
    first = rows[0]
    at_eps = [r for r in rows if r.get("kind") in (Kind.ROBUSTNESS, Kind.WORST_CASE) and same_eps(_number(r, "eps"), eps)]
    robust = {r["attack"]: _number(r, "accuracy") for r in at_eps if r["kind"] == Kind.ROBUSTNESS}
    if not robust:
        have = sorted({budget_text(_number(r, "eps")) for r in rows if r.get("kind") == Kind.ROBUSTNESS})
        raise ConfigError(f"--eps={budget_text(eps)}: no attack was run at this budget on this checkpoint; allowed: {', '.join(have)}")
    worst = next((_number(r, "accuracy") for r in at_eps if r["kind"] == Kind.WORST_CASE), min(robust.values()))
    n, seed = int(_number(first, "n")), first.get("eval_seed")
    notes = [f"Evaluated on {n} test points drawn with seed {seed}; worst case over {', '.join(sorted(robust))}: {worst:.2f}%."]
    if "autoattack" not in robust:
        notes.append("AutoAttack was not run: run benchmark.py for autoattack_acc.")
    if first.get("synthetic"):
        if not allow_synthetic:
            raise ConfigError("the run was trained and evaluated on synthetic data, not on "
                              f"{first.get('dataset')}; allowed: a run on the real dataset (or --allow-synthetic for a dry run)")
        notes.insert(0, "SYNTHETIC DATA: these numbers say nothing about the real dataset.")
    failed = sorted(r["check"] for r in rows if r.get("kind") == Kind.INTEGRITY and r.get("status") == "FAIL")
    if failed:
        notes.append(f"Integrity checks failed: {', '.join(failed)}.")
    model = config["model"]
    architecture = ARCHITECTURES.get(model["name"], f"{model['name']} {model.get('arch', '')}".strip())
    return {
        **PAPER,
        "additional_data": False,
        "number_forward_passes": 1,
        "dataset": first.get("dataset"),
        "venue": "arXiv 2020",
        "architecture": f"{architecture} + {labels.label(first)}",
        "eps": budget_text(eps),
        "clean_acc": f"{_number(first, 'clean_test_acc'):.2f}",
        "reported": f"{worst:.2f}",
        "autoattack_acc": f"{robust['autoattack']:.2f}" if "autoattack" in robust else "",
        "footnote": " ".join(notes),
        "unreliable": False,
        # Beside RobustBench's fields: how the numbers above were measured.
        "threat_model": "Linf",
        "n_examples": n,
        "robust_acc": {attack: round(value, 2) for attack, value in sorted(robust.items())},
        "worst_case_acc": round(worst, 2),
        "integrity_failed": failed,
    }


ENTRY = '''"""RobustBench model-zoo entry for {name}: the architecture is this package's (pip install
the blf repository), built from the run's config; the weights are {name}.pt.

Add to robustbench/model_zoo/{dataset}.py, in the Linf OrderedDict:
    ("{name}", {{"model": {function}, "gdrive_id": "<id of the uploaded {name}.pt>"}}),
"""

import json
from pathlib import Path

from omegaconf import OmegaConf

from blf.trained import architecture

CONFIG = Path(__file__).with_name("config.json")


def {function}():
    """{architecture}: images in [0, 1] -> logits, as RobustBench expects."""
    return architecture(OmegaConf.create(json.loads(CONFIG.read_text())))
'''

BENCHMARK_CALL = ('benchmark(model.eval(), model_name="{name}", n_examples=10000, dataset="{dataset}", '
                  'threat_model="Linf", eps={eps_expr}, device=device, to_disk=True)')

BENCHMARK = '''"""Confirm {name}'s numbers with RobustBench (needs robustbench and {dataset}):
    python benchmark.py
"""

from pathlib import Path

import torch
from robustbench.eval import benchmark

from model_zoo_entry import {function}

here = Path(__file__).parent
model = {function}()
model.load_state_dict(torch.load(here / "{name}.pt", map_location="cpu", weights_only=True))
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
clean_acc, robust_acc = {call}
print(f"clean accuracy {{clean_acc:.2%}}, AutoAttack robust accuracy {{robust_acc:.2%}}")
'''


def _refuse_overwrite(files: dict[Path, object], force: bool) -> None:
    existing = sorted(str(p) for p in files if p.exists())
    if existing and not force:
        raise ConfigError(f"--out already holds {', '.join(existing)}; allowed: another --out, or --force to replace them")


def _write(files: dict[Path, bytes | str]) -> None:
    for path, content in files.items():
        storage.write_bytes(path, content if isinstance(content, bytes) else content.encode())


def _state_dict(model: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.detach().contiguous() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def _program(model: torch.nn.Module, example: torch.Tensor, fmt: str) -> bytes:
    """The model as a program plain torch runs: torch.export's (batch size free) or TorchScript's."""
    buffer = io.BytesIO()
    if fmt == "torch_export":
        program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        with warnings.catch_warnings():
            # torch's archive writer warns about weights split over groups; ours are whole CPU tensors.
            warnings.filterwarnings("ignore", message="No complete tensor found in the group", category=UserWarning)
            torch.export.save(program, buffer)
    else:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)  # asked for by name: torch's deprecation notice is known
            torch.jit.save(torch.jit.trace(model, example), buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class Export:
    files: list[Path]  # what was written
    command: str | None  # RobustBench's benchmark(...) call that confirms the numbers (robustbench)


def export(run_dir: Path, fmt: str, out: Path, *, checkpoint: str = "best", name: str | None = None,
           eps: float | None = None, allow_synthetic: bool = False, force: bool = False,
           trust_code: bool = False) -> Export:
    """Write the export of `run_dir` in format `fmt` into `out` (`trust_code`: blf.load's)."""
    command = None
    C.choice("--format", fmt, FORMATS)
    state, path = trained.read(run_dir, checkpoint)
    cfg = trained.run_config(state, path, trust_code)
    model = trained.load(path, trust_code=trust_code)
    config = OmegaConf.to_container(cfg, resolve=True)
    out = Path(out)
    if fmt == "state_dict":
        files = {out / "state_dict.pt": _state_dict(model), out / "config.yaml": OmegaConf.to_yaml(cfg)}
    elif fmt in ("torch_export", "torchscript"):
        example = torch.rand(2, *data.SHAPES[cfg.dataset.name])
        files = {out / ("model.pt2" if fmt == "torch_export" else "model.torchscript.pt"): _program(model, example, fmt),
                 out / "config.yaml": OmegaConf.to_yaml(cfg)}
    else:
        dataset = C.choice("dataset (RobustBench's leaderboards)", cfg.dataset.name, ROBUSTBENCH_DATASETS)
        eps = float(cfg.dataset.threat.table_eps) if eps is None else eps
        info = model_info(evaluation(Path(run_dir), state, checkpoint), config, eps, allow_synthetic)
        name = name or default_name(info["architecture"])
        if not name.isidentifier():
            raise ConfigError(f"--name={name!r} is not a Python identifier; allowed: letters, digits and _ "
                              "(RobustBench's Author2021Word_Arch)")
        function = f"{name}_model"
        text = {"name": name, "dataset": dataset, "function": function, "architecture": info["architecture"],
                "eps_expr": f"{info['eps']}" if "/" in info["eps"] else repr(eps)}
        command = BENCHMARK_CALL.format(**text)
        text["call"] = command
        files = {
            out / f"{name}.pt": _state_dict(model),
            out / "config.json": json.dumps(config, indent=2) + "\n",
            out / "model_info" / dataset / "Linf" / f"{name}.json": json.dumps(info, indent=2) + "\n",
            out / "model_zoo_entry.py": ENTRY.format(**text),
            out / "benchmark.py": BENCHMARK.format(**text),
        }
    _refuse_overwrite(files, force)
    _write(files)
    return Export(list(files), command)


def default_name(architecture: str) -> str:
    """RobustBench's Author<Year><FirstWord>_<details>: Kanai2020Constraining_<network>_<method>,
    from the model info's architecture ("ResNet-18 + BLF (gamma=1)")."""
    words = "".join(ch if ch.isalnum() else " " for ch in architecture.replace("-", "")).split()
    return "_".join(["Kanai2020Constraining", *words])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blf.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run folder written by src/train.py")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--name", help="RobustBench model name (default: Kanai2020Constraining_<model>_<method>)")
    parser.add_argument("--eps", help="the budget of the model info (default: the dataset's table budget, 8/255 on CIFAR-10)")
    parser.add_argument("--allow-synthetic", action="store_true", help="export a run on synthetic data (a dry run)")
    parser.add_argument("--force", action="store_true", help="replace files already in --out")
    parser.add_argument("--trust-code", action="store_true",
                        help="let the run's config name classes outside this project, importing their modules: "
                             "only for a folder you trust (docs/security.md)")
    args = parser.parse_args(argv)
    try:
        eps = None if args.eps is None else parse_eps(args.eps)
        done = export(args.run_dir, args.format, args.out, checkpoint=args.checkpoint, name=args.name, eps=eps,
                         allow_synthetic=args.allow_synthetic, force=args.force, trust_code=args.trust_code)
    except (BLFError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return console.interrupted("every file written so far is whole (each write is atomic); rerun with --force")
    for path in done.files:
        print(path)
    if done.command:
        print(f"\nConfirm the numbers with RobustBench (robustbench installed, the dataset at hand):\n"
              f"    cd {args.out} && python benchmark.py\nwhich runs\n    {done.command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
