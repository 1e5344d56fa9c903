"""Checks that a robustness evaluation can be trusted (Carlini et al. 2019, "On Evaluating
Adversarial Robustness"), run after every evaluation. Each check gives a verdict: pass, FAIL
or skipped (with the reason); a FAIL is printed loudly and recorded, never dropped.

- monotonic: accuracy does not rise with eps for any attack;
- unbounded_attack: PGD with a budget that can reach any image drives accuracy to ~0;
- gradient_free_vs_gradient: gradient-free attacks (Square, SPSA) do not break examples that
  every gradient-based attack (PGD, APGD, ...) failed on, at the same eps;
- input_gradients: few examples have zero or non-finite input gradients (saturated softmax or
  a saturated bounded head can mask gradients);
- pgd_convergence: PGD with more iterations and restarts does not lower accuracy materially.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from blf import failpoint
from blf.console import bar as progress_bar
from blf.data import Split
from blf.eval.attacks import GRADIENT_BASED, GRADIENT_FREE, PGD
from blf.eval.robustness import attacked_correct, percent
from blf.nn.models import Classifier, frozen
from blf.run.records import Kind


@dataclass
class Verdict:
    check: str
    status: str  # "pass" | "FAIL" | "skipped"
    value: float | None
    threshold: float | None
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


def _verdict(check: str, ok: bool, value: float, threshold: float, detail: str) -> Verdict:
    return Verdict(check, "pass" if ok else "FAIL", value, threshold, detail)


def monotonic(rows: list[dict], tolerance: float) -> Verdict:
    """Largest rise of accuracy (points) from one eps to the next, per attack and settings."""
    curves = defaultdict(list)
    for r in rows:
        settings = tuple(sorted((k, str(v)) for k, v in r.items() if k.startswith("attack.")))
        curves[(r["attack"], settings)].append((r["eps"], r["accuracy"]))
    worst, where = 0.0, ""
    for (attack, _), points in curves.items():
        points.sort()
        for (e0, a0), (e1, a1) in zip(points, points[1:]):
            if a1 - a0 > worst:
                worst, where = a1 - a0, f"{attack}: {a0:.2f}% at eps={e0:g} -> {a1:.2f}% at eps={e1:g}"
    if not any(len(p) > 1 for p in curves.values()):
        return Verdict("monotonic", "skipped", None, tolerance, "no attack was run at more than one eps")
    detail = f"largest rise {worst:.2f} points ({where})" if where else "accuracy never rises with eps"
    return _verdict("monotonic", worst <= tolerance, worst, tolerance, detail)


def _bar(desc: str, total: int, progress: bool):
    return progress_bar(total=total, desc=f"integrity: {desc}", unit="img", enabled=progress)


def unbounded_attack(classifier: Classifier, subset: Split, cfg: DictConfig, batch_size: int, device, seed: int,
                     progress: bool = False) -> Verdict:
    attack = PGD([cfg.eps], nb_iter=cfg.nb_iter, eps_iter=cfg.eps_iter)
    torch.manual_seed(seed)
    with frozen(classifier), _bar("unbounded PGD", len(subset), progress) as bar:
        correct = attacked_correct(classifier, subset, attack, cfg.eps, batch_size, device, bar)
    accuracy = percent(correct)
    detail = (f"PGD-{cfg.nb_iter} at eps={cfg.eps:g} leaves {accuracy:.2f}% accuracy"
              + ("" if accuracy <= cfg.max_accuracy else ": gradients do not lead the attack; gradient masking suspected"))
    return _verdict("unbounded_attack", accuracy <= cfg.max_accuracy, accuracy, cfg.max_accuracy, detail)


def gradient_free_vs_gradient(outcomes: list[tuple[dict, torch.Tensor]], max_share: float) -> Verdict:
    """Examples broken by a gradient-free attack but by no gradient-based attack at that eps."""
    by_eps = defaultdict(lambda: {"free": [], "grad": []})
    for row, correct in outcomes:
        family = "free" if row["attack"] in GRADIENT_FREE else "grad" if row["attack"] in GRADIENT_BASED else None
        if family:
            by_eps[round(row["eps"], 10)][family].append((row["attack"], correct))
    compared = {e: g for e, g in by_eps.items() if g["free"] and g["grad"]}
    if not compared:
        return Verdict("gradient_free_vs_gradient", "skipped", None, max_share,
                       "needs a gradient-free (square, spsa) and a gradient-based attack at the same eps")
    worst_share, worst_detail = -1.0, ""
    for eps, group in sorted(compared.items()):
        broken_by_free = ~torch.stack([c for _, c in group["free"]]).all(dim=0)
        broken_by_grad = ~torch.stack([c for _, c in group["grad"]]).all(dim=0)
        missed = broken_by_free & ~broken_by_grad
        share = percent(missed)
        if share > worst_share:
            free = "+".join(sorted({a for a, _ in group["free"]}))
            grad = "+".join(sorted({a for a, _ in group["grad"]}))
            worst_share = share
            worst_detail = (f"eps={eps:g}: {int(missed.sum())} of {missed.numel()} examples broken by {free} "
                            f"but not by {grad}")
    return _verdict("gradient_free_vs_gradient", worst_share <= max_share, worst_share, max_share, worst_detail)


def input_gradients(classifier: Classifier, subset: Split, batch_size: int, device, max_share: float) -> Verdict:
    """Share (%) of examples whose cross-entropy input gradient is all zero or not finite."""
    zero = nonfinite = 0
    with frozen(classifier):
        for x, y in subset.batches(batch_size, device):
            x = x.clone().requires_grad_(True)
            loss = F.cross_entropy(classifier(x), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
            flat = grad.flatten(1)
            bad = ~torch.isfinite(flat).all(dim=1)
            nonfinite += int(bad.sum())
            zero += int(((flat == 0).all(dim=1) & ~bad).sum())
    share = 100.0 * (zero + nonfinite) / len(subset)
    detail = f"{zero} examples with all-zero and {nonfinite} with non-finite input gradients (of {len(subset)})"
    return _verdict("input_gradients", share <= max_share, share, max_share, detail)


def pgd_convergence(classifier: Classifier, subset: Split, cfg: DictConfig, batch_size: int, device, seed: int,
                    progress: bool = False) -> Verdict:
    """PGD as evaluated vs PGD with `iter_factor` x the iterations and `restarts` restarts."""
    subset = subset.first(min(len(subset), cfg.max_n))
    base = PGD([cfg.eps], nb_iter=cfg.nb_iter, eps_iter=cfg.eps_iter)
    strong = PGD([cfg.eps], nb_iter=cfg.nb_iter * cfg.iter_factor, eps_iter=cfg.eps_iter, restarts=cfg.restarts)
    accuracies = []
    with frozen(classifier), _bar("PGD convergence", 2 * len(subset), progress) as bar:
        for attack in (base, strong):
            torch.manual_seed(seed)
            correct = attacked_correct(classifier, subset, attack, cfg.eps, batch_size, device, bar)
            accuracies.append(percent(correct))
    drop = accuracies[0] - accuracies[1]
    detail = (f"eps={cfg.eps:g}, {len(subset)} examples: PGD-{cfg.nb_iter} {accuracies[0]:.2f}%, "
              f"PGD-{strong.nb_iter} x {cfg.restarts} restarts {accuracies[1]:.2f}% (drop {drop:.2f} points)")
    return _verdict("pgd_convergence", drop <= cfg.tolerance, drop, cfg.tolerance, detail)


def precision_agreement(classifier: Classifier, subset: Split, batch_size: int, device, tolerance: float) -> Verdict:
    """Clean accuracy under bfloat16 autocast against float32 on the evaluation subset."""
    from blf.eval.robustness import clean_accuracy
    from blf.nn.precision import autocast

    fp32 = clean_accuracy(classifier, subset, batch_size, device)
    with autocast(device, "bf16"):
        bf16 = clean_accuracy(classifier, subset, batch_size, device)
    detail = f"clean accuracy {bf16:.2f}% in bf16, {fp32:.2f}% in fp32 (difference {bf16 - fp32:+.2f} points)"
    return _verdict("precision", abs(bf16 - fp32) <= tolerance, abs(bf16 - fp32), tolerance, detail)


def run(classifier: Classifier, subset: Split, outcomes: list[tuple[dict, torch.Tensor]], cfg: DictConfig,
        *, batch_size: int, device, seed: int, progress: bool = False) -> list[Verdict]:
    """Every check, on the evaluation subset and the per-example outcomes recorded for it."""
    rows = [row for row, _ in outcomes]
    verdicts = [monotonic(rows, cfg.monotonic_tolerance),
                unbounded_attack(classifier, subset, cfg.unbounded, batch_size, device, seed, progress)]
    failpoint.reach("integrity")  # halfway through the checks
    return verdicts + [
        gradient_free_vs_gradient(outcomes, cfg.gradient_free_max_share),
        input_gradients(classifier, subset, batch_size, device, cfg.input_gradients_max_share),
        pgd_convergence(classifier, subset, cfg.convergence, batch_size, device, seed, progress),
    ]


def as_rows(verdicts: list[Verdict]) -> list[dict]:
    return [{"kind": Kind.INTEGRITY, **asdict(v)} for v in verdicts]


def report(verdicts: list[Verdict]) -> str:
    lines = ["Integrity checks (Carlini et al. 2019):"]
    for v in verdicts:
        mark = {"pass": "  pass   ", "FAIL": "!! FAIL  ", "skipped": "  skipped"}[v.status]
        lines.append(f"{mark} {v.check}: {v.detail}")
    failed = [v.check for v in verdicts if v.failed]
    if failed:
        lines.append(f"!! {len(failed)} integrity check(s) FAILED ({', '.join(failed)}): "
                     "treat these robustness numbers with suspicion.")
    return "\n".join(lines)
