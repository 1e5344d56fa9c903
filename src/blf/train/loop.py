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
from typing import TYPE_CHECKING

import torch

from blf import failpoint
from blf.console import bar
from blf.data import Augmentation, Split
from blf.errors import CheckpointError, NonFiniteLossError
from blf.eval.robustness import clean_accuracy
from blf.nn import precision
from blf.nn.regularizers import Regularizer
from blf.run import records
from blf.run.folder import RunFolder
from blf.run.tracking import Tracker

if TYPE_CHECKING:
    from blf.assembly import Assembly

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """What a run has done so far (saved in last.pt)."""

    epoch: int = 0
    best_epoch: int = 0
    best_accuracy: float = -1.0  # clean accuracy on the selection split (eval.selection_split) at best_epoch
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
    classifier: torch.nn.Module,
    split: Split,
    mode,
    regularizer: Regularizer,
    optimizer: torch.optim.Optimizer,
    *,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    augment: Augmentation | None,
    desc: str,
    progress: bool,
) -> tuple[float, float]:
    """One pass over `split` in a random order; returns (mean loss, accuracy in percent).

    Batches are index slices of tensors already in memory; losses are accumulated on the
    device and read once at the end (no per-step synchronisation).
    """
    classifier.train()
    compiled = hasattr(classifier, "_orig_mod")  # the torch.compile'd view of the classifier
    order = torch.randperm(len(split), generator=generator).to(split.labels.device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for start in bar(range(0, len(split), batch_size), desc=desc, unit="batch", enabled=progress):
        if compiled:  # a new step for torch.compile's CUDA graphs (trainer.compile=reduce-overhead)
            torch.compiler.cudagraph_mark_step_begin()
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


def scale_hint(classifier) -> str:
    """The head's scale, where it has one: a large gamma makes logits and gradients overflow as
    surely as a large learning rate does."""
    gamma = classifier.head.scale() if hasattr(classifier.head, "scale") else None
    return f", head.gamma (now {gamma:g})" if isinstance(gamma, float) and gamma > 1 else ""


def fit(workspace: RunFolder, run: Assembly, tracker: Tracker) -> Progress:
    """Train `run` for its settings' epochs, resuming if the workspace has a checkpoint.

    The training steps run `optimisation.stepper` (the classifier, or its torch.compile'd view with the
    same parameters); evaluation stays eager, so attacks with their many batch shapes and modes
    do not trigger recompilations. Every step, the attacks crafted during training included,
    runs under the precision policy `settings.amp`."""
    optimisation = run.optimisation
    settings, optimizer, scheduler = optimisation.settings, optimisation.optimizer, optimisation.scheduler
    classifier, data = run.classifier, run.dataset
    generator = torch.Generator().manual_seed(settings.seed)
    state = Progress()
    hydra_files = workspace.hydra_files()
    if workspace.has("last"):
        saved = workspace.load("last")
        hydra_files = saved.get("hydra_files", {})
        workspace.ensure_same_run(saved["config"], run.config, hydra_files)
        if saved["epoch"] > settings.epochs:
            raise CheckpointError(
                f"{workspace.root} has trained {saved['epoch']} epochs, but trainer.epochs={settings.epochs}; "
                f"allowed: trainer.epochs >= {saved['epoch']} (to continue or evaluate it), or another folder "
                "(hydra.run.dir=...) for a shorter run"
            )
        workspace.restore(classifier, saved["model"], "last")
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"], generator, settings.augment)
        state = Progress(saved["epoch"], saved["best_epoch"], saved["best_accuracy"], list(saved["history"]))
        workspace.write_metrics(state.history)  # a kill between last.pt and metrics.jsonl left them behind
        if state.epoch < settings.epochs:
            log.info("resuming %s after epoch %d/%d", workspace.root, state.epoch, settings.epochs)
    # The same run: not finished again until this command has completed it (app.train).
    workspace.unmark_finished()
    # What the checkpoints say about how they were trained (records.provenance reads it back).
    trained = {**records.stamp(), "augmented": settings.augment is not None, "amp": settings.amp}

    for epoch in range(state.epoch + 1, settings.epochs + 1):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        with precision.autocast(settings.device, settings.amp):
            train_loss, train_acc = train_epoch(
                optimisation.stepper,
                data.train,
                run.training,
                run.regularizer,
                optimizer,
                batch_size=settings.batch_size,
                generator=generator,
                device=settings.device,
                augment=settings.augment,
                desc=f"epoch {epoch}/{settings.epochs}",
                progress=settings.progress,
            )
        seconds = time.perf_counter() - start
        # The mean loss misses a step that diverged last (its loss finite, its update not).
        finite_weights = all(bool(torch.isfinite(p).all()) for p in classifier.parameters())
        if not math.isfinite(train_loss) or not finite_weights:
            what = f"the training loss became {train_loss}" if not math.isfinite(train_loss) else "the weights became non-finite"
            raise NonFiniteLossError(
                f"{what} in epoch {epoch}; the run stopped and "
                f"{workspace.checkpoint_path('last')} still holds epoch {state.epoch}. "
                f"Lower optim.lr{scale_hint(classifier)} or the regularizer strength, or change the seed."
            )
        scheduler.step()
        with precision.autocast(settings.device, settings.amp):
            test_acc = clean_accuracy(classifier, data.test, batch_size=1000, device=settings.device)
            validation_acc = None if data.validation is None else clean_accuracy(
                classifier, data.validation, batch_size=1000, device=settings.device)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_acc": test_acc,
            **({} if validation_acc is None else {"validation_acc": validation_acc}),
            "lr": lr,
            "gamma": classifier.head.scale(),
            "seconds": seconds,
            "images_per_second": len(data.train) / seconds,
        }
        state.history.append(row)
        state.epoch = epoch
        # Appendix B.2 keeps the epoch of largest clean test accuracy; with a validation split, of
        # largest clean validation accuracy (the test set then picks nothing).
        selected = test_acc if validation_acc is None else validation_acc
        if selected > state.best_accuracy:
            state.best_accuracy, state.best_epoch = selected, epoch
            workspace.save("best", {"model": classifier.state_dict(), "epoch": epoch, "test_acc": test_acc,
                                    **({} if validation_acc is None else {"validation_acc": validation_acc}),
                                    "config": run.config, "trained": trained})
        workspace.save(
            "last",
            {
                "model": classifier.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(generator, settings.augment),
                "epoch": epoch,
                "best_epoch": state.best_epoch,
                "best_accuracy": state.best_accuracy,
                "history": state.history,
                "config": run.config,
                "hydra_files": hydra_files,
                "trained": trained,
            },
        )
        failpoint.reach("checkpoint")  # last.pt written, metrics.jsonl not yet
        workspace.write_metrics(state.history)
        tracker.log_epoch(row)
        log.info(
            "epoch %d/%d  loss %.4f  train acc %.2f  test acc %.2f%s  lr %.4g  %.1fs",
            epoch, settings.epochs, train_loss, train_acc, test_acc,
            "" if validation_acc is None else f"  validation acc {validation_acc:.2f}", lr, seconds,
        )
        failpoint.reach("epoch")
    return state
