"""Shared helpers: compose real configs, and run the real apps on tiny synthetic data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# Tiny, fast settings for app runs: synthetic MNIST-shaped data, 2 epochs, short PGD.
TINY = [
    "dataset.synthetic=true",
    "dataset.synthetic_train=256",
    "dataset.synthetic_test=64",
    "trainer.epochs=2",
    "eval.n=32",
    "eval.batch_size=32",
    "attack.pgd.nb_iter=3",
    "eval.integrity.unbounded.nb_iter=20",
    "eval.integrity.convergence.nb_iter=5",
    "eval.integrity.convergence.iter_factor=2",
    "eval.integrity.convergence.restarts=2",
    "logger=none",
    "progress=false",
]


def compose_config(config_name: str = "train", overrides: list[str] | tuple = ()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def run_app(script: str, *args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run src/<script> as a user would, from the repository root."""
    environment = {**os.environ, "WANDB_MODE": "disabled", "PYTHONHASHSEED": "0", "PYTHONPATH": str(REPO / "src"),
                   **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / "src" / script), *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def tiny_run(tmp_path):
    """Train a tiny run into tmp_path/run and return (folder, completed process)."""

    def train(*extra: str, folder: str = "run"):
        run_dir = tmp_path / folder
        result = run_app("train.py", *TINY, *extra, f"hydra.run.dir={run_dir}")
        return run_dir, result

    return train
