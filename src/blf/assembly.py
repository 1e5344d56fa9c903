"""What a config assembles: the dataset, the classifier (network + head), the objective, the
training mode, the attacks, and for training the optimiser and the loop's settings.

`for_training` and `for_evaluation` are the only places where config values become objects:
every key reaches what it configures by this one path, and tests/test_config_keys.py shows for
each key that changing it changes what runs. Values are checked before any work starts, so a
bad value fails in a second, not after hours of training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from blf import config as C
from blf import data
from blf.data import Dataset
from blf.errors import ConfigError
from blf.eval import attacks
from blf.eval.attacks import Attack
from blf.nn import heads, models, precision, regularizers
from blf.nn.models import Classifier
from blf.nn.regularizers import Regularizer
from blf.run import records
from blf.settings import EvalSettings, TrainSettings
from blf.train import objectives


@dataclass(frozen=True)
class Optimisation:
    """What only training needs: the loop's settings, the optimiser and its schedule, and the
    module the training steps call (the classifier, or its torch.compile'd view)."""

    settings: TrainSettings
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    stepper: nn.Module


@dataclass(frozen=True)
class Assembly:
    """Everything one run is made of, built from its config and checked."""

    config: dict  # the resolved config, as checkpoints, records and W&B keep it
    device: torch.device
    dataset: Dataset  # on `device`
    classifier: Classifier  # on `device`
    regularizer: Regularizer
    training: objectives.Standard  # the training mode (standard, pgd_at, trades)
    attacks: list[Attack]
    evaluation: EvalSettings
    optimisation: Optimisation | None  # None when evaluating an existing run

    def identity(self) -> dict:
        """The columns that say which run this is, as every record of it carries them."""
        return records.identity_columns(self.config, self.classifier.head.describe(), self.regularizer.describe(),
                                        self.training.describe(), {"synthetic": self.dataset.synthetic})


def device(name: str, job: int | None = None) -> torch.device:
    """`auto` picks CUDA when present, and for job `job` of a multirun on a machine with several
    GPUs (those CUDA_VISIBLE_DEVICES shows) GPU `job mod count`: a joblib sweep's parallel jobs
    spread over the GPUs instead of all landing on the first. `cpu`, `cuda` and `cuda:N` are
    taken as given."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        count = torch.cuda.device_count()
        return torch.device(f"cuda:{job % count}" if job is not None and count > 1 else "cuda")
    if name == "cpu" or name.startswith("cuda"):
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={name!r} but CUDA is not available here; allowed: auto, cpu")
        return torch.device(name)
    raise ConfigError(f"device={name!r} is not a device; allowed: auto, cpu, cuda, cuda:N")


def multirun_job() -> int | None:
    """The number of this job in its Hydra multirun (None outside one: a single run, a test)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hydra = HydraConfig.get()
        return int(hydra.job.num) if hydra.mode == RunMode.MULTIRUN else None
    except Exception:  # noqa: BLE001 - no Hydra context, or a job without a number
        return None


# The groups whose options name the class they build (`_target_`).
COMPONENTS = ("model", "head", "regularizer", "training")


def name_components(cfg: DictConfig) -> DictConfig:
    """Fill in `_target_` where a run's saved config predates it (checkpoints written before
    the configs named their classes): the class is then the one its option names now. Likewise
    the attack budgets of `dataset.threat` added since the run was trained (the adaptive set's,
    say) come from its dataset option now; the run's own values are kept."""
    for group in COMPONENTS:
        if "_target_" not in cfg[group]:
            option = OmegaConf.load(C.CONF / group / f"{cfg[group].name}.yaml")
            with open_dict(cfg):
                cfg[group]["_target_"] = option["_target_"]
    dataset_file = C.CONF / "dataset" / f"{cfg.dataset.name}.yaml"
    if dataset_file.is_file() and "threat" in cfg.dataset:
        current = OmegaConf.load(dataset_file).get("threat") or {}
        with open_dict(cfg):
            for key in current:
                if key not in cfg.dataset.threat:
                    cfg.dataset.threat[key] = current[key]
    return cfg


# Convolutions with fewer output channels stay NCHW: on an AMD EPYC CPU (AVX2) with torch 2.14.1,
# the backward pass of a ResNet-18 of width 4 in channels_last at batch 128 crashed the process
# ("double free or corruption", or a hang with two threads); width 8 and more ran. Only toy widths
# are affected, and NCHW costs them nothing that matters.
MIN_NHWC_CHANNELS = 8


def narrowest_conv(module: torch.nn.Module) -> int:
    """The fewest output channels of any 2-d convolution in `module` (a large number if none)."""
    return min((m.out_channels for m in module.modules() if isinstance(m, torch.nn.Conv2d)), default=1 << 30)


def build_classifier(cfg: DictConfig, image_shape: tuple[int, int, int], num_classes: int) -> Classifier:
    """The network and head a run's config names, in the memory format it trains in."""
    classifier = models.build(cfg.model, heads.build(cfg.head), image_shape, num_classes)
    if C.boolean("trainer.channels_last", cfg.trainer.channels_last) and narrowest_conv(classifier) >= MIN_NHWC_CHANNELS:
        # NHWC convolutions and pooling: ~1.7x faster training and ~2x faster PGD for 2C2F on
        # CPU (oneDNN), and the fast layout on GPUs. Inputs need no conversion.
        classifier = classifier.to(memory_format=torch.channels_last)
    return classifier


def _common(cfg: DictConfig, optimisation_from=None) -> Assembly:
    config = C.to_container(cfg)
    where = device(cfg.device, multirun_job())
    evaluation = EvalSettings.from_config(cfg)
    dataset = data.load(cfg.dataset)
    if evaluation.validation_n is not None:
        dataset = data.hold_out(dataset, evaluation.validation_n)
    dataset.test.subset_index(evaluation.n, evaluation.seed)  # eval.n fits the test set, checked before training
    regularizer = regularizers.build(cfg.regularizer)
    mode = objectives.build(cfg.training)
    # `attack=[]` removes the key altogether; eval.adaptive=false leaves the adaptive set out.
    chosen = attacks.build_all(cfg.get("attack"), adaptive=evaluation.adaptive)
    torch.manual_seed(C.integer("seed", cfg.seed))  # the initial weights
    classifier = build_classifier(cfg, dataset.image_shape, dataset.num_classes).to(where)
    for attack in chosen:  # e.g. the tanh surrogate needs a BLF head: refused before training
        attack.check(classifier, dataset.num_classes)
    optimisation = optimisation_from(cfg, classifier, where) if optimisation_from else None
    return Assembly(config, where, dataset.to(where), classifier, regularizer, mode, chosen, evaluation, optimisation)


# torch.compile's modes: reduce-overhead replays the steps as CUDA graphs (no launch or Python
# overhead per kernel; on a CPU it compiles as `default` does).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(value) -> str | None:
    """`trainer.compile`: false (eager), true (torch.compile's default mode) or a mode's name."""
    if isinstance(value, bool):
        return "default" if value else None
    if isinstance(value, str) and value in COMPILE_MODES:
        return value
    raise ConfigError(f"trainer.compile={value!r} is not allowed; allowed: true, false, {', '.join(COMPILE_MODES)}")


def _optimisation(cfg: DictConfig, classifier: Classifier, where: torch.device) -> Optimisation:
    C.number("optim.lr", cfg.optim.lr, gt=0)
    C.number("optim.weight_decay", cfg.optim.weight_decay, ge=0)
    # Not recursive: a nested `_target_` (never in our configs) is data, not an object to build.
    optimizer = instantiate(cfg.optim, _recursive_=False)(classifier.parameters())
    scheduler = instantiate(cfg.scheduler, _recursive_=False)(optimizer)
    seed = C.integer("seed", cfg.seed)
    settings = TrainSettings(
        epochs=C.integer("trainer.epochs", cfg.trainer.epochs, ge=1),
        batch_size=C.integer("trainer.batch_size", cfg.trainer.batch_size, ge=1),
        seed=seed,
        device=where,
        amp=precision.policy(cfg.trainer.amp),
        augment=data.augmentation(cfg.dataset, where, seed),
        progress=C.boolean("progress", cfg.progress),
    )
    # Decided once, where the model is built (nanoGPT-style): the training steps call the
    # compiled view, which shares the classifier's parameters.
    mode = compile_mode(cfg.trainer.compile)
    stepper = classifier if mode is None else torch.compile(classifier, **({} if mode == "default" else {"mode": mode}))
    return Optimisation(settings, optimizer, scheduler, stepper)


def for_training(cfg: DictConfig) -> Assembly:
    """A run to train and then evaluate (src/train.py)."""
    return _common(cfg, _optimisation)


def for_evaluation(cfg: DictConfig) -> Assembly:
    """A trained run to evaluate (src/evaluate.py): `cfg` is the run's config with this
    command's evaluation settings; the weights come from its checkpoint (eval/assessment.py)."""
    return _common(cfg)
