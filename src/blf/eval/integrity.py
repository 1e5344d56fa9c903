"""Checks that a robustness evaluation can be trusted (Carlini et al. 2019, "On Evaluating
Adversarial Robustness"), run after every evaluation. Each check gives a verdict: pass, FAIL
or skipped (with the reason); a FAIL is printed loudly and recorded, never dropped. Each test
the attacks as they ran (the PGD settings and eps grid of the evaluation's records). Where the
checkpoint holds several PGD settings (training's PGD-40, then an evaluation's PGD-7), the
checks that re-run PGD judge the weakest, fewest iterations x restarts (`pgd_settings`): its
numbers overstate robustness the most, and one re-run keeps an evaluation's cost the same
whatever was recorded before; their verdicts name it and the others.

- monotonic: accuracy does not rise with eps for any attack;
- unbounded_attack: PGD at a budget where the provable robust accuracy is small drives
  accuracy to ~0 (docs/evaluation.md says why 0.5);
- gradient_free_vs_gradient: gradient-free attacks (Square, SPSA) do not break examples that
  the paper's gradient attacks (PGD, APGD) failed on, at every eps where both ran and at the
  largest eps of the PGD grid (Square runs there if no gradient-free attack did);
- input_gradients: few correctly classified examples have a masked input gradient: not
  finite, vanishing next to the gradient of the network's own pre-logit margin, or reversed
  (ascending the loss would raise the true class's pre-logit margin: BLF beyond z*);
- pgd_convergence: more iterations with restarts, and other step sizes, do not lower the
  weakest PGD's accuracy at its largest eps materially;
- saturation: few clean or PGD-adversarial examples (the weakest PGD's, at its largest eps)
  have pre-logits beyond the head's extremum (Theorem 3's z* for BLF) or saturation point,
  where its gradient vanishes or turns;
- attack_gap: the adaptive worst case lies not far below the paper's attack at any eps.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass

import torch
from omegaconf import DictConfig

from blf import failpoint
from blf.console import bar as progress_bar
from blf.data import Split
from blf.eval import signals
from blf.eval.attacks import GRADIENT_BASED, GRADIENT_FREE, PAPER, PGD
from blf.eval.robustness import attacked_correct, percent
from blf.eval.signals.another_family import only_other_family
from blf.eval.signals.unavailable_gradients import input_gradients as masked_input_gradients
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


def _paper_gradient(name: str) -> bool:
    """The paper's gradient-based attacks (PGD, APGD): the ones whose numbers a masked gradient
    would inflate. Surrogates and adaptive attacks are judged by attack_gap instead."""
    return name in GRADIENT_BASED and name in PAPER


def gradient_free_vs_gradient(outcomes: list[tuple[dict, torch.Tensor]], signal: DictConfig,
                              extra: tuple[float, str, torch.Tensor] | None = None) -> Verdict:
    """The signal `another_family_wins` (eval/signals/another_family.py) on the recorded outcomes:
    examples broken by a gradient-free attack but by none of the paper's gradient attacks at that
    eps, against its `max_share`. `extra`: (eps, name, outcome on the first examples) of a
    gradient-free attack run by this check, compared on those examples."""
    max_share = signal.max_share
    by_eps = defaultdict(lambda: {"free": [], "grad": []})
    for row, correct in outcomes:
        family = "free" if row["attack"] in GRADIENT_FREE else "grad" if _paper_gradient(row["attack"]) else None
        if family:
            by_eps[round(row["eps"], 10)][family].append((row["attack"], correct))
    if extra is not None:
        eps, name, correct = extra
        by_eps[round(eps, 10)]["free"].append((name, correct))
    compared = {e: g for e, g in by_eps.items() if g["free"] and g["grad"]}
    if not compared:
        return Verdict("gradient_free_vs_gradient", "skipped", None, max_share,
                       "needs a gradient-free (square, spsa) and a gradient attack of the paper (pgd, apgd) at the same eps")
    worst_share, worst_detail = -1.0, ""
    for eps, group in sorted(compared.items()):
        n = min(len(c) for _, c in group["free"] + group["grad"])  # the check's own Square ran on the first examples
        broke: dict[str, torch.Tensor] = {}
        for name, correct in group["free"] + group["grad"]:
            broke[name] = broke.get(name, torch.zeros(n, dtype=torch.bool)) | ~correct[:n].cpu()
        missed = only_other_family(broke, n)
        share = percent(missed)
        if share > worst_share:
            free = "+".join(sorted({a for a, _ in group["free"]}))
            grad = "+".join(sorted({a for a, _ in group["grad"]}))
            worst_share = share
            worst_detail = (f"eps={eps:g}: {int(missed.sum())} of {missed.numel()} examples broken by {free} "
                            f"but not by {grad}")
    remedy = "" if worst_share <= max_share else ": the gradients mislead the attack; trust the adaptive worst case"
    return _verdict("gradient_free_vs_gradient", worst_share <= max_share, worst_share, max_share, worst_detail + remedy)


def input_gradients(classifier: Classifier, subset: Split, batch_size: int, device, signal: DictConfig) -> Verdict:
    """The signal `unavailable_gradients` (eval/signals/unavailable_gradients.py) at the clean
    input: the share (%) of correctly classified examples whose cross-entropy input gradient is
    not finite, zero, vanishing next to the gradient of the pre-logit margin, or reversed against
    it (ascending the loss would move away from misclassification, as BLF's gradient does beyond
    z*), against its `max_share`."""
    max_share, relative_floor = signal.max_share, signal.relative_floor
    counts = {"non_finite": 0, "zero": 0, "vanishing": 0, "reversed": 0}
    correct = 0
    with frozen(classifier):
        for x, y in subset.batches(batch_size, device):
            with torch.no_grad():
                right = (classifier(x).argmax(1) == y).cpu()
            correct += int(right.sum())
            for name, flags in masked_input_gradients(classifier, x, y, relative_floor).items():
                counts[name] += int((flags & right).sum())
    if correct == 0:
        return Verdict("input_gradients", "skipped", None, max_share, "no correctly classified example")
    share = 100.0 * sum(counts.values()) / correct
    detail = (f"of {correct} correctly classified examples: " + ", ".join(f"{n} {k.replace('_', '-')}" for k, n in counts.items())
              + f" (vanishing: below {relative_floor:g} x the pre-logit margin's gradient)")
    if share > max_share:
        detail += "; masked gradients: use BPDA, margin losses on the pre-logits or Square"
    return _verdict("input_gradients", share <= max_share, share, max_share, detail)


def _restarts(row: dict) -> int:
    return int(row.get("attack.restarts") or 1)


def pgd_name(row: dict) -> str:
    """A PGD setting as the verdicts name it: `PGD-40`, `PGD-10 x 5 restarts`, `PGD-40 targeted`."""
    restarts = _restarts(row)
    return (f"PGD-{row['attack.nb_iter']}" + (f" x {restarts} restarts" if restarts > 1 else "")
            + (" targeted" if row.get("attack.targeted") is True else ""))


@dataclass(frozen=True)
class EvaluatedPGD:
    """The PGD the checks that re-run PGD judge: its record at its largest eps with the recorded
    per-example outcome, and the other PGD settings recorded for the checkpoint, named."""

    row: dict
    outcome: torch.Tensor
    others: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return pgd_name(self.row)

    def also(self) -> str:
        """What the verdicts add where the checkpoint holds other PGD settings."""
        return f"; the weakest PGD recorded (also recorded: {', '.join(self.others)})" if self.others else ""


def pgd_settings(outcomes: list[tuple[dict, torch.Tensor]]) -> EvaluatedPGD | None:
    """Of the PGD settings recorded for the checkpoint (records that differ in an `attack.*`
    setting), the weakest, fewest iterations x restarts, at its largest eps; a tie goes to the
    newer record (the evaluation just run). None where PGD did not run at an eps > 0."""
    largest = {}  # settings -> (index, row, outcome) at the settings' largest eps
    for index, (row, correct) in enumerate(outcomes):
        if row["attack"] != "pgd" or row["eps"] <= 0:
            continue
        settings = tuple(sorted((k, str(v)) for k, v in row.items() if k.startswith("attack.")))
        if settings not in largest or row["eps"] >= largest[settings][1]["eps"]:
            largest[settings] = (index, row, correct)
    if not largest:
        return None
    found = sorted(largest.values(), key=lambda item: (item[1]["attack.nb_iter"] * _restarts(item[1]), -item[1]["eps"],
                                                       -item[0]))
    (_, row, correct), rest = found[0], found[1:]
    return EvaluatedPGD(row, correct, tuple(f"{pgd_name(r)} at eps={r['eps']:g}" for _, r, _ in rest))


def _pgd_from(row: dict, **changes) -> PGD:
    """PGD with a record's settings (as evaluated), `changes` applied."""
    settings = {"nb_iter": row["attack.nb_iter"], "eps_iter": row["attack.eps_iter"],
                "rand_init": row.get("attack.rand_init", True), "restarts": _restarts(row)}
    if row.get("attack.targeted") is True:
        settings.update(targeted=True, target=row.get("attack.target") or "random")
    return PGD([row["eps"]], **{**settings, **changes})


def pgd_convergence(classifier: Classifier, subset: Split, evaluated: EvaluatedPGD | None, cfg: DictConfig,
                    batch_size: int, device, seed: int, progress: bool = False) -> Verdict:
    """PGD as evaluated (pgd_settings: the weakest recorded) at its largest eps (its recorded
    outcome) vs, per example, the union of `iter_factor` x the iterations with `restarts`
    restarts and each step size in `step_factors`."""
    if evaluated is None:
        return Verdict("pgd_convergence", "skipped", None, cfg.tolerance, "PGD did not run at an eps > 0")
    row, recorded = evaluated.row, evaluated.outcome
    subset = subset.first(min(len(subset), cfg.max_n))
    variants = [_pgd_from(row, nb_iter=row["attack.nb_iter"] * cfg.iter_factor, restarts=cfg.restarts)]
    variants += [_pgd_from(row, eps_iter=row["attack.eps_iter"] * f) for f in cfg.step_factors]
    survived = recorded[: len(subset)].clone()
    with frozen(classifier), _bar("PGD convergence", len(variants) * len(subset), progress) as bar:
        for attack in variants:
            torch.manual_seed(seed)
            survived &= attacked_correct(classifier, subset, attack, row["eps"], batch_size, device, bar)
    base, strong = percent(recorded[: len(subset)]), percent(survived)
    drop = base - strong
    steps = ", ".join(f"step {row['attack.eps_iter'] * f:g}" for f in cfg.step_factors)
    detail = (f"eps={row['eps']:g}, {len(subset)} examples: {evaluated.name} (as evaluated) {base:.2f}%, with "
              f"PGD-{variants[0].nb_iter} x {cfg.restarts} restarts and {steps}: {strong:.2f}% (drop {drop:.2f} points)"
              f"{evaluated.also()}")
    if drop > cfg.tolerance:
        detail += ": PGD has not converged; raise attack.pgd.nb_iter or restarts"
    return _verdict("pgd_convergence", drop <= cfg.tolerance, drop, cfg.tolerance, detail)


def square_at(classifier: Classifier, subset: Split, eps: float, cfg: DictConfig, batch_size: int, device, seed: int,
              progress: bool = False) -> torch.Tensor:
    """Per-example outcome of Square (margin loss, `n_queries`) on the first `max_n` examples."""
    from blf.eval.attacks import Square

    subset = subset.first(min(len(subset), cfg.max_n))
    attack = Square([eps], n_queries=cfg.n_queries, p_init=0.8, n_restarts=1, loss="margin", seed=seed)
    torch.manual_seed(seed)
    with frozen(classifier), _bar(f"Square at eps={eps:g}", len(subset), progress) as bar:
        return attacked_correct(classifier, subset, attack, eps, batch_size, device, bar)


def saturation(classifier: Classifier, subset: Split, evaluated: EvaluatedPGD | None, cfg: DictConfig,
               batch_size: int, device, seed: int, progress: bool = False) -> Verdict:
    """Share (%) of examples whose largest |pre-logit| lies beyond the head's saturation point,
    on clean inputs and on PGD's adversarial inputs (pgd_settings: the weakest PGD recorded, as
    evaluated, at its largest eps)."""
    from blf.eval.attacks.surrogate import bounded_function, saturation_point

    function = bounded_function(classifier.head)
    if function is None:
        return Verdict("saturation", "skipped", None, cfg.max_share, f"head {classifier.head.name} does not saturate")
    point = saturation_point(function)
    subset = subset.first(min(len(subset), cfg.max_n))
    shares, means = {}, {}
    attack = None if evaluated is None else _pgd_from(evaluated.row)
    with frozen(classifier):
        for which in ("clean", "adversarial"):
            if which == "adversarial" and attack is None:
                continue
            torch.manual_seed(seed)
            beyond, total = 0, 0.0
            for x, y in subset.batches(batch_size, device):
                if which == "adversarial":
                    x = attack.perturb(classifier, x, y, attack.eps[0])
                with torch.no_grad():
                    top = classifier.network(x).float().abs().amax(dim=1)
                beyond += int((top > point).sum())
                total += float(top.sum())
            shares[which], means[which] = percent_of(beyond, len(subset)), total / len(subset)
    worst = max(shares.values())
    detail = (f"{classifier.head.name}'s saturation point |z| = {point:.4g}: "
              + "; ".join(f"{w} {shares[w]:.1f}% beyond (mean max |z| {means[w]:.2f})" for w in shares)
              + ("" if evaluated is None else f" (adversarial: {evaluated.name} at eps={evaluated.row['eps']:g}, "
                                              f"{len(subset)} examples{evaluated.also()})"))
    if worst > cfg.max_share:
        detail += "; there the head's gradient vanishes or turns: gradient masking suspected, trust the adaptive worst case"
    return _verdict("saturation", worst <= cfg.max_share, worst, cfg.max_share, detail)


def percent_of(count: int, total: int) -> float:
    return 100.0 * count / total if total else 0.0


def attack_gap(outcomes: list[tuple[dict, torch.Tensor]], tolerance: float) -> Verdict:
    """Largest gap (points), over the eps where an adaptive attack ran, between the paper's best
    attack and the strongest adaptive attack alone. Alone: two honest attacks together break a
    few more examples than either (their worst case is an ensemble), which is no sign of masking;
    one attack far stronger than the paper's is."""
    by_eps = defaultdict(list)
    for row, correct in outcomes:
        by_eps[round(row["eps"], 10)].append((row["attack"], correct))
    worst_gap, worst_detail = None, ""
    for eps, group in sorted(by_eps.items()):
        paper = {a: percent(c) for a, c in group if a in PAPER}
        adaptive = {a: percent(c) for a, c in group if a not in PAPER}
        if not paper or not adaptive or eps == 0:
            continue
        best_paper, strongest = min(paper, key=paper.get), min(adaptive, key=adaptive.get)
        gap = paper[best_paper] - adaptive[strongest]
        if worst_gap is None or gap > worst_gap:
            worst_gap = gap
            combined = percent(torch.stack([c for _, c in group]).all(dim=0))
            worst_detail = (f"eps={eps:g}: {best_paper} {paper[best_paper]:.2f}%, {strongest} {adaptive[strongest]:.2f}% "
                            f"(worst case over all {combined:.2f}%)")
    if worst_gap is None:
        return Verdict("attack_gap", "skipped", None, tolerance, "no adaptive attack ran beside the paper's at an eps > 0")
    if worst_gap > tolerance:
        worst_detail += (": the paper's attack is misled by this model (gradient masking); report the adaptive worst "
                         "case, not the paper's attack")
    return _verdict("attack_gap", worst_gap <= tolerance, worst_gap, tolerance, worst_detail)


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
        *, batch_size: int, device, seed: int, progress: bool = False, signal_settings: DictConfig | None = None) -> list[Verdict]:
    """Every check, on the evaluation subset and the per-example outcomes recorded for it; the two
    that are signals of attack failure with conf/signals.yaml's tests and thresholds."""
    found = signal_settings or signals.settings()
    rows = [row for row, _ in outcomes]
    evaluated = pgd_settings(outcomes)
    verdicts = [monotonic(rows, cfg.monotonic_tolerance),
                unbounded_attack(classifier, subset, cfg.unbounded, batch_size, device, seed, progress)]
    failpoint.reach("integrity")  # halfway through the checks
    extra = None
    # Square at the largest eps PGD ran at (whichever setting), where no gradient-free attack ran there.
    eps = max((r["eps"] for r in rows if r["attack"] == "pgd" and r["eps"] > 0), default=None)
    if eps is not None and not any(r["attack"] in GRADIENT_FREE and abs(r["eps"] - eps) < 1e-9 for r in rows):
        extra = (eps, "square", square_at(classifier, subset, eps, cfg.gradient_free, batch_size, device, seed, progress))
    return verdicts + [
        gradient_free_vs_gradient(outcomes, found.another_family_wins, extra),
        input_gradients(classifier, subset, batch_size, device, found.unavailable_gradients),
        pgd_convergence(classifier, subset, evaluated, cfg.convergence, batch_size, device, seed, progress),
        saturation(classifier, subset, evaluated, cfg.saturation, batch_size, device, seed, progress),
        attack_gap(outcomes, cfg.attack_gap_tolerance),
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
