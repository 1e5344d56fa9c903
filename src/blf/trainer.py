"""The training loop: epochs over in-memory tensors, model selection, checkpoints, resume.

Model selection keeps the epoch with the largest clean test accuracy (appendix B.2: "we used
the models at the epoch when they achieved the largest clean accuracy"; the paper does not
split off a validation set). A run resumes from `last.pt`, which holds everything the next
epoch depends on, RNG states included, so an interrupted run ends with the same numbers as an
uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from . import precision
from .data import Augmentation, Dataset, Split
from .errors import NonFiniteLossError
from .evaluation import clean_accuracy
from .models import Classifier
from .regularizers import Regularizer
from .tracking import Tracker
from .workspace import Workspace

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """What a run has done so far (saved in last.pt)."""

    epoch: int = 0
    best_epoch: int = 0
    best_accuracy: float = -1.0
    history: list[dict] = field(default_factory=list)


def rng_state(generator: torch.Generator, augment: Augmentation | None) -> dict:
    state = {"torch": torch.get_rng_state(), "shuffle": generator.get_state()}
    if augment is not None:
        state["augment"] = augment.generator.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator, augment: Augmentation | None) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["shuffle"])
    if augment is not None and "augment" in state:
        augment.generator.set_state(state["augment"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train_epoch(
    classifier: Classifier,
    split: Split,
    mode,
    regularizer: Regularizer,
    optimizer: torch.optim.Optimizer,
    *,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    augment: Augmentation | None = None,
    desc: str = "train",
    progress: bool = True,
) -> tuple[float, float]:
    """One pass over `split` in a random order; returns (mean loss, accuracy in percent).

    Batches are index slices of tensors already in memory; losses are accumulated on the
    device and read once at the end (no per-step synchronisation).
    """
    classifier.train()
    order = torch.randperm(len(split), generator=generator).to(split.labels.device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for start in tqdm(range(0, len(split), batch_size), desc=desc, disable=not progress, leave=False):
        x, y = split.batch(order[start : start + batch_size], device)
        if augment is not None:
            x = augment(x)
        loss, logits = mode.loss(classifier, x, y, regularizer)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * y.shape[0]
        correct += (logits.detach().argmax(1) == y).sum()
    return loss_sum.item() / len(split), 100.0 * correct.item() / len(split)


def fit(
    workspace: Workspace,
    classifier: Classifier,
    data: Dataset,
    mode,
    regularizer: Regularizer,
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    config: dict,
    device: torch.device,
    tracker: Tracker,
    augment: Augmentation | None = None,
    amp=None,
    compile: bool = False,
    progress: bool = True,
) -> Progress:
    """Train for `epochs` epochs (resuming if the workspace has a checkpoint).

    With `compile`, the training steps run a torch.compile'd view of the classifier (same
    parameters); evaluation stays eager, so attacks with their many batch shapes and modes do
    not trigger recompilations."""
    stepper = torch.compile(classifier) if compile else classifier
    generator = torch.Generator().manual_seed(seed)
    state = Progress()
    hydra_files = workspace.hydra_files()
    if workspace.has("last"):
        saved = workspace.load("last")
        hydra_files = saved.get("hydra_files", {})
        workspace.ensure_same_run(saved["config"], config, hydra_files)
        classifier.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"], generator, augment)
        state = Progress(saved["epoch"], saved["best_epoch"], saved["best_accuracy"], list(saved["history"]))
        if state.epoch < epochs:
            log.info("resuming %s after epoch %d/%d", workspace.root, state.epoch, epochs)

    for epoch in range(state.epoch + 1, epochs + 1):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        with precision.autocast(device, amp):
            train_loss, train_acc = train_epoch(
                stepper,
                data.train,
                mode,
                regularizer,
                optimizer,
                batch_size=batch_size,
                generator=generator,
                device=device,
                augment=augment,
                desc=f"epoch {epoch}/{epochs}",
                progress=progress,
            )
        seconds = time.perf_counter() - start
        if not math.isfinite(train_loss):
            raise NonFiniteLossError(
                f"the training loss became {train_loss} in epoch {epoch}; the run stopped and "
                f"{workspace.checkpoint_path('last')} still holds epoch {state.epoch}. "
                "Lower optim.lr or the regularizer strength, or change the seed."
            )
        scheduler.step()
        with precision.autocast(device, amp):
            test_acc = clean_accuracy(classifier, data.test, batch_size=1000, device=device)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_acc": test_acc,
            "lr": lr,
            "gamma": classifier.head.gamma,
            "seconds": seconds,
            "images_per_second": len(data.train) / seconds,
        }
        state.history.append(row)
        state.epoch = epoch
        if test_acc > state.best_accuracy:
            state.best_accuracy, state.best_epoch = test_acc, epoch
            workspace.save("best", {"model": classifier.state_dict(), "epoch": epoch, "test_acc": test_acc, "config": config})
        workspace.save(
            "last",
            {
                "model": classifier.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(generator, augment),
                "epoch": epoch,
                "best_epoch": state.best_epoch,
                "best_accuracy": state.best_accuracy,
                "history": state.history,
                "config": config,
                "hydra_files": hydra_files,
            },
        )
        workspace.write_metrics(state.history)
        tracker.log_epoch(row)
        log.info(
            "epoch %d/%d  loss %.4f  train acc %.2f  test acc %.2f  lr %.4g  %.1fs",
            epoch, epochs, train_loss, train_acc, test_acc, lr, seconds,
        )
    return state
