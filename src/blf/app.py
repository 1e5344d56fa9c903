"""The two apps, whole: `train(cfg)` (src/train.py) and `evaluate(cfg)` (src/evaluate.py).

Each takes a composed config and does everything its command does; the scripts only wrap them
in `@hydra.main` and turn user errors into one line (`user_errors`). Tests call these functions
in process on composed configs, so they test the path users take.
"""

from __future__ import annotations

import atexit
import difflib
import logging
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from blf import assembly, settings, sources, trained
from blf import config as C
from blf.audit import audit
from blf.errors import BLFError, CheckpointError, NonFiniteLossError
from blf.eval import assessment
from blf.report import tables
from blf.run import identity, storage, tracking
from blf.run.allocator import keep_freed_memory
from blf.run.folder import RunFolder, note_if_new
from blf.train import loop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What an app call did: the run folder, its records for the evaluated checkpoint and
    subset, the records this call added, and (training) the run's progress."""

    run_dir: Path
    rows: list[dict]
    added: list[dict]
    progress: loop.Progress | None


def hydra_run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


class FolderWatch(Callback):
    """Hydra callback (conf/train.yaml, conf/evaluate.yaml): before Hydra creates the run folder,
    note whether it exists, so that a refused command removes only a folder it created; and
    before Hydra writes its log and `.hydra/` files into a run (or sweep) folder, refuse one that
    holds a symbolic link, which those writes would follow."""

    def on_run_start(self, config, **kwargs) -> None:
        self.refuse_unread_additions(config)  # before the folder exists: a refused command leaves none
        try:
            folder = Path(str(config.hydra.run.dir))
        except Exception:  # noqa: BLE001 - a folder it cannot name is one it will never remove
            return
        note_if_new(folder)
        self.refuse_links(folder)

    def on_multirun_start(self, config, **kwargs) -> None:
        self.refuse_unread_additions(config)
        self.refuse_links(Path(str(config.hydra.sweep.dir)))

    @staticmethod
    def refuse_unread_additions(config) -> None:
        """`+key=value` adds a key; Hydra suggests it for a typo (`trainer.epoch=1`), and then the
        run would silently ignore it. Only keys passed on whole to a constructor are read when
        added (ADDABLE); a group may be added (`+group=option`). Anything else is refused."""
        try:
            added = additions(list(config.hydra.overrides.task))
        except Exception:  # noqa: BLE001 - Hydra has already parsed them; nothing to refuse here
            return
        task = {k for k in identity.flatten(OmegaConf.to_container(config, resolve=False)) if not k.startswith("hydra.")}
        for key, text in added:
            if any(key == p or key.startswith(p + ".") for p in ADDABLE) or (C.CONF / key.replace(".", "/")).is_dir():
                continue
            known = sorted(k for k in task if not (k == key or k.startswith(key + ".")))  # not the addition itself
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            print(f"error: {text} adds a key that nothing reads{hint}; allowed: the keys of the configs (`--cfg job` lists "
                  f"them) and, with +, keys under {', '.join(ADDABLE)}", file=sys.stderr)
            sys.exit(2)

    @staticmethod
    def refuse_links(folder: Path) -> None:
        try:
            if folder.is_symlink():  # the folder itself: a link to a folder elsewhere is the user's choice
                folder = folder.resolve()
            if folder.is_dir():
                storage.refuse_links_inside(folder)
        except BLFError as error:
            print(f"error: {error}", file=sys.stderr)  # Hydra's logging would prefix it; ours is not set up yet
            sys.exit(2)


# Mappings whose keys are passed on whole to a constructor (torch's optimiser and scheduler): a key
# added there is read. (`model.kwargs` exists for timm and torchvision: it is set, not added.)
ADDABLE = ("optim", "scheduler")


def additions(overrides: list[str]) -> list[tuple[str, str]]:
    """(key, override) of the `+key=value` and `++key=value` overrides among `overrides`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [(o.key_or_group, o.input_line) for o in parsed if o.type in (OverrideType.ADD, OverrideType.FORCE_ADD)]


class FailedJobStatus(Callback):
    """Hydra callback (conf/train.yaml, conf/evaluate.yaml): a job that failed under submitit (on
    SLURM) ends its process with status 1 once submitit has saved its result, so that sacct says
    FAILED instead of COMPLETED 0:0. The job's result (Hydra's record of the failure) is saved as
    before, so the multirun still collects every job and reports this one."""

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if os.environ.get("SUBMITIT_EXECUTOR") and job_return.status == JobStatus.FAILED:
            atexit.register(_exit_failed)


def _exit_failed() -> None:
    # Other exit handlers may not run after this one: flush what they would have.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def configure_cpu(threads: int | None) -> None:
    """Cap torch's CPU threads (parallel sweep jobs must not oversubscribe the cores) and keep
    freed memory for reuse (allocator.py)."""
    if threads is not None:
        torch.set_num_threads(C.integer("trainer.threads", threads, ge=1))
    keep_freed_memory()


def train(cfg: DictConfig, run_dir: Path | None = None) -> Outcome:
    """Train the run `cfg` describes in `run_dir` (default: Hydra's run folder), resuming it if
    the folder holds a checkpoint, then evaluate its selected checkpoint."""
    workspace = RunFolder(run_dir or hydra_run_dir())
    # First, so that a job's launcher log names its run folder even if the job fails (study/progress.py).
    log.info("run folder: %s", workspace.root)
    workspace.refuse_links()
    workspace.check_records()
    configure_cpu(cfg.trainer.threads)
    run = assembly.for_training(cfg)  # every value checked before the folder is touched
    with workspace.locked():
        with tracking.start(cfg.logger, run.config, workspace.root, job_type="train", identity=run.identity()) as tracker:
            progress = loop.fit(workspace, run, tracker)
            # After training: a Baseline evaluated with `auto` may be its own source.
            run = sources.attach(run, workspace.root)
            rows, added = assessment.assess(workspace, run, tracker, skip_done=True, auditor=audit)
            if added:
                tracker.log_checkpoint(workspace.checkpoint_path(run.evaluation.checkpoint), tracking.summary(rows))
        workspace.mark_finished(identity.job_key(run.config))
    log.info("best epoch %d: clean %s accuracy %.2f%%", progress.best_epoch, run.evaluation.selection_split,
             progress.best_accuracy)
    log.info("%s", tables.summary(rows))
    log.info("done: %s", workspace.root)
    return Outcome(workspace.root, rows, added, progress)


def evaluate(cfg: DictConfig, run_dir: Path | None = None) -> Outcome:
    """Evaluate the trained run in `run_dir` (default: `cfg.run_dir` as Hydra's run folder).

    The run's settings come from its checkpoint; every key of this command's config (attacks,
    analyses, `eval`, logger, device, progress) replaces the run's. Interpolations such as
    `${dataset.threat.eval_eps}` resolve against the run's dataset."""
    workspace = RunFolder(run_dir or hydra_run_dir())
    if not workspace.root.is_dir() or workspace.was_missing():  # Hydra makes the folder before we run
        raise CheckpointError(f"{workspace.root} does not exist; allowed: a run folder written by src/train.py "
                              "(run_dir=<its path>)")
    workspace.refuse_links()
    workspace.check_records()
    saved = workspace.load(C.choice("eval.checkpoint", cfg.eval.checkpoint, settings.CHECKPOINTS))
    if workspace.has("last") and cfg.eval.checkpoint != "last":
        # A checkpoint copied in from another run would be evaluated and recorded as this one.
        if differing := identity.differences(workspace.load("last")["config"], saved["config"]):
            key, ours, theirs = differing[0]
            raise CheckpointError(f"{workspace.checkpoint_path(cfg.eval.checkpoint)} belongs to another run than "
                                  f"{workspace.checkpoint_path('last')} ({key}: {theirs!r} vs {ours!r}); "
                                  "allowed: the checkpoints train.py wrote into this folder")
    run_cfg = trained.run_config(saved, workspace.checkpoint_path(cfg.eval.checkpoint),
                                 C.boolean("trust_code", cfg.get("trust_code", False)))
    for key in cfg:
        if key == "trainer":  # how many threads, not how the run was trained
            if cfg.trainer.get("threads") is not None:
                run_cfg.trainer.threads = cfg.trainer.threads
        elif key not in ("run_dir", "trust_code"):
            run_cfg[key] = cfg[key]
    for key in ("attack", "analysis"):  # `attack=[]` or `analysis=[]` on this command removes the key
        if key not in cfg:
            run_cfg[key] = {}
    # Which images training held out is a fact of the run, not a choice of this command.
    trained_eval = saved["config"].get("eval") or {}
    split = trained_eval.get("selection_split", "test")
    if cfg.eval.get("selection_split", split) != split:
        log.warning("eval.selection_split=%s ignored: %s was trained with eval.selection_split=%s",
                    cfg.eval.selection_split, workspace.root, split)
    run_cfg.eval.selection_split = split
    run_cfg.eval.validation_n = trained_eval.get("validation_n", run_cfg.eval.get("validation_n"))
    configure_cpu(run_cfg.trainer.threads)
    run = assembly.for_evaluation(run_cfg)
    with workspace.locked(), tracking.start(run_cfg.logger, run.config, workspace.root, job_type="eval",
                                            identity=run.identity()) as tracker:
        run = sources.attach(run, workspace.root)
        rows, added = assessment.assess(workspace, run, tracker, skip_done=False, auditor=audit)
    log.info("%s", tables.summary(rows))
    log.info("records: %s", workspace.results_path)
    return Outcome(workspace.root, rows, added, None)


def in_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # no Hydra context (tests calling functions directly)
        return False


def _report(message: str) -> None:
    """To stderr and the run's log: through logging where Hydra configured it, else printed."""
    if logging.getLogger().handlers:
        log.error("%s", message)
    else:
        print(message, file=sys.stderr)


@contextmanager
def user_errors(workspace: RunFolder | None = None):
    """Print a user's error as one line and exit 2; a folder this command created and left with
    nothing but bookkeeping is removed.

    A user's error is a BLFError, or an OSError of the file system (a read-only folder, a full
    disk: nothing is lost, since every write is atomic). In a multirun the error is raised
    instead, so that Hydra marks this job failed and the sweep goes on with the others (the
    aggregation then reports it)."""
    try:
        yield
    except (BLFError, OSError) as error:
        if workspace is not None and not isinstance(error, NonFiniteLossError):
            workspace.remove_if_created()  # a folder this command made, still empty: nothing to keep
        if isinstance(error, OSError):
            error = f"cannot write {error.filename or 'a file'}: {error.strerror or error}; allowed: a writable folder with free space"
        _report(f"error: {error}")
        if in_multirun():
            raise
        sys.exit(2)
    except KeyboardInterrupt:  # SIGINT (Ctrl-C, or the study driver passing one on)
        _report("error: interrupted; the last checkpoint and every record written are kept (each write is atomic), "
                "and rerunning the command resumes")
        sys.exit(130)
