"""Evaluation of a trained classifier: clean accuracy, robust accuracy per (attack, eps) with
per-example outcomes, the worst case over attacks, and the norms of logits and pre-logits on
clean data (Fig. 1).

Attacks run on a fixed subset of the test set (`eval.n` examples drawn by `eval.seed`, the
same for every model), with the classifier in eval mode and its parameters frozen. The random
generator is re-seeded from `eval.seed` before each (attack, eps), so results do not depend on
which attacks ran before.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence

import torch

from blf import failpoint
from blf.console import bar as progress_bar
from blf.data import Split
from blf.eval.attacks import Attack
from blf.nn.models import Classifier, frozen
from blf.run import records
from blf.run.records import WORST_CASE, Kind

log = logging.getLogger(__name__)


def percent(correct: torch.Tensor) -> float:
    """Share of True in a boolean vector, in percent (exact: 37 of 50 is 74.0, not 73.99999)."""
    return 100.0 * int(correct.sum()) / correct.numel()


@torch.no_grad()
def predictions(classifier: Classifier, split: Split, batch_size: int, device: torch.device) -> torch.Tensor:
    with frozen(classifier):
        return torch.cat([classifier(x).argmax(1) for x, _ in split.batches(batch_size, device)])


def clean_accuracy(classifier: Classifier, split: Split, batch_size: int, device: torch.device) -> float:
    """Percent of `split` classified correctly."""
    return percent(predictions(classifier, split, batch_size, device) == split.labels.to(device))


@torch.no_grad()
def norms(classifier: Classifier, split: Split, batch_size: int, device: torch.device) -> dict:
    """Mean L2 and L-infinity norms of the logits gamma*g(z) and pre-logits z (Fig. 1)."""
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    with frozen(classifier):
        for x, _ in split.batches(batch_size, device):
            z, logits = classifier.prelogits_and_logits(x)
            sums += torch.stack(
                [
                    logits.norm(p=2, dim=1).sum(),
                    logits.abs().amax(dim=1).sum(),
                    z.norm(p=2, dim=1).sum(),
                    z.abs().amax(dim=1).sum(),
                ]
            ).double()
    mean = (sums / len(split)).tolist()
    return {"kind": Kind.NORMS, "logit_l2": mean[0], "logit_linf": mean[1], "prelogit_l2": mean[2], "prelogit_linf": mean[3]}


def attacked_correct(classifier, split: Split, attack: Attack, eps: float, batch_size: int, device, bar=None) -> torch.Tensor:
    """Per-example outcome of `attack` at `eps`: True where the prediction stays correct."""
    outcome = []
    for x, y in split.batches(batch_size, device):
        x_adv = x if eps == 0 else attack.perturb(classifier, x, y, eps)
        with torch.no_grad():
            outcome.append((classifier(x_adv).argmax(1) == y).cpu())
        if bar is not None:
            bar.update(len(y))
    return torch.cat(outcome)


def robustness(
    classifier: Classifier,
    split: Split,
    attack: Attack,
    *,
    batch_size: int,
    seed: int,
    device: torch.device,
    progress: bool,
) -> list[tuple[dict, torch.Tensor]]:
    """One (row, per-example outcome) per eps of the attack's grid; one log line per eps."""
    results = []
    batch_size = attack.batch_size or batch_size
    bar = progress_bar(total=len(split) * len(attack.eps), desc=attack.name, unit="img", enabled=progress)
    with frozen(classifier):
        for eps in attack.eps:
            torch.manual_seed(seed)
            bar.set_postfix(eps=round(eps, 4))
            start = time.perf_counter()
            correct = attacked_correct(classifier, split, attack, eps, batch_size, device, bar)
            row = {
                "kind": Kind.ROBUSTNESS,
                "attack": attack.name,
                "eps": eps,
                "correct": int(correct.sum()),
                "accuracy": percent(correct),
                "seconds": time.perf_counter() - start,
                **{f"attack.{k}": v for k, v in attack.settings().items()},
                "outcome": records.encode_outcome(correct.numpy()),
            }
            results.append((row, correct))
            log.info("%s eps=%.4g: %.2f%% of %d (%.1fs)", attack.name, eps, row["accuracy"], len(correct), row["seconds"])
            failpoint.reach("attack")
    bar.close()
    return results


def worst_case(outcomes: Iterable[tuple[dict, torch.Tensor]]) -> list[dict]:
    """Per eps: the share of examples that survive every attack run at that eps (the mean over
    examples of the min over attacks), from per-example outcomes on the same subset."""
    by_eps: dict[float, list[tuple[dict, torch.Tensor]]] = defaultdict(list)
    for row, correct in outcomes:
        by_eps[round(row["eps"], 10)].append((row, correct))
    rows = []
    for eps in sorted(by_eps):
        group = by_eps[eps]
        survived = torch.stack([c for _, c in group]).all(dim=0)
        names = sorted({r["attack"] for r, _ in group})
        rows.append({
            "kind": Kind.WORST_CASE,
            "attack": WORST_CASE,
            "eps": group[0][0]["eps"],
            "correct": int(survived.sum()),
            "accuracy": percent(survived),
            "attacks": "+".join(names),
            "n_attacks": len(group),
            "outcome": records.encode_outcome(survived.numpy()),
        })
    return rows


def evaluate(
    classifier: Classifier,
    subset: Split,
    attacks: Sequence[Attack],
    *,
    seed: int,
    batch_size: int,
    device: torch.device,
    num_classes: int,
    progress: bool,
) -> tuple[dict, list[tuple[dict, torch.Tensor]]]:
    """(norms row, [(robustness row, per-example outcome)]) on `subset`."""
    for attack in attacks:
        attack.check(classifier, num_classes)
    outcomes = []
    for attack in attacks:
        outcomes.extend(robustness(classifier, subset, attack, batch_size=batch_size, seed=seed, device=device, progress=progress))
    return norms(classifier, subset, batch_size, device), outcomes
