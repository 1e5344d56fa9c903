"""What a reader of a table or figure must know about the records behind it: synthetic data
stood in for an absent dataset, results of different code versions are mixed, or CIFAR-10
checkpoints predate the augmentation reaching training (schema 2)."""

from __future__ import annotations

import pandas as pd


def synthetic_datasets(df: pd.DataFrame) -> list[str]:
    """The datasets whose records came from synthetic data (the real one was absent)."""
    if "synthetic" not in df:
        return []
    return sorted(df[df["synthetic"].fillna(False).astype(bool)]["dataset"].unique())


def synthetic_note(df: pd.DataFrame) -> str:
    """Appended to every title and caption drawn from records of synthetic data."""
    datasets = synthetic_datasets(df)
    return f" [SYNTHETIC DATA: {', '.join(datasets)}]" if datasets else ""


def _span(values) -> str:
    found = sorted({int(v) for v in values if pd.notna(v)})
    return "" if not found else str(found[0]) if len(found) == 1 else f"{found[0]}-{found[-1]}"


def ran_note(df: pd.DataFrame) -> str:
    """What the records' runs did, appended to a title: a study's title states its recipe, and
    overrides (trainer.epochs, eval.n, attack.pgd.nb_iter) change what ran."""
    parts = []
    if "epochs" in df and (epochs := _span(df["epochs"])):
        parts.append(f"{epochs} epoch{'s' if epochs != '1' else ''}")
    robust = df[df["kind"] == "robustness"] if "kind" in df else df.iloc[0:0]
    if "n" in robust and (n := _span(robust["n"])):
        parts.append(f"{n} test images")
    if "attack.nb_iter" in robust and (steps := _span(robust.loc[robust["attack"] == "pgd", "attack.nb_iter"])):
        parts.append(f"PGD-{steps}")
    return f" [ran: {', '.join(parts)}]" if parts else ""


def _versions(df: pd.DataFrame) -> list[str]:
    """The code versions behind the records ('abc1234', 'abc1234+dirty', 'before schema 2')."""
    if "schema_version" not in df:
        return ["before schema 2"] if len(df) else []
    labels = set()
    for commit, dirty, schema in zip(df.get("code_commit", [None] * len(df)), df.get("code_dirty", [None] * len(df)),
                                     df["schema_version"]):
        if pd.isna(schema):
            labels.add("before schema 2")
        else:
            labels.add(f"{str(commit)[:10] if isinstance(commit, str) else 'unknown'}{'+dirty' if dirty is True else ''}")
    return sorted(labels)


def untrained_augmentation_runs(df: pd.DataFrame) -> list[str]:
    """CIFAR-10 runs whose checkpoint was trained before augmentation reached the training loop
    (its records have no `trained_schema_version`): they trained without crop and flip."""
    if df.empty or "dataset" not in df:
        return []
    cifar = df[df["dataset"] == "cifar10"]
    if "trained_schema_version" in cifar:
        cifar = cifar[cifar["trained_schema_version"].isna()]
    return sorted(cifar["run_dir"].dropna().astype(str).unique()) if "run_dir" in cifar else []


def provenance_notes(df: pd.DataFrame) -> list[str]:
    """Warnings about stale or mixed results, in full (printed, and written beside a report)."""
    notes = []
    versions = _versions(df)
    if len(versions) > 1:
        notes.append(f"the records come from {len(versions)} code versions ({', '.join(versions)}): results of "
                     "different code are mixed; rerun the older runs or report them apart")
    stale = untrained_augmentation_runs(df)
    if stale:
        notes.append(f"{len(stale)} CIFAR-10 run(s) were trained before the augmentation reached training (no crop, "
                     f"no flip): {', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''}")
    return notes


def provenance_note(df: pd.DataFrame) -> str:
    """The short form of provenance_notes, appended to figure titles and table captions."""
    tags = []
    versions = _versions(df)
    if len(versions) > 1:
        tags.append(f"MIXED CODE VERSIONS: {len(versions)}")
    if stale := untrained_augmentation_runs(df):
        tags.append(f"CIFAR-10 TRAINED WITHOUT AUGMENTATION: {len(stale)} runs")
    return "".join(f" [{t}]" for t in tags)
