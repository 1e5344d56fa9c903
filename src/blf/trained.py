"""A trained run as a model: `load(run_dir_or_checkpoint)`.

The checkpoint carries the run's resolved config; the network and head are rebuilt from it and
its weights loaded into them (`weights_only`: a checkpoint can hold tensors and plain values,
never code). The result is the module the run's records were measured on: images in [0, 1]
(N, C, H, W) -> logits, in eval mode, with the run's config as `.config` and the checkpoint's
epoch and clean test accuracy as `.checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from blf import assembly, data, trust
from blf import config as C
from blf.errors import CheckpointError
from blf.nn.models import Classifier
from blf.run import storage
from blf.run.folder import RunFolder, restore


def read(source: str | Path, checkpoint: str = "best") -> tuple[dict, Path]:
    """(the checkpoint's contents, its path) for a run folder (its `checkpoint`: best or last)
    or a checkpoint file."""
    source = Path(source)
    if source.is_dir():
        folder = RunFolder(source)
        return folder.load(checkpoint), folder.checkpoint_path(checkpoint)
    if source.exists():  # a file, or something that is not one, which the reader refuses by name
        return storage.load_checkpoint(source), source
    raise CheckpointError(f"{source} does not exist; allowed: a run folder written by src/train.py or a checkpoint file in it")


def run_config(state: dict, source: str | Path = "the checkpoint", trust_code: bool = False) -> DictConfig:
    """A checkpoint's config, with every component's class named (checkpoints of older code).
    A file is not trusted: classes outside the project are refused before any import unless
    `trust_code` (trust.py)."""
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"{source}: the checkpoint's config is not a mapping; allowed: a checkpoint written by src/train.py")
    trust.check_config(state["config"], source, trust_code=trust_code)
    return assembly.name_components(OmegaConf.create(state["config"]))


def architecture(cfg: DictConfig) -> Classifier:
    """The untrained classifier (network and head) a run's config describes, for its dataset's
    image shape and classes."""
    name = C.choice("dataset", cfg.dataset.name, data.SHAPES)
    return assembly.build_classifier(cfg, data.SHAPES[name], data.NUM_CLASSES[name])


def load(source: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu",
         trust_code: bool = False) -> Classifier:
    """The classifier of a trained run, ready to evaluate (see the module docstring).

    `source` is a run folder (then `checkpoint` picks best.pt, the selected epoch, or last.pt)
    or a checkpoint file. A run trained with `trainer.amp=bf16` was evaluated under bf16
    autocast (`blf.nn.precision.autocast`); the module itself computes in float32.

    `trust_code=True` lets the run's config name classes outside this project, importing their
    modules (from the working directory too): only for a folder you trust (docs/security.md).
    """
    state, path = read(source, checkpoint)
    cfg = run_config(state, path, trust_code)
    classifier = architecture(cfg)
    restore(classifier, state["model"], path)
    classifier.config = cfg
    classifier.checkpoint = {"path": str(path), "epoch": state.get("epoch"), "clean_test_acc": state.get("test_acc")}
    return classifier.eval().to(device)
