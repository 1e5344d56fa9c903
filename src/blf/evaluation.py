"""Evaluation of a trained classifier: clean accuracy, robust accuracy per (attack, eps), and
the norms of logits and pre-logits on clean data (Fig. 1).

Attacks run on a fixed subset of the test set (`eval.n` examples drawn by `eval.seed`, the
same for every model), with the classifier in eval mode and its parameters frozen. The random
generator is re-seeded from `eval.seed` before each (attack, eps), so results do not depend on
which attacks ran before.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from .attacks import Attack
from .data import Split
from .models import Classifier, frozen
from .records import now


@torch.no_grad()
def clean_accuracy(classifier: Classifier, split: Split, batch_size: int, device: torch.device) -> float:
    """Percent of `split` classified correctly."""
    with frozen(classifier):
        correct = torch.zeros((), dtype=torch.long, device=device)
        for x, y in split.batches(batch_size, device):
            correct += (classifier(x).argmax(1) == y).sum()
    return 100.0 * correct.item() / len(split)


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
    return {"logit_l2": mean[0], "logit_linf": mean[1], "prelogit_l2": mean[2], "prelogit_linf": mean[3]}


def robustness(
    classifier: Classifier,
    split: Split,
    attack: Attack,
    *,
    batch_size: int,
    seed: int,
    device: torch.device,
    progress: bool = True,
) -> list[dict]:
    """One row per eps of the attack's grid: n, correct, accuracy (percent), seconds."""
    rows = []
    n_batches = -(-len(split) // batch_size)
    bar = tqdm(total=n_batches * len(attack.eps), desc=f"{attack.name}", disable=not progress, leave=False)
    with frozen(classifier):
        for eps in attack.eps:
            torch.manual_seed(seed)
            start = time.perf_counter()
            correct = 0
            bar.set_postfix(eps=round(eps, 4))
            for x, y in split.batches(batch_size, device):
                x_adv = x if eps == 0 else attack.perturb(classifier, x, y, eps)
                with torch.no_grad():
                    correct += int((classifier(x_adv).argmax(1) == y).sum())
                bar.update()
            rows.append(
                {
                    "kind": "robustness",
                    "attack": attack.name,
                    "eps": eps,
                    "n": len(split),
                    "correct": correct,
                    "accuracy": 100.0 * correct / len(split),
                    "seconds": time.perf_counter() - start,
                    **{f"attack.{k}": v for k, v in attack.settings().items()},
                }
            )
    bar.close()
    return rows


def evaluate(
    classifier: Classifier,
    test: Split,
    attacks: Sequence[Attack],
    *,
    n: int | None,
    seed: int,
    batch_size: int,
    device: torch.device,
    progress: bool = True,
) -> list[dict]:
    """Norms and robustness rows for `attacks` on the evaluation subset (without identity)."""
    subset = test.subset(n, seed)
    common = {"n": len(subset), "eval_seed": seed, "evaluated_at": now()}
    rows = [{"kind": "norms", **common, **norms(classifier, subset, batch_size, device)}]
    for attack in attacks:
        for row in robustness(classifier, subset, attack, batch_size=batch_size, seed=seed, device=device, progress=progress):
            rows.append({**common, **row})
    return rows
