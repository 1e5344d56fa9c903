"""python -m blf.audit TARGET --dataset mnist|cifar10 --eps E [E ...]: audit a classifier (blf.audit).

TARGET: a run folder or checkpoint of this project, an export of `python -m blf.export`, or a
weights file with `--model package.module:factory` (targets.py). The card is printed and, with
`--out DIR`, written as audit.md, audit.json and audit.png/.pdf. Exit status: 0; 2 for bad input
(one line, nothing written); with --strict, 1 unless every attacked eps has (a) reliable and
(b) matches.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import torch

# `from blf.audit import ...` reads the module; `blf.audit` itself is the function (blf/__init__.py).
from blf import console
from blf.audit import BUDGETS, audit, subject, targets
from blf.config import CONF, count_argument
from blf.errors import BLFError, ConfigError

DATASETS = ("mnist", "cifar10")
EXAMPLES = count_argument("examples")
OUTPUTS = ("audit.md", "audit.json", "audit.png", "audit.pdf")


def eps_value(text: str) -> float:
    """An eps on the command line: a number in [0, 1], or k/255."""
    parts = text.split("/")
    try:
        value = float(parts[0]) / float(parts[1]) if len(parts) == 2 else float(text) if len(parts) == 1 else math.nan
    except (ValueError, ZeroDivisionError):
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"--eps {text!r} is not a budget; allowed: numbers in [0, 1] (L-inf, pixels in "
                                         "[0, 1]) or k/255")
    return value


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors as one line, status 2 (the usage is in --help)."""

    def error(self, message: str):
        print(f"error: {message}; see python -m blf.audit --help", file=sys.stderr)
        raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m blf.audit", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="?", type=Path, help="run folder, checkpoint, export, or weights for --model")
    p.add_argument("--dataset", choices=DATASETS, help="the test set (default: the one TARGET was trained on)")
    p.add_argument("--eps", type=eps_value, nargs="+", required=True, help="L-inf budgets (pixels in [0, 1]; k/255 allowed)")
    draw = p.add_mutually_exclusive_group()
    draw.add_argument("--n", type=EXAMPLES, help="test images drawn by --seed (default 1000)")
    draw.add_argument("--first", type=EXAMPLES, help="the first N test images")
    p.add_argument("--budget", default="standard", choices=BUDGETS)
    p.add_argument("--seed", type=int, default=0, help="draws the images and seeds every attack")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=EXAMPLES, default=500)
    p.add_argument("--out", type=Path, help="folder for audit.md, audit.json, audit.png/.pdf")
    p.add_argument("--force", action="store_true", help="replace audit files already in --out")
    p.add_argument("--strict", action="store_true", help="exit 1 unless (a) reliable and (b) matches at every eps")
    p.add_argument("--model", metavar="MODULE:FACTORY", help="your factory; TARGET is then its weights (or omitted)")
    p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE", help="a keyword argument for --model")
    p.add_argument("--head", help="a head of conf/head/ on the factory's outputs (then the pre-logits), e.g. blf")
    p.add_argument("--gamma", type=float, help="the head's gamma")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where datasets are (default data/)")
    p.add_argument("--synthetic", action="store_true", help="random images of the dataset's shape (conf/dataset/: a "
                   "dry run of the command; the card says so)")
    p.add_argument("--trust-code", action="store_true", help="load TARGET's code: a torch.export (.pt2) or TorchScript "
                   "program, or a config naming classes outside this project; only for a file you trust (docs/security.md)")
    p.add_argument("--batch-dependence-ok", action="store_true", help="accept a model whose outputs depend on the "
                   "other images of its batch as it is (the card still says so)")
    p.add_argument("--no-progress", action="store_true")
    return p


def device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu" or (name.startswith("cuda") and torch.cuda.is_available()):
        return torch.device(name)
    raise ConfigError(f"--device {name!r} is not available here; allowed: auto, cpu" +
                      (", cuda, cuda:N" if torch.cuda.is_available() else ""))


def test_images(dataset: str, data_dir: Path, n: int | None, first: int | None, seed: int, synthetic: bool = False):
    """(x, y, what was drawn) from the dataset's test split."""
    from omegaconf import OmegaConf

    from blf import data

    cfg = OmegaConf.load(CONF / "dataset" / f"{dataset}.yaml")
    cfg.root, cfg.download, cfg.synthetic = str(data_dir), True, synthetic
    test = data.load(cfg).test
    if synthetic:
        dataset = f"SYNTHETIC {dataset}-shaped data (a dry run: says nothing about {dataset})"
    if first is not None:
        if first > len(test):
            raise ConfigError(f"--first {first} exceeds the {len(test)} test images of {dataset}; allowed: 1..{len(test)}")
        split, how = test.first(first), f"the first {first} test images of {dataset}"
    else:
        n = n or 1000
        if n > len(test):
            raise ConfigError(f"--n {n} exceeds the {len(test)} test images of {dataset}; allowed: 1..{len(test)}")
        split, how = test.subset(n, seed), f"{n} test images of {dataset} drawn by seed {seed}"
    x, y = split.batch(slice(None))
    return x, y, how


def check_out(out: Path | None, force: bool) -> None:
    """--out before any work: a folder (or a new one) this process can write, no link where a card
    file goes, no earlier card unless --force."""
    if out is None:
        return
    if out.is_symlink():
        raise ConfigError(f"--out {out} is a symbolic link; allowed: a plain folder (made if missing)")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; allowed: a folder (made if missing)")
    linked = [name for name in OUTPUTS if (out / name).is_symlink()]
    if linked:
        raise ConfigError(f"--out {out} holds {linked[0]} as a symbolic link, which the card would have to write "
                          "through; allowed: a folder without links named like the card's files")
    there = [name for name in OUTPUTS if (out / name).exists()]
    if there and not force:
        raise ConfigError(f"--out {out} already holds {', '.join(there)}; allowed: another folder, or --force to replace them")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: {existing} is not a folder this process can write in; allowed: a writable folder")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    target = None
    try:
        if args.strict and not any(value > 0 for value in args.eps):
            raise ConfigError("--strict with only eps 0 attacks nothing, so it would pass without a test; allowed: "
                              "--strict with at least one eps > 0")
        check_out(args.out, args.force)
        where = device(args.device)
        target = targets.load(args.target, factory=args.model, arguments=args.arg, head=args.head, gamma=args.gamma,
                              trust_code=args.trust_code)
        dataset = args.dataset or target.dataset
        if dataset is None:
            raise ConfigError(f"{target.name} does not say its dataset; allowed: --dataset {'|'.join(DATASETS)}")
        if target.dataset is not None and args.dataset is not None and args.dataset != target.dataset:
            raise ConfigError(f"--dataset {args.dataset}, but {target.name} was trained on {target.dataset}; allowed: "
                              f"--dataset {target.dataset} (or leave it out)")
        x, y, how = test_images(dataset, args.data_dir, args.n, args.first, args.seed, args.synthetic)
        card = audit(target.model.to(where), x, y, args.eps, dataset=dataset, budget=args.budget,
                     seed=args.seed, device=where, batch_size=args.batch_size, progress=not args.no_progress,
                     name=f"{target.name} ({target.kind})", data=how, batch_dependence_ok=args.batch_dependence_ok)
        written = card.write(args.out / "audit") if args.out is not None else []
    except BLFError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot write {error.filename or 'a file'}: {error.strerror or error}; allowed: a writable "
              "folder with free space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return console.interrupted("nothing was written (the card is written at the end, all at once)")
    except Exception as error:  # noqa: BLE001 - the audited model's own code raised: say where, in one line
        line = None if target is None else subject.model_error(error, target.model)
        if line is None:
            raise  # not the model's: a fault of this program, whose traceback is wanted
        print(f"error: {line}; the audit stopped and wrote nothing; allowed: a model whose forward pass runs on "
              "batches of the dataset's images in [0, 1]", file=sys.stderr)
        return 2
    print(card.to_markdown())
    for path in written:
        print(path)
    if args.strict and not card.passed():
        print("!! --strict: not every eps has (a) reliable and (b) matches", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
