"""What a study's report draws (`report:` in conf/study/<name>.yaml), from records and the
arrays runs saved, at report time: no run draws a figure.

Each renderer takes the study's final records (annotated, labels.annotate), its spec as a
plain resolved dict, the path stem of its files and a title, and returns the files written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from blf.report import figures, labels, provenance, tables
from blf.run import storage
from blf.run.folder import safe_name
from blf.run.records import Kind, same_eps


def write_table(table: pd.DataFrame, path: Path, title: str) -> list[Path]:
    """A table as Markdown and LaTeX beside the figure."""
    storage.write_text(path.with_suffix(".md"), tables.to_markdown(table, title))
    storage.write_text(path.with_suffix(".tex"), tables.to_latex(table, title))
    return [path.with_suffix(".md"), path.with_suffix(".tex")]


def curves(final: pd.DataFrame, spec: Mapping, path: Path, title: str) -> list[Path]:
    """Figs. 3, 4, 5, 7 (and the demo): accuracy against eps, one panel per facet value."""
    facets = list(spec.get("facets") or [])
    written = figures.accuracy_panels(final, facets, path, title)
    return [*written, *write_table(tables.curve_table(final, facets), path, f"{title}: accuracy (%), mean ± std over seeds")]


def norms(final: pd.DataFrame, spec: Mapping, path: Path, title: str) -> list[Path]:
    """Fig. 1: logit and pre-logit norms against PGD accuracy at `norm_eps`."""
    return figures.norms_vs_accuracy(final, path, eps=spec["norm_eps"], title=title)


def attack_table(final: pd.DataFrame, spec: Mapping, path: Path, title: str) -> list[Path]:
    """Tables 1, 2, 4: accuracy under the table's attacks at the table budget."""
    eps = {dataset: float(value) for dataset, value in spec["select_eps"].items()}
    rows = final[(final["kind"] == Kind.ROBUSTNESS) & final["attack"].isin(list(spec["select_attacks"]))]
    rows = rows[rows.apply(lambda r: same_eps(r["eps"], eps[r["dataset"]]), axis=1)]
    keys = ["attack", "model", "setting"] if len(spec["select_attacks"]) > 1 else ["model", "setting"]
    return write_table(tables.method_table(rows, "accuracy", keys), path, title)


def operator_norms(final: pd.DataFrame, spec: Mapping, path: Path, title: str) -> list[Path]:
    """Table 3: mean L-infinity operator norm of the convolutions."""
    rows = final[final["kind"] == Kind.OPERATOR_NORM_SUMMARY]
    return write_table(tables.method_table(rows, "mean_conv", ["model", "setting"]), path, title)


def loss_surfaces(final: pd.DataFrame, spec: Mapping, path: Path, title: str) -> list[Path]:
    """Table 5: max - min of the input loss surface, averaged over the data points; and the
    surfaces of each selected run (Figs. 8-16), drawn from the arrays the run saved."""
    points = final[final["kind"] == Kind.LOSS_SURFACE]
    per_run = points.groupby(["run_dir", "model", "setting", "method"], as_index=False)["max_minus_min"].mean()
    written = write_table(tables.method_table(per_run, "max_minus_min", ["model", "setting"], decimals=3), path, title)
    for _, run in per_run.drop_duplicates(["model", "setting", "method"]).iterrows():
        rows = points[points["run_dir"] == run["run_dir"]]
        # The arrays' place is the run folder's, never a path read from a record.
        arrays = Path(run["run_dir"]) / "analysis" / "loss_surface.pt"
        if not arrays.is_file():
            continue
        saved = storage.load_tensors(arrays)
        first = rows.iloc[0]
        caption = (f"{labels.facet_label('model', first['model'])} {run['setting']}, {run['method']}, {first['dataset']}"
                   f"{provenance.synthetic_note(rows)}")
        name = safe_name(f"{run['model']}_{run['setting']}_{run['method']}")
        written += figures.loss_surfaces(saved["axis"], saved["surfaces"], path.parent / "loss_surfaces" / name, title=caption)
    return written


RENDERERS: dict[str, Callable[[pd.DataFrame, Mapping, Path, str], list[Path]]] = {
    "curves": curves, "norms": norms, "attack_table": attack_table, "operator_norms": operator_norms,
    "loss_surfaces": loss_surfaces,
}
