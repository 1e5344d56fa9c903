"""Shared helpers: compose real configs, and run the real apps on tiny synthetic data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from blf import app

REPO = Path(__file__).resolve().parents[1]

# Under pytest-xdist (make test: one worker per core) each worker computes on one thread, and so
# do the apps its tests start: more threads than cores would slow every worker down many times.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
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
    "eval.integrity.convergence.iter_factor=2",
    "eval.integrity.convergence.restarts=2",
    "eval.integrity.gradient_free.n_queries=20",
    "logger=none",
    "progress=false",
]


def compose_config(config_name: str = "train", overrides: list[str] | tuple = ()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The apps set torch's thread count for the process (trainer.threads); put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def attack_config(name: str, **settings):
    """An attack's composed config (conf/attack/<name>.yaml on MNIST, resolved) with `settings`."""
    from omegaconf import OmegaConf

    cfg = compose_config(overrides=[f"attack=[{name}]"])
    resolved = OmegaConf.to_container(cfg.attack[name], resolve=True)
    return OmegaConf.create({**resolved, **settings})


def option(group: str, choice: str, /, **values):
    """One option of a group as the apps compose it (conf/<group>/<choice>.yaml on MNIST, resolved,
    `_target_` included) with `values` replaced: parts built from it are built as the apps do."""
    from omegaconf import OmegaConf

    cfg = compose_config(overrides=[f"{group}={choice}"])
    return OmegaConf.create({**OmegaConf.to_container(cfg[group], resolve=True), **values})


GROUPS = ("dataset", "model", "head", "regularizer", "training", "attack", "analysis", "eval", "logger", "experiment",
          "profile")


def as_overrides(overrides: dict) -> list[str]:
    """Hydra overrides from {key: value}: group choices first (their options' keys exist only
    once chosen); settings of attacks the command does not run left out (they would not compose)."""
    chosen = [member for name in str(overrides.get("attack", "[pgd]")).strip("[]").split(",") for member in attack_members(name)]
    kept = {k: v for k, v in overrides.items()
            if v is not None and not (k.startswith("attack.") and k.split(".")[1] not in chosen)}
    groups = [k for k in kept if k in GROUPS]
    return [f"{k}={_text(kept[k])}" for k in groups + [k for k in kept if k not in groups]]


def attack_members(option: str) -> list[str]:
    """The attacks an `attack` option runs: itself, or those a set composes (conf/attack/adaptive.yaml)."""
    import yaml

    path = CONF / "attack" / f"{option}.yaml"
    defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults") if path.is_file() else None
    return [m for m in defaults if m != "_self_"] if defaults else [option]


def _text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return str(value)


def train(run_dir: Path, *overrides: str, tiny: bool = True) -> app.Outcome:
    """`python src/train.py <overrides>` in process (blf.app.train), into `run_dir`."""
    return app.train(compose_config("train", [*(TINY if tiny else []), *overrides]), Path(run_dir))


def evaluate(run_dir: Path, *overrides: str) -> app.Outcome:
    """`python src/evaluate.py run_dir=<run_dir> <overrides>` in process (blf.app.evaluate)."""
    return app.evaluate(compose_config("evaluate", [f"run_dir={run_dir}", *overrides]), Path(run_dir))


def bad(result: subprocess.CompletedProcess) -> str:
    """A user's error on the command line: one `error: ` line on stderr, exit status 2, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


# When and where, and the state of the working tree (which an edit during the tests changes).
UNTIMED = {"seconds", "images_per_second", "evaluated_at", "run_dir", "code_dirty", "trained_code_dirty"}


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in UNTIMED} for r in rows]


def run_app(script: str, *args: str, env: dict | None = None, timeout: int = 600,
            cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run src/<script> as a user would, from the repository root (or `cwd`)."""
    environment = {**os.environ, "WANDB_MODE": "disabled", "PYTHONHASHSEED": "0", "PYTHONPATH": str(REPO / "src"),
                   **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / "src" / script), *args],
        cwd=cwd,
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


class OnePixelPerClass(torch.nn.Module):
    """Pre-logit z_i = scale (2 x_i - 1) of pixel i: the saturated toy of test_adaptive_attacks."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(float(scale)), requires_grad=False)

    def forward(self, x):
        return self.scale * (2 * x.flatten(1) - 1)


def toy(head, scale):
    """(classifier, split): 30 one-hot images of 10 pixels, labelled by their bright pixel, under
    `head` with pre-logits +-scale (test_adaptive_attacks says what each choice masks)."""
    from blf.data import Split
    from blf.nn.models import Classifier

    labels = torch.arange(10).repeat(3)
    images = (255 * torch.nn.functional.one_hot(labels, 10)).to(torch.uint8).view(-1, 1, 1, 10)  # Split: uint8 pixels
    return Classifier(OnePixelPerClass(scale), head).eval(), Split(images, labels)
