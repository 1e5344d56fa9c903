"""Reproduce one figure or table of the paper, from the sweeps to the files.

    python -m blf.study <experiment> [--profile paper|smoke] [--launcher basic|joblib|submitit_local|slurm]
                        [--jobs N] [--stage all|grid|seeds|report] [--dry-run] [key=value ...]

`conf/experiment/<experiment>.yaml` describes the study (its `study:` section):
1. grid: each entry is one Hydra multirun of src/train.py (the Cartesian product of its
   values) on the first seed; the entries together are the paper's grids;
2. selection (selection.py) over the grid's records: the paper's protocol, the table's attack,
   or none; `transfer` reuses a model's choice for another (WRN takes ResNet-18's);
3. seeds: the selected settings as multiruns over the seeds;
4. report: records -> `results/<experiment>/<profile>/` (records.csv, jobs.csv,
   selection.md/.csv, the figure as PNG and PDF, tables as Markdown and LaTeX).

Runs land in `multirun/<experiment>/<profile>/<run name>`; rerunning the command skips finished
runs, resumes interrupted ones and starts the rest. `profile=smoke` keeps the first
`study_limits.grid_values` values of each hyper-parameter grid and `study_limits.seeds` seeds.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import yaml
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from blf import config as C
from blf import failpoint
from blf.errors import BLFError
from blf.report import collect, figures, labels, provenance, tables
from blf.run import identity, storage
from blf.run.folder import RunFolder, safe_name
from blf.run.records import Kind, same_eps
from blf.study import selection

REPO = Path(__file__).resolve().parents[3]
# The tuned hyper-parameters: the keys a profile may shorten.
HYPERPARAMETERS = ("regularizer.lam", "regularizer.alpha", "head.gamma", "training.beta")
LAUNCHERS = ("basic", "joblib", "submitit_local", "slurm")
REPORTS = ("curves", "norms", "attack_table", "operator_norms", "loss_surfaces")


def experiment_config(experiment: str, profile: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", f"profile={profile}"])
    if "study" not in cfg:
        raise BLFError(f"experiment={experiment} has no study section; allowed: fig1, fig3, fig4, fig5, fig7, table1-table5")
    return cfg


def budgets(spec: DictConfig) -> dict[str, float]:
    """The selection (and table) budget per dataset, resolved: `${per255:8}` -> 0.0313..."""
    return {dataset: float(eps) for dataset, eps in OmegaConf.to_container(spec.select_eps, resolve=True).items()}


def per_dataset(value, dataset: str):
    """A study value given once or per dataset ({mnist: ..., cifar10: ...})."""
    return value[dataset] if isinstance(value, Mapping) else value


def seeds_of(cfg: DictConfig, dataset: str) -> list[int]:
    seeds = list(per_dataset(cfg.study.seeds, dataset))
    limit = cfg.study_limits.seeds
    return seeds[:limit] if limit else seeds


def grid_overrides(cfg: DictConfig) -> list[list[str]]:
    """One override list per grid entry, hyper-parameter grids shortened by the profile."""
    limit = cfg.study_limits.grid_values
    lists = []
    for entry in cfg.study.grid.values():
        dataset = entry.get("dataset", cfg.dataset.name)
        items = []
        for key, value in entry.items():
            values = str(value).split(",")
            if key in HYPERPARAMETERS and limit:
                values = values[:limit]
            items.append(f"{key}={','.join(values)}")
        lists.append([*items, f"seed={seeds_of(cfg, dataset)[0]}"])
    return lists


def launcher_overrides(launcher: str, jobs: int) -> list[str]:
    C.choice("--launcher", launcher, LAUNCHERS)
    if launcher == "joblib":
        # Parallel jobs share the cores: each gets its share of torch threads.
        threads = max(1, (os.cpu_count() or 1) // jobs)
        return ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}", f"trainer.threads={threads}"]
    if launcher == "basic":
        return []
    return [f"hydra/launcher={launcher}"]


class Study:
    def __init__(self, experiment: str, profile: str, launcher: str = "basic", jobs: int = 1, dry_run: bool = False,
                 overrides: list[str] | tuple = (), sweep: Path | None = None, out: Path | None = None):
        self.experiment, self.profile = experiment, profile
        self.cfg = experiment_config(experiment, profile)
        self.spec = self.cfg.study
        self.launch_with = launcher_overrides(launcher, jobs)
        self.extra = list(overrides)  # added to every job (e.g. trainer.epochs=1)
        self.dry_run = dry_run
        self.sweep = Path(sweep or REPO / "multirun" / experiment / profile).resolve()
        self.out = Path(out or REPO / "results" / experiment / profile).resolve()
        self.failures: list[str] = []

    # --- running ---------------------------------------------------------------------------

    def jobs(self, overrides: list[str]) -> list[list[str]]:
        """The task overrides of each job of a multirun, as Hydra's basic sweeper expands them
        (its canonical spelling, e.g. `true` -> `True`, names the run folders)."""
        task = [o for o in [f"experiment={self.experiment}", f"profile={self.profile}", *overrides, *self.extra]
                if not o.startswith("hydra")]
        batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(task), None)
        return [job for batch in batches for job in batch]

    def finished(self, overrides: list[str]) -> bool:
        """Whether every job of a multirun finished with exactly the config it would run now.
        Then it is not launched: on a cluster a rerun would otherwise queue one job per run
        only for it to find nothing to do."""
        jobs = self.jobs(overrides)
        workspaces = [RunFolder(self.sweep / identity.run_name(job)) for job in jobs]
        if any(w.finished_as() is None for w in workspaces):
            return False
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            return all(w.finished_as() == identity.job_key(C.to_container(compose("train", overrides=job)))
                       for w, job in zip(workspaces, jobs))

    def launch(self, overrides: list[str]) -> None:
        command = [sys.executable, str(REPO / "src" / "train.py"), "-m", f"experiment={self.experiment}",
                   f"profile={self.profile}", *overrides, *self.extra, *self.launch_with, f"hydra.sweep.dir={self.sweep}"]
        if self.finished(overrides):
            print(f"finished, not launched ({len(self.jobs(overrides))} runs): {' '.join(overrides)}", flush=True)
            return
        print("$ " + " ".join(shlex.quote(c) for c in command[1:]), flush=True)
        if self.dry_run:
            return
        code = subprocess.call(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
        if code != 0:
            self.failures.append(" ".join(overrides))
            print(f"!! a multirun exited with status {code}; its finished jobs are kept, the rest is reported below",
                  file=sys.stderr)

    def check_overrides(self) -> None:
        """Compose one job with the extra overrides, so a bad one fails before anything launches."""
        task = [o for o in self.extra if not o.startswith("hydra")]
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            compose("train", overrides=[f"experiment={self.experiment}", f"profile={self.profile}", *task])

    def grid(self) -> None:
        for overrides in grid_overrides(self.cfg):
            self.launch(overrides)

    def records(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        if not self.sweep.is_dir():
            return pd.DataFrame(), pd.DataFrame()
        return collect.collect(self.sweep)

    def select(self, df: pd.DataFrame) -> pd.DataFrame:
        criterion = self.spec.get("select", "protocol")
        if criterion == "none" or df.empty:
            return pd.DataFrame()
        eps = budgets(self.spec)
        attacks = self.spec.get("select_attacks") or ["pgd"]
        transfer = dict(self.spec.get("transfer") or {})
        # The grid's runs only: the first seed (the others exist once the seeds stage ran), and
        # not the models that take another's choice.
        first = {d: seeds_of(self.cfg, d)[0] for d in df["dataset"].unique()}
        df = df[(df["seed"] == df["dataset"].map(first)) & ~df["model"].isin(list(transfer))]
        chosen = []
        for attack in attacks:
            picked = selection.select(df, criterion, eps, attack)
            chosen.append(picked.assign(for_attack=attack if criterion == "attack" else None))
        chosen = pd.concat(chosen, ignore_index=True)
        for target, source in transfer.items():
            copies = chosen[chosen["model"] == source].assign(model=target, run_dir=None, score=None,
                                                              basis=f"{source}'s choice (the paper reuses it)")
            chosen = pd.concat([chosen, copies], ignore_index=True)
        return chosen

    def seeds(self, chosen: pd.DataFrame) -> None:
        """Each selected setting over the seeds (the first seed's run exists and is skipped)."""
        done = set()
        for _, row in chosen.iterrows():
            source = row["run_dir"] if isinstance(row["run_dir"], str) else None
            if source is None:  # a transferred choice: the source model's run, with the model swapped
                source = chosen[(chosen["model"] == self.spec.transfer[row["model"]]) & (chosen["method"] == row["method"])
                                & (chosen["setting"] == row["setting"]) & (chosen["dataset"] == row["dataset"])
                                & (chosen["for_attack"].fillna("") == (row["for_attack"] or ""))]["run_dir"].iloc[0]
            own = {o.split("=", 1)[0] for o in self.extra}
            overrides = run_overrides(Path(source), drop=("seed", "trainer.threads", "experiment", "profile", *own))
            if row["model"] != selection_model(overrides):
                overrides = [o for o in overrides if not o.startswith("model=")] + [f"model={row['model']}"]
            seeds = seeds_of(self.cfg, row["dataset"])
            if seeds == [int(row["seed"])] and isinstance(row["run_dir"], str):
                continue  # the grid run is the only seed wanted: nothing to launch
            overrides.append("seed=" + ",".join(map(str, seeds)))
            key = tuple(sorted(overrides))
            if key not in done:
                done.add(key)
                self.launch(overrides)

    # --- reporting -------------------------------------------------------------------------

    def final(self, df: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
        """The records behind the figure: the selected settings (all seeds), or everything."""
        df = labels.annotate(df)
        if chosen.empty:
            return df
        keys = ["dataset", "model", "setting", "method"]
        picked = chosen[[*keys, "hp_value", "for_attack"]].copy()
        merged = df.merge(picked, on=keys, suffixes=("", "_chosen"))
        same_hp = (merged["hp_value"] == merged["hp_value_chosen"]) | (merged["hp_value"].isna() & merged["hp_value_chosen"].isna())
        merged = merged[same_hp]
        # Tables tuned per attack keep each attack's own choice.
        per_attack = merged["for_attack"].notna()
        merged = merged[~per_attack | (merged["attack"] == merged["for_attack"]) | (merged["kind"] != Kind.ROBUSTNESS)]
        unique = [c for c in ("run_dir", "kind", "attack", "eps", "check", "layer", "point") if c in merged]
        return merged.drop(columns=["hp_value_chosen"]).drop_duplicates(subset=unique)

    def report(self, final: pd.DataFrame) -> list[Path]:
        kind = C.choice("study.report", self.spec.report, REPORTS)
        title = f"{self.spec.title} [{self.profile}]{provenance.synthetic_note(final)}{provenance.provenance_note(final)}"
        return REPORT_FUNCTIONS[kind](final, self.spec, self.out / self.experiment, title)

    def load(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(records, selection) as the last run wrote them to `results/<experiment>/<profile>/`:
        the notebooks start here, so they need the records, not the runs."""
        records = self.out / "records.csv"
        if not records.is_file():
            raise BLFError(f"{records} does not exist; allowed: the output folder of a finished "
                           f"`make {self.experiment} PROFILE={self.profile}` (or --stage report)")
        picked = self.out / "selection.csv"
        return pd.read_csv(records), pd.read_csv(picked) if picked.is_file() else pd.DataFrame()

    def run(self, stage: str) -> int:
        if stage in ("all", "grid"):
            self.grid()
        df, jobs = self.records()
        chosen = self.select(df) if stage in ("all", "seeds", "report") else pd.DataFrame()
        if stage in ("all", "seeds") and not chosen.empty:
            self.seeds(chosen)
            df, jobs = self.records()
        if self.dry_run:
            return 0
        print(collect.report_jobs(jobs), file=sys.stderr)
        if df.empty:
            print(f"error: no records in {self.sweep}", file=sys.stderr)
            return 2
        collect.write(df, jobs, self.out)
        failpoint.reach("report")  # records written, figures and tables not yet
        if not chosen.empty:
            storage.write_text(self.out / "selection.csv", chosen.to_csv(index=False))
            storage.write_text(self.out / "selection.md", f"Hyper-parameters selected for {self.experiment} "
                               f"({self.spec.get('select')}):\n\n{selection.markdown(chosen)}\n")
        written = self.report(self.final(df, chosen))
        for path in written:
            print(path)
        if notes := provenance.provenance_notes(df):
            storage.write_text(self.out / "provenance.md", "".join(f"- {n}\n" for n in notes))
            for note in notes:
                print(f"!! {note}", file=sys.stderr)
        if synthetic := provenance.synthetic_datasets(df):
            print(f"\n!! SYNTHETIC DATA: {synthetic} "
                  "replaced by random data of the same shape (the real dataset is absent). These files test the "
                  "pipeline; they say nothing about the paper.\n", file=sys.stderr)
        if self.failures:
            print(f"!! {len(self.failures)} multirun(s) failed; see jobs.csv", file=sys.stderr)
        return 1 if self.failures else 0


def run_overrides(run: Path, drop: tuple[str, ...]) -> list[str]:
    """The task overrides that produced a run folder, minus the keys in `drop`."""
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) or []
    # Only the run's own settings: where jobs go and how they launch stay the driver's.
    return [str(o) for o in overrides
            if o.split("=", 1)[0].lstrip("+~") not in drop and not str(o).lstrip("+~").startswith("hydra")]


def selection_model(overrides: list[str]) -> str | None:
    return next((o.split("=", 1)[1] for o in overrides if o.startswith("model=")), None)


# --- reports: records -> files ---------------------------------------------------------------


def curves(final: pd.DataFrame, spec, path: Path, title: str) -> list[Path]:
    facets = list(spec.get("facets") or [])
    written = figures.accuracy_panels(final, facets, path, title)
    return [*written, *_write_table(tables.curve_table(final, facets), path, f"{title}: accuracy (%), mean ± std over seeds")]


def norms(final: pd.DataFrame, spec, path: Path, title: str) -> list[Path]:
    return figures.norms_vs_accuracy(final, path, eps=spec.norm_eps, title=title)


def _write_table(table: pd.DataFrame, path: Path, title: str) -> list[Path]:
    storage.write_text(path.with_suffix(".md"), tables.to_markdown(table, title))
    storage.write_text(path.with_suffix(".tex"), tables.to_latex(table, title))
    return [path.with_suffix(".md"), path.with_suffix(".tex")]


def attack_table(final: pd.DataFrame, spec, path: Path, title: str) -> list[Path]:
    """Tables 1, 2, 4: accuracy under the table's attacks at the table budget."""
    eps = budgets(spec)
    rows = final[(final["kind"] == Kind.ROBUSTNESS) & final["attack"].isin(list(spec.select_attacks))]
    rows = rows[rows.apply(lambda r: same_eps(r["eps"], eps[r["dataset"]]), axis=1)]
    keys = ["attack", "model", "setting"] if len(spec.select_attacks) > 1 else ["model", "setting"]
    return _write_table(tables.method_table(rows, "accuracy", keys), path, title)


def operator_norms(final: pd.DataFrame, spec, path: Path, title: str) -> list[Path]:
    """Table 3: mean L-infinity operator norm of the convolutions."""
    rows = final[final["kind"] == Kind.OPERATOR_NORM_SUMMARY]
    return _write_table(tables.method_table(rows, "mean_conv", ["model", "setting"]), path, title)


def loss_surfaces(final: pd.DataFrame, spec, path: Path, title: str) -> list[Path]:
    """Table 5: max - min of the input loss surface, averaged over the data points; and the
    surface figures of each selected run (Figs. 8-16) copied beside it."""
    points = final[final["kind"] == Kind.LOSS_SURFACE]
    per_run = points.groupby(["run_dir", "model", "setting", "method"], as_index=False)["max_minus_min"].mean()
    written = _write_table(tables.method_table(per_run, "max_minus_min", ["model", "setting"], decimals=3), path, title)
    for _, run in per_run.drop_duplicates(["model", "setting", "method"]).iterrows():
        source = Path(run["run_dir"]) / "analysis" / "loss_surface.png"
        if source.is_file():
            name = safe_name(f"{run['model']}_{run['setting']}_{run['method']}")
            target = path.parent / "loss_surfaces" / f"{name}.png"
            storage.write_bytes(target, source.read_bytes())
            written.append(target)
    return written


REPORT_FUNCTIONS = {"curves": curves, "norms": norms, "attack_table": attack_table,
                    "operator_norms": operator_norms, "loss_surfaces": loss_surfaces}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment")
    parser.add_argument("--profile", default="paper", choices=["paper", "smoke"])
    parser.add_argument("--launcher", default="basic", choices=LAUNCHERS)
    parser.add_argument("--jobs", type=positive, default=2, help="parallel jobs for --launcher joblib")
    parser.add_argument("--stage", default="all", choices=["all", "grid", "seeds", "report"])
    parser.add_argument("--dry-run", action="store_true", help="print the multiruns without running them")
    parser.add_argument("--sweep-dir", type=Path, help="where the runs go (default multirun/<experiment>/<profile>)")
    parser.add_argument("--out-dir", type=Path, help="where records, figures and tables go (default results/<experiment>/<profile>)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides added to every job, e.g. trainer.threads=1")
    args = parser.parse_intermixed_args(argv)  # overrides may follow the options
    try:
        study = Study(args.experiment, args.profile, args.launcher, args.jobs, args.dry_run, args.overrides,
                      args.sweep_dir, args.out_dir)
        study.check_overrides()
        return study.run(args.stage)
    except BLFError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (HydraException, OmegaConfBaseException) as error:  # an override Hydra cannot parse or apply
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"error: {first}; allowed: overrides of conf/train.yaml's keys (key=value, group=option)", file=sys.stderr)
        return 2


def positive(text: str) -> int:
    """--jobs: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of jobs; allowed: integers >= 1")
    return value


if __name__ == "__main__":
    sys.exit(main())
