"""Figures, computed from functions (Fig. 2) or from record frames (accuracy curves).

Each plotting function draws into the axes it is given (or into a new figure) and returns the
Figure; `save` writes a figure as PNG and PDF. The study report calls both, so a notebook can
draw the same figure into a panel of its own.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from blf.eval.attacks import PAPER
from blf.nn import heads
from blf.report import labels, tables
from blf.run import storage
from blf.run.records import WORST_CASE, Kind, same_eps

# Legends spell the hyper-parameters as the paper does.
SYMBOLS = {name: f"${symbol}$" for name, symbol in labels.LATEX_SYMBOLS.items()}


def save(fig: Figure, path: Path, close: bool = False) -> list[Path]:
    """Write `fig` to `path` with the suffixes .png and .pdf (atomically), and return the files;
    `close` releases the figure afterwards (the report draws many)."""
    path = Path(path)
    written = []
    for suffix in (".png", ".pdf"):
        target = path.with_suffix(suffix)
        buffer = io.BytesIO()
        # No creation date in the PDF: the same records give the same files, byte for byte.
        fig.savefig(buffer, format=suffix[1:], dpi=150, bbox_inches="tight",
                    metadata={"CreationDate": None} if suffix == ".pdf" else None)
        storage.write_bytes(target, buffer.getvalue())
        written.append(target)
    if close:
        plt.close(fig)
    return written


def _root(ax: Axes) -> Figure:
    # An axes of a subfigure belongs to the subfigure; callers get the Figure they can save.
    return ax.get_figure(root=True)


def _given_axes(axes: Axes | Iterable[Axes], needed: int, what: str, projection: str | None = None) -> list[Axes]:
    """The caller's axes as a flat list, at least `needed` of them, all of one figure."""
    given = [axes] if isinstance(axes, Axes) else list(np.asarray(axes, dtype=object).flat)
    if len(given) < needed or not all(isinstance(ax, Axes) for ax in given):
        raise ValueError(f"axes={axes!r} cannot hold {what}; allowed: {needed} or more matplotlib Axes "
                         f"(e.g. plt.subplots(1, {needed})[1])")
    if len({id(_root(ax)) for ax in given}) > 1:
        raise ValueError(f"axes={axes!r} belong to different figures; allowed: axes of one figure")
    if projection and any(ax.name != projection for ax in given[:needed]):
        raise ValueError(f"axes of projection {sorted({ax.name for ax in given[:needed]})} cannot hold {what}; "
                         f"allowed: axes made with projection={projection!r}")
    return given


def blf_vs_tanh(*, z_range: float = 8.0, ax: Axes | None = None) -> Figure:
    """Fig. 2: BLF and tanh, with BLF's extrema (Theorem 3) marked."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.0, 3.4))
    z = torch.linspace(-z_range, z_range, 2001, dtype=torch.float64)
    z_star, g_star = heads.blf_extremum()
    ax.plot(z, heads.blf(z), label="BLF $g(z)$ (eq. 5)", color="C3", lw=2)
    ax.plot(z, torch.tanh(z), label="tanh$(z)$", color="C0", lw=1.5, ls="--")
    for sign in (1, -1):
        ax.axhline(sign, color="grey", lw=0.6, ls=":")
        point = (sign * z_star, sign * g_star)
        ax.plot(*point, "o", color="C3")
        ax.annotate(f"$z^*$={point[0]:.3f}, $g(z^*)$={point[1]:.3f}", point, fontsize=8,
                    xytext=(2.6, 0.45) if sign > 0 else (-7.6, -0.55), arrowprops={"arrowstyle": "->", "lw": 0.6})
    ax.set_ylim(-1.45, 1.45)
    ax.set_xlabel("$z$")
    ax.set_ylabel("output")
    ax.set_title("Fig. 2: BLF vs tanh (BLF has finite extrema)", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _root(ax)


# An attack's line style, the same in every panel: PGD solid, the worst case dotted, others dashed.
ATTACK_STYLES = {"pgd": "-", WORST_CASE: ":"}
OTHER_STYLES = ["--", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 2, 5, 2))]


def _curves(ax: Axes, curve: pd.DataFrame, per255: bool) -> None:
    """One line per (method, attack as tables.attack_labels names it): the method's colour, the
    attack's line style; two evaluations of one attack are two lines, never their mean."""
    curve = curve.assign(label=curve.apply(lambda row: labels.label(row, SYMBOLS), axis=1))
    curve = curve.assign(shown=tables.attack_labels(curve, ["label"]))
    several_attacks = curve["shown"].nunique() > 1
    methods = sorted(curve["label"].unique(), key=lambda label: (labels.method_key(label), label))
    others = sorted(a for a in curve["attack"].unique() if a not in ATTACK_STYLES)
    styles = {**ATTACK_STYLES, **{a: OTHER_STYLES[i % len(OTHER_STYLES)] for i, a in enumerate(others)}}
    for (label, shown), group in sorted(curve.groupby(["label", "shown"]), key=lambda item: (labels.method_key(item[0][0]), item[0])):
        stats = group.groupby("eps")["accuracy"].agg(["mean", "std"]).reset_index()
        x = stats["eps"] * (255 if per255 else 1)
        ax.errorbar(x, stats["mean"], yerr=stats["std"].fillna(0.0), marker="o", ms=3, capsize=2,
                    ls=styles[group["attack"].iloc[0]], color=f"C{methods.index(label) % 10}",
                    label=f"{label}, {shown}" if several_attacks else label)
    ax.set_xlabel("$\\varepsilon$ (/255)" if per255 else "$\\varepsilon$")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    # Many lines: the legend beside the panel rather than over the curves.
    many = len(ax.containers) > 6
    ax.legend(fontsize=6, **({"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)} if many else {}))


# The attacks a figure draws as lines: the paper's (and Fig. 5's tanh surrogate). The adaptive
# attacks enter the figure through the worst case; the curve tables list each of them.
DRAWN = (*PAPER, "pgd_tanh_surrogate")


def with_worst_case(df: pd.DataFrame) -> pd.DataFrame:
    """The paper's attacks' rows and every worst-case row: each method's worst case is one dotted
    line below its attacks' lines wherever it was recorded, over every attack recorded at that eps
    (the adaptive ones included; the curve table names them per cell), and is labelled so."""
    drawn = df[((df["kind"] == Kind.ROBUSTNESS) & df["attack"].isin(DRAWN)) | (df["kind"] == Kind.WORST_CASE)]
    if "attacks" not in drawn:
        return drawn
    # One line per method, whatever set of attacks each eps had.
    return drawn.assign(attacks=drawn["attacks"].where(drawn["kind"] != Kind.WORST_CASE, "every attack at each eps"))


def accuracy_panels(df: pd.DataFrame, facets: list[str], *, title: str = "",
                    axes: Axes | Iterable[Axes] | None = None) -> Figure:
    """Figs. 3, 4, 5, 7: one panel per facet combination (e.g. model x setting), accuracy
    against eps, one line per method (and attack), mean and std over seeds. `axes`: one per
    panel, in the paper's panel order (axes left over are switched off)."""
    curve = labels.annotate(with_worst_case(df))
    panels = [((k,) if not isinstance(k, tuple) else k, g) for k, g in curve.groupby(facets)] if facets else [((), curve)]
    panels.sort(key=lambda item: [labels.facet_key(f, v) for f, v in zip(facets, item[0])])
    own = axes is None
    if own:
        cols = min(len(panels), 2)
        rows = -(-len(panels) // cols)
        axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)[1]
    axes = _given_axes(axes, len(panels), f"{len(panels)} panels ({', '.join(facets) or 'one panel'})")
    for ax, (key, group) in zip(axes, panels):
        _curves(ax, group, per255=set(group["dataset"]) == {"cifar10"})
        ax.set_title(", ".join(labels.facet_label(f, k) for f, k in zip(facets, key)), fontsize=9)
    for ax in axes[len(panels):]:
        ax.axis("off")
    return _finish(axes[0], title, own)


def _finish(ax: Axes, title: str, own: bool) -> Figure:
    # A caller's figure keeps the caller's layout; only a figure made here is laid out here.
    if title or own:
        ax.figure.suptitle(title, fontsize=10)
    if own:
        ax.figure.tight_layout()
    return _root(ax)


def norms_vs_accuracy(df: pd.DataFrame, eps: float, *, title: str = "",
                      axes: Iterable[Axes] | None = None) -> Figure:
    """Fig. 1: mean L2 (first axes) and L-infinity (second) norms of the logits gamma*g(z) (and
    of the pre-logits z for tanh and BLF) against PGD accuracy at `eps`, one point per run."""
    annotated = labels.annotate(df)
    robust = annotated[(annotated["kind"] == Kind.ROBUSTNESS) & (annotated["attack"] == "pgd") & same_eps(annotated["eps"], eps)]
    norms = annotated[annotated["kind"] == Kind.NORMS]
    # One frame holds every kind of record: the norm rows carry an empty accuracy column.
    merged = norms.drop(columns=["accuracy"], errors="ignore").merge(robust[["run_dir", "accuracy"]], on="run_dir")
    own = axes is None
    if own:
        axes = plt.subplots(2, 1, figsize=(5.2, 6.4), sharey=True)[1]
    axes = _given_axes(axes, 2, "the L2 and L-infinity panels")
    for ax, p in zip(axes, ("l2", "linf")):
        for m, group in sorted(merged.groupby("method"), key=lambda item: labels.method_key(item[0])):
            ax.scatter(group[f"logit_{p}"], group["accuracy"], label=m, s=18)
            if m in ("tanh", "BLF"):
                ax.scatter(group[f"prelogit_{p}"], group["accuracy"], label=f"pre-logits of {m}", s=18, marker="x")
        ax.set_xlabel(f"mean {'L2' if p == 'l2' else 'L-infinity'} norm")
        ax.set_ylabel(f"accuracy (%), PGD eps={eps * 255:.0f}/255")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _finish(axes[0], title, own)


def budget_sweep(df: pd.DataFrame, *, title: str = "", axes: Iterable[Axes] | None = None) -> Figure | None:
    """PGD's accuracy against its steps (first axes, one restart) and against its restarts
    (second, at the sweep's restart_steps), one line per setting (blf.eval.budget_sweep), the mean
    over its seeds with their standard deviation: flat lines mean the evaluated PGD had converged.
    None where the records hold no sweep."""
    sweep = labels.annotate(df)
    sweep = sweep[sweep["kind"] == Kind.BUDGET_SWEEP] if "kind" in sweep else sweep.iloc[0:0]
    if sweep.empty:
        return None
    own = axes is None
    if own:
        axes = plt.subplots(1, 2, figsize=(9.0, 3.6), sharey=True)[1]
    axes = _given_axes(axes, 2, "the steps and restarts panels")
    # One line per setting: the mean over its seeds, their standard deviation as error bars.
    sweep = sweep.assign(_name=sweep.apply(lambda row: labels.label(row, {"lam": "lambda"}), axis=1))
    settings = sorted(sweep.groupby(["_name", "model", "setting"]), key=lambda item: labels.method_key(item[1]["method"].iloc[0]))
    for (name, _, _), rows in settings:
        seeds = rows["run_dir"].nunique()
        name = f"{name}, {seeds} seeds" if seeds > 1 else name
        by_steps = rows[rows["attack.restarts"] == 1].groupby("attack.nb_iter")["accuracy"].agg(["mean", "std"])
        by_restarts = (rows[rows["attack.nb_iter"] == rows["attack.restart_steps"]]
                       .groupby("attack.restarts")["accuracy"].agg(["mean", "std"]))
        line = axes[0].errorbar(by_steps.index, by_steps["mean"], yerr=by_steps["std"].fillna(0), marker="o", capsize=2,
                                label=name)[0]
        axes[1].errorbar(by_restarts.index, by_restarts["mean"], yerr=by_restarts["std"].fillna(0), marker="o", capsize=2,
                         color=line.get_color(), label=name)
    eps = float(sweep["eps"].iloc[0])
    for ax, what in zip(axes, ("PGD steps (1 restart)", f"restarts of PGD-{int(sweep['attack.restart_steps'].iloc[0])}")):
        ax.set_xscale("log")
        ax.set_xlabel(what)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"accuracy (%), eps={eps:g}, {int(sweep['sweep_n'].iloc[0])} images")
    axes[1].legend(fontsize=7)
    return _finish(axes[0], title, own)


def loss_surfaces(axis: torch.Tensor, surfaces: torch.Tensor, *, title: str = "",
                  axes: Iterable[Axes] | None = None) -> Figure:
    """Figs. 8-16: one 3-D loss surface per data point, axes in units of 1/255. `axes`: one 3-D
    axes (projection="3d") per data point."""
    k = surfaces.shape[0]
    own = axes is None
    if own:
        cols = min(k, 4)
        rows = -(-k // cols)
        fig = plt.figure(figsize=(3.2 * cols, 3.0 * rows))
        axes = [fig.add_subplot(rows, cols, i + 1, projection="3d") for i in range(k)]
    axes = _given_axes(axes, k, f"{k} loss surfaces", projection="3d")
    e1, e2 = torch.meshgrid(axis * 255, axis * 255, indexing="ij")
    for i, ax in enumerate(axes[:k]):
        ax.plot_surface(e1.numpy(), e2.numpy(), surfaces[i].numpy(), cmap="viridis", linewidth=0, antialiased=False)
        spread = float(surfaces[i].max() - surfaces[i].min())
        ax.set_title(f"Data No.{i + 1} (max-min {spread:.3g})", fontsize=8)
        ax.set_xlabel("$\\varepsilon_1$ (/255)", fontsize=7)
        ax.set_ylabel("$\\varepsilon_2$ (/255)", fontsize=7)
        ax.tick_params(labelsize=6)
    ax = axes[0]
    if title or own:
        ax.figure.suptitle(f"Input loss surfaces: {title}", fontsize=10)
    return _root(ax)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Draw a figure that needs no experiment.")
    parser.add_argument("figure", choices=["fig2"])
    parser.add_argument("out", type=Path, help="output folder")
    args = parser.parse_args(argv)
    for path in save(blf_vs_tanh(), args.out / "fig2", close=True):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
