"""`Audit`: what `blf.audit` found, as a card a reviewer can sign (Markdown), as data (JSON, with
every per-example outcome and flag) and as a figure."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from blf.audit import verdicts as V
from blf.audit.procedure import EpsResult
from blf.eval import signals as S
from blf.run import storage
from blf.run.records import encode_outcome


@dataclass
class Audit:
    """The audit of one model at each eps (blf.audit.audit)."""

    subject: dict
    settings: dict
    clean: torch.Tensor
    results: list[EpsResult]
    cfg: object = field(repr=False)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)  # the model's contract broken (contract.py): (a) not reliable

    # --- the answers --------------------------------------------------------------------------

    def answers(self, result: EpsResult) -> tuple[V.Answer, V.Answer]:
        """(a) the audited number, (b) the reported number, at one eps (verdicts.py)."""
        return V.audited(result, self.cfg, self.settings["budget"], self.caveats), V.reported(result, self.cfg)

    def passed(self) -> bool:
        """What --strict asks: at every attacked eps, (a) reliable and (b) matches."""
        return all(a.verdict == "reliable" and b.verdict == "matches"
                   for a, b in (self.answers(r) for r in self.results if r.eps > 0))

    def at(self, eps: float) -> EpsResult:
        found = [r for r in self.results if abs(r.eps - eps) < 1e-9]
        if not found:
            raise KeyError(f"eps={eps} was not audited; allowed: {', '.join(f'{r.eps:g}' for r in self.results)}")
        return found[0]

    def accuracy(self, eps: float) -> float:
        """The audited accuracy (%) at `eps`."""
        return 100.0 * float(self.at(eps).audited.mean())

    def reported_accuracy(self, eps: float) -> float:
        return 100.0 * float(self.at(eps).reported.mean())

    # --- as data ------------------------------------------------------------------------------

    def summary(self) -> dict:
        """The card's numbers as flat keys (W&B summary keys): audit/<eps>/<what>."""
        out = {"audit/clean": 100.0 * float(self.clean.mean())}
        for r in self.results:
            if r.eps == 0:
                continue
            a, b = self.answers(r)
            key = f"audit/eps={r.eps:g}"
            out |= {f"{key}/reported": 100.0 * float(r.reported.mean()), f"{key}/audited": 100.0 * float(r.audited.mean()),
                    f"{key}/audited_verdict": a.verdict, f"{key}/reported_verdict": b.verdict}
            out |= {f"{key}/flagged/{name}": 100.0 * fix.flagged / len(r.audited) for name, fix in r.fixes.items()}
        return out

    def to_dict(self) -> dict:
        return {"subject": self.subject, "settings": self.settings, "seconds": self.seconds, "notes": self.notes,
                "caveats": self.caveats,
                "clean": {"accuracy": 100.0 * float(self.clean.mean()), "outcome": outcome(self.clean)},
                "eps": [self.eps_dict(r) for r in self.results]}

    def eps_dict(self, r: EpsResult) -> dict:
        a, b = self.answers(r)
        n = len(r.audited)
        return {
            "eps": r.eps, "n": n, "seconds": r.seconds,
            "reported": {"attack": self.settings["reported"], **interval_dict(r.reported), "outcome": outcome(r.reported)},
            "audited": {**interval_dict(r.audited), "outcome": outcome(r.audited), "verdict": a.verdict, "reason": a.reason},
            "reported_verdict": {"verdict": b.verdict, "reason": b.reason},
            "attacks": {name: 100.0 * float(s.mean()) for name, s in r.attacks.items()},
            "indicators": {name: {"flagged": fix.flagged, "share": 100.0 * fix.flagged / n, "fix": S.REMEDIES[name],
                                  "ran": fix.attacks, "before": fix.before, "after": fix.after,
                                  "still_flagged": fix.still, "threshold": self.cfg.signals[name].max_share,
                                  "examples": encode_outcome(r.flags[name].numpy())}
                           for name, fix in r.fixes.items()},
            "budget": r.budget, "skipped": r.skipped,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, default=float)

    # --- as a card ----------------------------------------------------------------------------

    def to_markdown(self) -> str:
        s = self.settings
        lines = [f"# Audit of {self.subject.get('name') or self.subject['model']}", "",
                 f"{s['n']} examples{' (' + s['data'] + ')' if s.get('data') else ''}, budget `{s['budget']}`, seed "
                 f"{s['seed']}, device {s['device']}; reported attack: {s['reported']}. Accuracy (%) with 95% intervals; "
                 f"clean {100.0 * float(self.clean.mean()):.1f}. Took {self.seconds:.0f} s.", "",
                 "| eps | reported | audited (worst case after the fixes) | (a) the audited number | (b) the reported number |",
                 "|---|---|---|---|---|"]
        for r in self.results:
            if r.eps == 0:
                continue
            a, b = self.answers(r)
            lines.append(f"| {r.eps:g} | {V.interval(r.reported).text()} | {V.interval(r.audited).text()} | "
                         f"**{a.verdict}**: {a.reason} | **{b.verdict}** {b.reason} |")
        for r in self.results:
            if r.eps == 0:
                continue
            n = len(r.audited)
            lines += ["", f"## eps = {r.eps:g}: indicators of attack failure (Pintor et al. 2022)", "",
                      "| indicator | flagged on the reported attack | fix | ran | accuracy before | after | still flagged | threshold |",
                      "|---|---|---|---|---|---|---|---|"]
            for name, fix in r.fixes.items():
                ran = ", ".join(fix.attacks) if fix.attacks else "-"
                before = "-" if fix.before is None or not fix.attacks else f"{fix.before:.1f}"
                after = "-" if fix.after is None or not fix.attacks else f"{fix.after:.1f}"
                lines.append(f"| {S.TITLES[name]} | {100.0 * fix.flagged / n:.1f}% ({fix.flagged}) | {S.REMEDIES[name]} | {ran} | "
                             f"{before} | {after} | {100.0 * fix.still / n:.1f}% | {self.cfg.signals[name].max_share:g}% |")
            attacks = ", ".join(f"{k} {100.0 * float(v.mean()):.1f}" for k, v in r.attacks.items())
            lines += ["", f"Each attack alone (on the examples it tried; the others as they stood): {attacks}."]
            if r.budget:
                lines.append(f"Budget check: {r.budget['doubled_steps']} steps x {r.budget['doubled_restarts']} restarts on "
                             f"{r.budget['tried']} examples still standing broke {r.budget['broken']} more "
                             f"({r.budget['drop']:.2f} points).")
            for note in r.skipped:
                lines.append(f"Skipped: {note}.")
        for note in self.notes:
            lines += ["", f"Note: {note}"]
        return "\n".join(lines) + "\n"

    def write(self, stem: Path) -> list[Path]:
        """The card as `<stem>.md`, `.json`, `.png` and `.pdf`, written all at once (storage.publish)."""
        import matplotlib.pyplot as plt

        stem = Path(stem)
        files = {stem.with_suffix(".md"): self.to_markdown(), stem.with_suffix(".json"): self.to_json() + "\n"}
        figure = self.figure()
        for suffix in ("png", "pdf"):
            buffer = io.BytesIO()
            figure.savefig(buffer, format=suffix, dpi=150, bbox_inches="tight")
            files[stem.with_suffix(f".{suffix}")] = buffer.getvalue()
        plt.close(figure)
        return storage.publish(stem.parent, {path.name: content if isinstance(content, bytes) else content.encode()
                                             for path, content in files.items()})

    def figure(self):
        """Left: reported and audited accuracy against eps with their intervals. Right: the
        share of examples each indicator flagged on the reported attack, per eps."""
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        attacked = [r for r in self.results if r.eps > 0]
        eps = [0.0, *[r.eps for r in attacked]]
        for label, key, style in (("reported", "reported", "--o"), ("audited", "audited", "-o")):
            values = [V.interval(self.clean)] + [V.interval(getattr(r, key)) for r in attacked]
            left.plot(eps, [v.estimate for v in values], style, label=f"{label} ({self.settings['reported']})"
                      if key == "reported" else "audited (worst case after the fixes)")
            left.fill_between(eps, [v.low for v in values], [v.high for v in values], alpha=0.2)
        left.set(xlabel="eps (L-inf)", ylabel="accuracy (%)", ylim=(0, 100), title=self.subject.get("name") or "")
        left.legend(fontsize=8)
        width = 0.8 / max(1, len(attacked))
        for k, r in enumerate(attacked):
            shares = [100.0 * r.fixes[name].flagged / len(r.audited) for name in S.NAMES]
            right.bar([i + k * width for i in range(len(S.NAMES))], shares, width, label=f"eps={r.eps:g}")
        right.set_xticks([i + 0.4 - width / 2 for i in range(len(S.NAMES))], [S.TITLES[n] for n in S.NAMES],
                         rotation=30, ha="right", fontsize=8)
        right.set(ylabel="examples flagged (%)", title="indicators of attack failure")
        if attacked:
            right.legend(fontsize=8)
        fig.tight_layout()
        return fig


def outcome(survival: torch.Tensor):
    """Per-example survival: hex bits where each example is robust or broken, else the shares."""
    values = survival.numpy()
    if ((values == 0) | (values == 1)).all():
        return encode_outcome(values == 1)
    return [round(float(v), 4) for v in values]


def interval_dict(survival: torch.Tensor) -> dict:
    found = V.interval(survival)
    return {"accuracy": found.estimate, "low": found.low, "high": found.high, "method": found.method}
