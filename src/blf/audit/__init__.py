"""Audit any classifier: the adaptive worst case, the six indicators of attack failure (Pintor et
al., NeurIPS 2022) with their fixes applied, and two three-valued answers a reviewer can sign.

    import blf
    card = blf.audit(model, x, y, eps=[0.1, 0.3])      # model: images in [0, 1] -> logits
    print(card.to_markdown()); card.figure(); card.to_json()

    python -m blf.audit TARGET --dataset mnist --eps 0.1 0.3 [--budget quick|standard|thorough]

`model` is any `nn.Module`; where it has pre-logits (this package's `Classifier`, anything from
`blf.with_head`, or a `prelogits=` callable) the pre-logit attacks run, and where its head is a
bounded function BPDA runs through the head's envelope (subject.py). Randomized models are
allowed: predictions are then expectations over draws (EOT). Budgets and thresholds:
conf/audit.yaml and conf/signals.yaml. The steps: procedure.py; the answers: verdicts.py; the card: card.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from blf import config as C
from blf.audit import contract
from blf.audit.card import Audit
from blf.audit.procedure import Procedure
from blf.audit.subject import Subject, gradient_blockers
from blf.errors import ConfigError
from blf.eval import signals
from blf.eval.attacks import PGD
from blf.nn.models import frozen

BUDGETS = ("quick", "standard", "thorough")


def settings(budget: str = "standard") -> tuple[DictConfig, DictConfig]:
    """(conf/audit.yaml with conf/signals.yaml as `signals`, the chosen budget's settings)."""
    cfg = OmegaConf.load(C.CONF / "audit.yaml")
    cfg.signals = signals.settings()
    return cfg, cfg.budgets[C.choice("--budget", budget, BUDGETS)]


def paper_pgd(dataset: str | None, eps: float) -> PGD:
    """The reported attack by default: the paper's PGD for `dataset` (conf/dataset/<name>.yaml:
    MNIST 40 steps of 0.01, CIFAR-10 100 of 2/255), else 40 steps of 2.5 eps / 40 (Madry et al.)."""
    if dataset is not None:
        C.register_resolvers()  # ${per255:2}
        threat = OmegaConf.load(C.CONF / "dataset" / f"{C.choice('--dataset', dataset, ('mnist', 'cifar10'))}.yaml").threat
        pgd = OmegaConf.to_container(threat.pgd_eval, resolve=True)
        return PGD([eps], pgd["nb_iter"], float(pgd["eps_iter"]))
    return PGD([eps], 40, 2.5 * eps / 40)


def check_eps(eps) -> list[float]:
    values = [eps] if isinstance(eps, (int, float)) else list(eps)
    if not values:
        raise ConfigError("eps is empty; allowed: one or more numbers >= 0")
    for value in values:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or not 0 <= value <= 1:
            raise ConfigError(f"eps={value!r} is not a budget; allowed: numbers in [0, 1] (L-inf, pixels in [0, 1])")
    return sorted({float(v) for v in values})


def check_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> int:
    """The number of classes; one ConfigError naming what is wrong with x, y or the logits."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ConfigError(f"x of shape {tuple(getattr(x, 'shape', ()))} is not a batch of images; allowed: a float "
                          "tensor (N, C, H, W) with values in [0, 1]")
    if len(x) == 0:
        raise ConfigError("x holds no images; allowed: at least one")
    low, high = float(x.min()), float(x.max())
    if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high > 1:
        raise ConfigError(f"x has values in [{low:g}, {high:g}]; allowed: images in [0, 1] (no normalisation outside "
                          "the model: every eps is in pixel units)")
    if not isinstance(y, torch.Tensor) or y.shape != (len(x),) or y.is_floating_point():
        raise ConfigError(f"y of shape {tuple(getattr(y, 'shape', ()))} does not label x; allowed: integer labels of "
                          f"shape ({len(x)},)")
    with torch.no_grad():
        logits = model(x[: min(2, batch_size)])
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != min(2, len(x)) or logits.shape[1] < 2:
        raise ConfigError(f"the model returned {type(logits).__name__} of shape {tuple(getattr(logits, 'shape', ()))} for "
                          f"{min(2, len(x))} images; allowed: logits of shape (N, classes) with at least 2 classes")
    classes = logits.shape[1]
    if int(y.min()) < 0 or int(y.max()) >= classes:
        raise ConfigError(f"labels in [{int(y.min())}, {int(y.max())}] do not fit the model's {classes} classes; "
                          f"allowed: 0..{classes - 1}")
    return classes


def audit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | Sequence[float], *,
          prelogits: Callable[[torch.Tensor], torch.Tensor] | None = None, dataset: str | None = None,
          reported: PGD | None = None, budget: str = "standard", seed: int = 0, device: str | torch.device | None = None,
          batch_size: int = 500, transfer_from: nn.Module | None = None, progress: bool = True,
          name: str | None = None, data: str | None = None, batch_dependence_ok: bool = False) -> Audit:
    """Audit `model` on the images `x` (in [0, 1]) with labels `y` at each eps (module docstring).

    `reported`: the attack whose number is checked (a PGD of blf.eval.attacks; by default the
    paper's PGD for `dataset`). `transfer_from`: a model to craft transfer attacks on (a
    Baseline). `budget`: quick | standard | thorough (conf/audit.yaml). The model's contract
    (contract.py) is checked first; `batch_dependence_ok` accepts outputs that depend on the batch."""
    start = time.perf_counter()
    cfg, chosen = settings(budget)
    eps_values = check_eps(eps)
    device = torch.device(device) if device is not None else next(
        (p.device for p in model.parameters()), torch.device("cpu"))
    model = model.to(device)
    x, y = x.to(device), y.to(device)
    batch_size = C.integer("batch_size", batch_size, ge=1)
    subject = Subject(model, prelogits)
    notes = []
    given_training = model.training
    with frozen(model):  # before the first forward pass: a model in training mode would update its statistics
        check_inputs(model, x, y, batch_size)
        torch.manual_seed(seed)
        terms = contract.check(subject.view, x, batch_size=batch_size, draws=chosen.stability_draws, eps=max(eps_values),
                               given_training=None if model.training else given_training, cfg=cfg,
                               batch_dependence_ok=batch_dependence_ok)
        # Randomized forward passes (found at clean or perturbed points) make every prediction an expectation.
        subject.randomized = terms.randomized
        if subject.randomized:
            subject.draws = chosen.eot_draws
            notes.append(f"the model's forward pass is randomized ({terms.unstable} of {len(y)} clean predictions "
                         f"changed over {chosen.stability_draws} passes): accuracies are expectations, over "
                         f"{chosen.expectation_draws} draws at each example's final point; the fixes' attacks use EOT "
                         f"over {chosen.eot_draws}")
        notes += terms.notes
        subject.blockers = gradient_blockers(model, x[:batch_size], y[:batch_size])
        if subject.blockers:
            notes.append(f"modules that pass no gradient: {', '.join(subject.blockers)}; attacks cross them by BPDA "
                         "(the identity's gradient)")
        procedure = Procedure(subject, x, y, cfg, chosen, reported=reported or paper_pgd(dataset, max(eps_values) or 1.0),
                              seed=seed, batch_size=batch_size, progress=progress, transfer_from=transfer_from)
        clean = procedure.survival(x, y, draws=chosen.expectation_draws)
        results = []
        for value in eps_values:
            if reported is None and value > 0:
                procedure.reported = paper_pgd(dataset, value)
            results.append(procedure.at(value, clean))
    reported_name = describe(procedure.reported)
    contract_found = {"given_training": given_training, "batch_change": terms.batch_change, "nonfinite": terms.nonfinite,
                      "batch_dependence_ok": batch_dependence_ok}
    return Audit({**subject.describe(), "name": name, "contract": contract_found}, {
        "n": len(y), "eps": eps_values, "budget": budget, "seed": seed, "device": str(device), "reported": reported_name,
        "data": data, "batch_size": batch_size}, clean, results, cfg, time.perf_counter() - start, notes,
        terms.caveats)


def describe(attack: PGD) -> str:
    return f"{attack.name}-{attack.nb_iter} (step {attack.eps_iter:g}, {'random start' if attack.rand_init else 'no random start'})"


__all__ = ["Audit", "audit", "settings"]
