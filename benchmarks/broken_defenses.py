"""The audit against AutoAttack on the zoo of broken defenses (tests/broken_defenses.py), side by
side in one run: per member, the reported number (the paper's MNIST PGD-40), the audited number
and verdict (`--budget standard`), AutoAttack standard, the member's reference attack, and the
seconds each took, on the first `--n` MNIST test images. Writes bench/broken_defenses.json
(one record per member and eps, tidy) and prints the Markdown table docs/evaluation.md shows.

    python benchmarks/broken_defenses.py [--n 200] [--eps 0.1] [--members control,shattered]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import blf  # noqa: E402
import broken_defenses as B  # noqa: E402
from blf.eval.attacks import AutoAttackStandard  # noqa: E402
from blf.run import storage  # noqa: E402


def timed(work):
    start = time.perf_counter()
    value = work()
    return value, time.perf_counter() - start


def autoattack(member: B.Member, x, y, eps: float) -> torch.Tensor:
    attack = AutoAttackStandard([eps], "standard", seed=0)
    points = torch.cat([attack.perturb(member.model, xb, yb, eps) for xb, yb in zip(x.split(500), y.split(500))])
    return B.survival(member.model, points, y, draws=64 if member.randomized else 1)


def row(member: B.Member, x, y, eps: float) -> dict:
    card, audit_s = timed(lambda: blf.audit(member.model, x, y, [eps], dataset="mnist", budget="standard", progress=False))
    result = card.at(eps)
    audited, _ = card.answers(result)
    auto, auto_s = timed(lambda: autoattack(member, x, y, eps))
    reference, reference_s = timed(lambda: member.reference_attack(x, y, eps))
    return {"member": member.name, "eps": eps, "n": len(y), "clean": B.clean_accuracy(member, x, y),
            "reported": card.reported_accuracy(eps), "audited": card.accuracy(eps), "verdict": audited.verdict,
            "reason": audited.reason, "autoattack": 100.0 * float(auto.mean()), "reference": 100.0 * float(reference.mean()),
            "reference_attack": member.reference, "audit_s": audit_s, "autoattack_s": auto_s, "reference_s": reference_s}


def table(rows: list[dict]) -> str:
    lines = ["| defense | eps | reported PGD-40 | audited | verdict | AutoAttack standard | reference attack | "
             "audit s | AutoAttack s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['member']} | {r['eps']:g} | {r['reported']:.1f} | {r['audited']:.1f} | {r['verdict']} | "
                     f"{r['autoattack']:.1f} | {r['reference']:.1f} ({r['reference_attack']}) | {r['audit_s']:.0f} | "
                     f"{r['autoattack_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--eps", type=float, nargs="+", default=[0.1])
    parser.add_argument("--members", default=",".join(B.NAMES))
    parser.add_argument("--data", type=Path, default=REPO / "data")
    parser.add_argument("--cache", type=Path, default=REPO / "bench" / "zoo")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "broken_defenses.json")
    args = parser.parse_args(argv)
    names = args.members.split(",")
    unknown = sorted(set(names) - set(B.NAMES))
    if unknown:
        parser.error(f"--members {','.join(unknown)}: unknown; allowed: {', '.join(B.NAMES)}")
    members, x, y = B.zoo(args.cache, args.data)
    x, y = x[: args.n], y[: args.n]
    rows = []
    for member in tqdm([m for m in members if m.name in names], desc="zoo", unit="defense"):
        for eps in args.eps:
            rows.append(row(member, x, y, eps))
            tqdm.write(table(rows[-1:]).splitlines()[-1])
            storage.write_text(args.out, json.dumps({"machine": {"cpu": platform.processor() or platform.machine(),
                                                                  "threads": torch.get_num_threads()},
                                                      "rows": rows}, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
