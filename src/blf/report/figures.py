"""Figures, computed from functions (Fig. 2) or from record frames (accuracy curves).

Every figure is written as PNG and PDF.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from blf.nn import heads
from blf.report import labels  # noqa: E402
from blf.run.records import Kind, same_eps

SYMBOLS = {"lam": "$\\lambda$", "alpha": "$\\alpha$", "beta": "$\\beta$", "gamma": "$\\gamma$"}


def save(fig, path: Path) -> list[Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".png", ".pdf"):
        target = path.with_suffix(suffix)
        tmp = target.with_name(f".{target.name}.tmp{suffix}")
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
        tmp.replace(target)
        written.append(target)
    plt.close(fig)
    return written


def blf_vs_tanh(path: Path, z_range: float = 8.0) -> list[Path]:
    """Fig. 2: BLF and tanh, with BLF's extrema (Theorem 3) marked."""
    z = torch.linspace(-z_range, z_range, 2001, dtype=torch.float64)
    z_star, g_star = heads.blf_extremum()
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
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
    return save(fig, path)


def _curves(ax, curve: pd.DataFrame, per255: bool) -> None:
    curve = curve.assign(label=curve.apply(lambda row: labels.label(row, SYMBOLS), axis=1))
    several_attacks = curve["attack"].nunique() > 1
    for (label, attack), group in sorted(curve.groupby(["label", "attack"]), key=lambda item: (labels.method_key(item[0][0]), item[0])):
        stats = group.groupby("eps")["accuracy"].agg(["mean", "std"]).reset_index()
        x = stats["eps"] * (255 if per255 else 1)
        style = "--" if several_attacks and attack != "pgd" else "-"
        name = f"{label}, {attack}" if several_attacks else label
        ax.errorbar(x, stats["mean"], yerr=stats["std"].fillna(0.0), marker="o", ms=3, capsize=2, ls=style, label=name)
    ax.set_xlabel("$\\varepsilon$ (/255)" if per255 else "$\\varepsilon$")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)


def accuracy_panels(df: pd.DataFrame, facets: list[str], path: Path, title: str = "") -> list[Path]:
    """Figs. 3, 4, 5, 7: one panel per facet combination (e.g. model x setting), accuracy
    against eps, one line per method (and attack), mean and std over seeds."""
    curve = labels.annotate(df[df["kind"] == Kind.ROBUSTNESS])
    panels = [((k,) if not isinstance(k, tuple) else k, g) for k, g in curve.groupby(facets)] if facets else [((), curve)]
    panels.sort(key=lambda item: [labels.facet_key(f, v) for f, v in zip(facets, item[0])])
    cols = min(len(panels), 2)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    for ax, (key, group) in zip(axes.flat, panels):
        _curves(ax, group, per255=set(group["dataset"]) == {"cifar10"})
        ax.set_title(", ".join(labels.facet_label(f, k) for f, k in zip(facets, key)), fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def norms_vs_accuracy(df: pd.DataFrame, path: Path, eps: float, title: str = "") -> list[Path]:
    """Fig. 1: mean L2 (top) and L-infinity (bottom) norms of the logits gamma*g(z) (and of
    the pre-logits z for tanh and BLF) against PGD accuracy at `eps`, one point per run."""
    annotated = labels.annotate(df)
    robust = annotated[(annotated["kind"] == Kind.ROBUSTNESS) & (annotated["attack"] == "pgd") & same_eps(annotated["eps"], eps)]
    norms = annotated[annotated["kind"] == Kind.NORMS]
    # One frame holds every kind of record: the norm rows carry an empty accuracy column.
    merged = norms.drop(columns=["accuracy"], errors="ignore").merge(robust[["run_dir", "accuracy"]], on="run_dir")
    fig, axes = plt.subplots(2, 1, figsize=(5.2, 6.4), sharey=True)
    for ax, p in zip(axes, ("l2", "linf")):
        for m, group in sorted(merged.groupby("method"), key=lambda item: labels.method_key(item[0])):
            ax.scatter(group[f"logit_{p}"], group["accuracy"], label=m, s=18)
            if m in ("tanh", "BLF"):
                ax.scatter(group[f"prelogit_{p}"], group["accuracy"], label=f"pre-logits of {m}", s=18, marker="x")
        ax.set_xlabel(f"mean {'L2' if p == 'l2' else 'L-infinity'} norm")
        ax.set_ylabel(f"accuracy (%), PGD eps={eps * 255:.0f}/255")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def loss_surfaces(axis: torch.Tensor, surfaces: torch.Tensor, path: Path, title: str = "") -> list[Path]:
    """Figs. 8-16: one 3-D loss surface per data point, axes in units of 1/255."""
    k = surfaces.shape[0]
    cols = min(k, 4)
    rows = -(-k // cols)
    fig = plt.figure(figsize=(3.2 * cols, 3.0 * rows))
    e1, e2 = torch.meshgrid(axis * 255, axis * 255, indexing="ij")
    for i in range(k):
        ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
        ax.plot_surface(e1.numpy(), e2.numpy(), surfaces[i].numpy(), cmap="viridis", linewidth=0, antialiased=False)
        spread = float(surfaces[i].max() - surfaces[i].min())
        ax.set_title(f"Data No.{i + 1} (max-min {spread:.3g})", fontsize=8)
        ax.set_xlabel("$\\varepsilon_1$ (/255)", fontsize=7)
        ax.set_ylabel("$\\varepsilon_2$ (/255)", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"Input loss surfaces: {title}", fontsize=10)
    return save(fig, path)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Draw a figure that needs no experiment.")
    parser.add_argument("figure", choices=["fig2"])
    parser.add_argument("out", type=Path, help="output folder")
    args = parser.parse_args(argv)
    for path in blf_vs_tanh(args.out / "fig2"):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
