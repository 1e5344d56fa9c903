"""What a study's report draws (`report:` in conf/study/<name>.yaml), from records and the
arrays runs saved, at report time: no run draws a figure.

Each renderer takes the study's final records (annotated, labels.annotate), its spec as a
plain resolved dict, the path stem of its files and a title, and returns the files written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from blf.report import claims, collect, comparison, figures, labels, provenance, statistics, tables
from blf.run import storage
from blf.run.folder import safe_name
from blf.run.records import Kind, same_eps


def write_table(table: pd.DataFrame, path: Path, title: str, notes: list[str] = ()) -> list[Path]:
    """A table as Markdown and LaTeX beside the figure, `notes` at its foot."""
    foot = "".join(f"\n{note}\n" for note in notes)
    storage.write_text(path.with_suffix(".md"), tables.to_markdown(table, title) + foot)
    storage.write_text(path.with_suffix(".tex"), tables.to_latex(table, title) + "".join(f"% {n}\n" for n in notes))
    return [path.with_suffix(".md"), path.with_suffix(".tex")]


def curves(final: pd.DataFrame, spec: Mapping, path: Path, title: str) -> list[Path]:
    """Figs. 3, 4, 5, 7 (and the demo): accuracy against eps, one panel per facet value."""
    facets = list(spec.get("facets") or [])
    written = figures.save(figures.accuracy_panels(final, facets, title=title), path, close=True)
    if (sweep := figures.budget_sweep(final, title=f"{title}: PGD budget sweep")) is not None:
        written += figures.save(sweep, path.with_name(f"{path.name}_budget_sweep"), close=True)
    return [*written, *write_table(tables.curve_table(final, facets), path, f"{title}: accuracy (%), mean over seeds",
                                   [CURVE_NOTE, *tables.integrity_notes(final, tables.failed_checks(final))])]


def seeded(records: pd.DataFrame, spec: Mapping, path: Path, title: str) -> list[Path]:
    """Every setting trained over several seeds (the selected ones and the spec's `also_seeded`):
    its curve table (mean over seeds with their standard deviation and the interval over seeds
    and images) and, where recorded, its PGD budget sweep. Nothing where no setting has two seeds."""
    several = tables.over_seeds(labels.annotate(records))
    if several.empty:
        return []
    facets = list(spec.get("facets") or [])
    counts = several.groupby(tables.SETTING, dropna=False)["seed"].nunique()
    seeds = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"
    written = write_table(tables.curve_table(several, facets), path,
                          f"{title}: accuracy (%) of every setting trained over several seeds ({seeds} seeds each)",
                          [CURVE_NOTE, *tables.integrity_notes(several, tables.failed_checks(several))])
    if (sweep := figures.budget_sweep(several, title=f"{title}: PGD budget sweep, mean and std over seeds")) is not None:
        written += figures.save(sweep, path.with_name(f"{path.name}_budget_sweep"), close=True)
    return written


# The foot of a curve table and of a method table: what the brackets and the worst case are.
CURVE_NOTE = (f"{statistics.CAPTION}. worst case (a+b): the adaptive worst case, per example over the attacks "
              "named, at each eps where it was recorded.")
METHOD_NOTE = f"Mean over seeds; {statistics.CAPTION}."


def norms(final: pd.DataFrame, spec: Mapping, path: Path, title: str) -> list[Path]:
    """Fig. 1: logit and pre-logit norms against PGD accuracy at `norm_eps`."""
    return figures.save(figures.norms_vs_accuracy(final, spec["norm_eps"], title=title), path, close=True)


def attack_table(final: pd.DataFrame, spec: Mapping, path: Path, title: str) -> list[Path]:
    """Tables 1, 2, 4: accuracy under the table's attacks at the table budget."""
    eps = {dataset: float(value) for dataset, value in spec["select_eps"].items()}
    rows = final[(final["kind"] == Kind.ROBUSTNESS) & final["attack"].isin(list(spec["select_attacks"]))]
    rows = rows[rows.apply(lambda r: same_eps(r["eps"], eps[r["dataset"]]), axis=1)]
    rows = rows.assign(attack=tables.attack_labels(rows, ["model", "setting", "method"]))
    keys = ["attack", "model", "setting"] if rows["attack"].nunique() > 1 else ["model", "setting"]
    failed = tables.failed_checks(final)
    return write_table(tables.method_table(rows, "accuracy", keys, failed=failed), path, title,
                       [METHOD_NOTE, *tables.integrity_notes(rows, failed)])


def operator_norms(final: pd.DataFrame, spec: Mapping, path: Path, title: str) -> list[Path]:
    """Table 3: mean L-infinity operator norm of the convolutions."""
    rows = final[final["kind"] == Kind.OPERATOR_NORM_SUMMARY]
    return write_table(tables.method_table(rows, "mean_conv", ["model", "setting"]), path, title, [METHOD_NOTE])


def loss_surfaces(final: pd.DataFrame, spec: Mapping, path: Path, title: str) -> list[Path]:
    """Table 5: max - min of the input loss surface, averaged over the data points; and the
    surfaces of each selected run (Figs. 8-16), drawn from the arrays the run saved."""
    points = final[final["kind"] == Kind.LOSS_SURFACE]
    per_run = points.groupby(["run_dir", "model", "setting", "method"], as_index=False)["max_minus_min"].mean()
    written = write_table(tables.method_table(per_run, "max_minus_min", ["model", "setting"], decimals=3), path, title,
                          [METHOD_NOTE])
    for _, run in per_run.drop_duplicates(["model", "setting", "method"]).iterrows():
        rows = points[points["run_dir"] == run["run_dir"]]
        # The arrays' place is the run folder's, never a path read from a record.
        arrays = collect.folder(run["run_dir"]) / "analysis" / "loss_surface.pt"
        if not arrays.is_file():
            continue
        saved = storage.load_tensors(arrays)
        first = rows.iloc[0]
        caption = (f"{labels.facet_label('model', first['model'])} {run['setting']}, {run['method']}, {first['dataset']}"
                   f"{provenance.synthetic_note(rows)}")
        name = safe_name(f"{run['model']}_{run['setting']}_{run['method']}")
        drawn = figures.loss_surfaces(saved["axis"], saved["surfaces"], title=caption)
        written += figures.save(drawn, path.parent / "loss_surfaces" / name, close=True)
    return written


def versus_paper(joined: Mapping[str, pd.DataFrame], final: pd.DataFrame, path: Path, title: str) -> list[Path]:
    """Ours | paper | delta for each published table (comparison.side_by_side), with the
    summary line of each, as Markdown, LaTeX and a tidy CSV; records that cannot be compared
    (smoke, synthetic data, a training subset) say so first."""
    head = [f"**Ours beside the paper: {title}**", ""]
    if warning := comparison.banner(final):
        head += [f"> **{warning}**", ""]
    head += [f"> {note}\n" for note in comparison.caveats(final)]
    markdown, latex = ["\n".join(head)], [f"% Ours beside the paper: {title}"]
    if warning:
        latex.append(f"% {warning}")
    for table, frame in joined.items():
        line = comparison.summary(frame)
        shown = comparison.display(frame)
        if shown.empty:
            markdown.append(f"**Table {table}**\n\n{line}\n")
            latex.append(f"% Table {table}: {line}")
            continue
        markdown.append(tables.to_markdown(shown, f"Table {table}") + f"\n{line}\n\n{comparison.DISPLAY_NOTE}\n")
        latex.append(tables.to_latex(shown, f"Table {table}: {line}\n{comparison.DISPLAY_NOTE}"))
    storage.write_text(path.with_suffix(".md"), "\n".join(markdown))
    storage.write_text(path.with_suffix(".tex"), "\n".join(latex))
    storage.write_text(path.with_suffix(".csv"), pd.concat(list(joined.values()), ignore_index=True).to_csv(index=False))
    return [path.with_suffix(".md"), path.with_suffix(".tex"), path.with_suffix(".csv")]


def claims_table(verdicts: pd.DataFrame, final: pd.DataFrame, path: Path, title: str) -> list[Path]:
    """The paper's claims read in the study's records (claims.evaluate): claim, section, verdict
    with the seeds behind it, the deciding effect and its 95% interval, numbers, and the same
    under the worst case. The title's count says how many are inconclusive for too few seeds."""
    kinds = verdicts["verdict"].map(claims.verdict_kind)
    counts = kinds.value_counts().to_dict()
    few = int((kinds != verdicts["verdict"]).sum())
    line = ", ".join(f"{counts.get(v, 0)} {v}" + (f" ({few} for fewer than {claims.MIN_SEEDS} seeds)"
                                                   if v == "inconclusive" and few else "") for v in claims.VERDICTS)
    head = f"The paper's claims in these records ({line})"
    if warning := comparison.banner(final):
        head = f"{head}. {warning}"
    shown = verdicts.set_index("claim")
    shown = pd.DataFrame({"section": shown["section"], "text": shown["text"], "verdict": shown["verdict"],
                          "seeds": shown["seeds"].astype(object).where(shown["seeds"].notna(), ""),
                          "effect [95%]": [_effect(r, "") for _, r in shown.iterrows()], "numbers": shown["numbers"],
                          "worst case": shown["verdict_worst_case"],
                          "worst-case effect [95%]": [_effect(r, "_worst_case") for _, r in shown.iterrows()],
                          "worst-case numbers": shown["numbers_worst_case"]})
    storage.write_text(path.with_suffix(".md"), tables.to_markdown(shown, f"{title}: {head}") + f"\n{claims.NOTE}\n")
    storage.write_text(path.with_suffix(".csv"), verdicts.to_csv(index=False))
    return [path.with_suffix(".md"), path.with_suffix(".csv")]


def _effect(verdict: pd.Series, suffix: str) -> str:
    effect = verdict[f"effect{suffix}"]
    if pd.isna(effect):
        return ""
    return statistics.Interval(effect, verdict[f"ci_low{suffix}"], verdict[f"ci_high{suffix}"], "").text(2, signed=True)


RENDERERS: dict[str, Callable[[pd.DataFrame, Mapping, Path, str], list[Path]]] = {
    "curves": curves, "norms": norms, "attack_table": attack_table, "operator_norms": operator_norms,
    "loss_surfaces": loss_surfaces,
}
