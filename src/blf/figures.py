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

from . import heads  # noqa: E402

LABELS = {"identity": "Baseline", "blf": "BLF", "lblf": "L-BLF", "tanh": "tanh", "sigmoid": "sigmoid",
          "sine": "sine wave", "single_wave": "single wave", "logit_squeezing": "LSQ", "label_smoothing": "LSM"}


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


def method_label(row: pd.Series) -> str:
    """Baseline / LSQ / LSM / BLF / ... as in the paper's legends, with the hyper-parameter."""
    parts = []
    if row.get("regularizer") not in (None, "none"):
        value = row.get("lam") if row["regularizer"] == "logit_squeezing" else row.get("alpha")
        parts.append(f"{LABELS[row['regularizer']]} ({value:g})" if pd.notna(value) else LABELS[row["regularizer"]])
    if row.get("head") not in (None, "identity") or not parts:
        head = LABELS.get(row.get("head"), str(row.get("head")))
        gamma = row.get("gamma")
        parts.append(f"{head} ($\\gamma$={gamma:g})" if row.get("head") not in ("identity", "lblf") and pd.notna(gamma) else head)
    if row.get("training") == "trades":
        parts = [f"TRADES ($\\beta$={row.get('beta'):g})"]
    return " + ".join(parts)


def accuracy_vs_eps(df: pd.DataFrame, path: Path, title: str = "") -> list[Path]:
    """Accuracy (%) against eps, one line per method, error bars = std over seeds (Figs. 3, 4)."""
    curve = df[df["kind"] == "robustness"].copy()
    curve["method"] = curve.apply(method_label, axis=1)
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    for (method, attack), group in curve.groupby(["method", "attack"], sort=True):
        stats = group.groupby("eps")["accuracy"].agg(["mean", "std"]).reset_index()
        label = method if curve["attack"].nunique() == 1 else f"{method}, {attack}"
        ax.errorbar(stats["eps"], stats["mean"], yerr=stats["std"].fillna(0.0), marker="o", ms=3, capsize=2, label=label)
    ax.set_xlabel("$\\varepsilon$")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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
