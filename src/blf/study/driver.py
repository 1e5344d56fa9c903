"""Reproduce one figure or table of the paper, from the sweeps to the files.

    python -m blf.study <name> [--profile paper|smoke] [--launcher basic|joblib|submitit_local|slurm]
                        [--jobs N] [--stage all|grid|seeds|report] [--dry-run] [key=value ...]

`conf/study/<name>.yaml` is the study's spec (spec.py); its runs use `conf/experiment/<name>.yaml`:
1. grid: each entry is one Hydra multirun of src/train.py (the Cartesian product of its
   values) on the first seed; the entries together are the paper's grids;
2. selection (selection.py) over the grid's records: the paper's protocol, the table's attack,
   or none; `transfer` reuses a model's choice for another (WRN takes ResNet-18's);
3. seeds: the selected settings as multiruns over the seeds, and the spec's `also_seeded`
   settings (run over the seeds whatever the selection picks; their table: `<name>_seeds.md`);
4. report: records -> `results/<name>/<profile>/` (records.csv/.parquet, jobs.csv, selection.md/.csv,
   the figure as PNG and PDF, tables as Markdown and LaTeX; blf.report.renderers).

Runs land in `multirun/<name>/<profile>/<run name>`; rerunning the command skips finished
runs, resumes interrupted ones and starts the rest. `--profile smoke` keeps the first values of
each hyper-parameter grid and the first seeds (`limits` in conf/driver.yaml).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from blf import config as C
from blf import failpoint, trust
from blf.errors import BLFError, BusyError, UntrustedFileError
from blf.report import claims, collect, comparison, evaluations, labels, provenance, published, renderers
from blf.run import identity, storage, tracking
from blf.run.folder import RunFolder
from blf.run.records import OBSERVATION_FIELDS, Kind, evaluation_id
from blf.study import selection, spec
from blf.study.progress import StageProgress
from blf.study.spec import REPO
from blf.study.sweep import LAUNCHERS, expand, launcher_overrides


class Study:
    """One study under one profile: `cfg` is the driver's config (the spec as `cfg.study`,
    the profile's `limits`); the runs' own config is composed only to check overrides and to
    know the study's default dataset."""

    def __init__(self, name: str, profile: str, launcher: str = "basic", jobs: int = 1, dry_run: bool = False,
                 overrides: list[str] | tuple = (), sweep: Path | None = None, out: Path | None = None,
                 progress_every: float = 30.0):
        self.experiment, self.profile = name, profile
        self.cfg = spec.load(name, profile)
        self.spec = self.cfg.study
        self.launch_with = launcher_overrides(launcher, jobs)
        self.extra = list(overrides)  # added to every job (e.g. trainer.epochs=1)
        self.dry_run = dry_run
        self.sweep = Path(sweep or REPO / "multirun" / name / profile).resolve()
        self.out = Path(out or REPO / "results" / name / profile).resolve()
        self.failures: list[str] = []
        self.progress_every = progress_every
        self.progress = StageProgress("", [], self.sweep)

    # --- running ---------------------------------------------------------------------------

    def jobs(self, overrides: list[str]) -> list[list[str]]:
        """The task overrides of each job of a multirun, as Hydra will launch them."""
        return expand([o for o in [f"experiment={self.experiment}", f"profile={self.profile}", *overrides, *self.extra]
                      if not o.startswith("hydra")])

    def finished(self, overrides: list[str]) -> bool:
        """Whether every job of a multirun finished with exactly the config it would run now.
        Then it is not launched: on a cluster a rerun would otherwise queue one job per run
        only for it to find nothing to do."""
        jobs = self.jobs(overrides)
        workspaces = [RunFolder(folder) for folder in self.folders(overrides)]
        if any(w.finished_as() is None for w in workspaces):
            return False
        return all(w.finished_as() == identity.job_key(C.to_container(spec.run_config(self.experiment, self.profile, job)))
                   for w, job in zip(workspaces, jobs))

    def folders(self, overrides: list[str]) -> list[Path]:
        """The run folders of a multirun's jobs."""
        return [self.sweep / identity.run_name(job) for job in self.jobs(overrides)]

    def stage(self, name: str, multiruns: list[list[str]]) -> None:
        """Launch a stage's multiruns, one after the other, showing the whole stage's progress."""
        self.progress = StageProgress(name, [f for o in multiruns for f in self.folders(o)], self.sweep,
                                      self.progress_every)
        for overrides in multiruns:
            self.launch(overrides)

    def launch(self, overrides: list[str]) -> None:
        command = [sys.executable, str(REPO / "src" / "train.py"), "-m", f"experiment={self.experiment}",
                   f"profile={self.profile}", *overrides, *self.extra, *self.launch_with, f"hydra.sweep.dir={self.sweep}"]
        if self.finished(overrides):
            print(f"finished, not launched ({len(self.jobs(overrides))} runs): {' '.join(overrides)}", flush=True)
            return
        print("$ " + " ".join(shlex.quote(c) for c in command[1:]), flush=True)
        if self.dry_run:
            return
        # In the driver's process group: a kill of the group (a terminal's Ctrl-C, a scheduler's
        # SIGKILL) reaches every job; a signal to the driver alone is passed on by `stop_jobs`.
        process = subprocess.Popen(command, cwd=REPO, env=job_environment())
        try:
            while True:  # the jobs run elsewhere (a cluster, workers): their folders say how far they are
                try:
                    code = process.wait(timeout=min(self.progress_every, 10.0))
                    break
                except subprocess.TimeoutExpired:
                    self.progress.show()
        except Stopped as stop:
            stop_jobs(process, stop.signum)
            raise
        self.progress.show(force=True)
        unfinished = self.progress.report_failures(self.folders(overrides))
        if code != 0 or unfinished:
            self.failures.append(" ".join(overrides))
            print(f"!! a multirun exited with status {code}, {len(unfinished)} of its runs unfinished; its finished runs "
                  "are kept, and rerunning the command resumes the others", file=sys.stderr)

    def check_relaunch(self, run: Path, overrides: list[str]) -> None:
        """Overrides read back from a run folder name keys of the composed configs, or none is launched."""
        try:
            spec.run_config(self.experiment, self.profile, overrides)
        except (HydraException, OmegaConfBaseException, BLFError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UntrustedFileError(f"{run / '.hydra' / 'overrides.yaml'}: its overrides do not compose ({reason}); "
                                     "allowed: settings of the project's configs") from None

    def check_overrides(self) -> None:
        """Compose one job with the extra overrides, so a bad one fails before anything launches."""
        spec.run_config(self.experiment, self.profile, [o for o in self.extra if not o.startswith("hydra")])

    def grid(self) -> None:
        self.stage("grid", self.grid_overrides())

    def grid_overrides(self) -> list[list[str]]:
        return spec.grid_overrides(self.cfg, self.dataset())

    def also_seeded(self) -> list[list[str]]:
        """The multiruns of the settings the spec runs over every seed whatever the selection."""
        return spec.also_seeded_overrides(self.cfg, self.dataset())

    def dataset(self) -> str:
        """The study's own dataset (a grid entry may name another)."""
        return spec.run_config(self.experiment, self.profile).dataset.name

    def records(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        if not self.sweep.is_dir():
            return pd.DataFrame(), pd.DataFrame()
        return collect.collect(self.sweep)

    def select(self, df: pd.DataFrame, criterion: str | None = None, attacks: list[str] | None = None) -> pd.DataFrame:
        """The study's selection (`select`, `select_attacks` of its spec), or another over the same
        records (a published table tuned per attack, for the side-by-side)."""
        criterion = criterion or self.spec.get("select", "protocol")
        if criterion == "none" or df.empty:
            return pd.DataFrame()
        eps = spec.budgets(self.spec)
        attacks = attacks or self.spec.get("select_attacks") or ["pgd"]
        transfer = dict(self.spec.get("transfer") or {})
        # The grid's runs only: the first seed (the others exist once the seeds stage ran), and
        # not the models that take another's choice.
        first = {d: spec.seeds_of(self.cfg, d)[0] for d in df["dataset"].unique()}
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
        """Each selected setting over the seeds (the first seed's run exists and is skipped), and
        the spec's `also_seeded` settings."""
        multiruns, done = [], set()
        for _, row in chosen.iterrows():  # empty where nothing was selected (select: none, no records)
            transferred = not isinstance(row["run_dir"], str)
            source = row["run_dir"]
            if transferred:  # a transferred choice: the source model's run, with the model swapped
                source = chosen[(chosen["model"] == self.spec.transfer[row["model"]]) & (chosen["method"] == row["method"])
                                & (chosen["setting"] == row["setting"]) & (chosen["dataset"] == row["dataset"])
                                & (chosen["for_attack"].fillna("") == (row["for_attack"] or ""))]["run_dir"].iloc[0]
            own = {o.split("=", 1)[0] for o in self.extra}
            overrides = run_overrides(collect.folder(source), drop=("seed", "trainer.threads", "experiment", "profile", *own))
            self.check_relaunch(collect.folder(source), overrides)
            # Only a transferred choice names its model: the seeds of a grid run's own setting are
            # its overrides with another seed, so seed 0's folder is the grid run and not a second one
            # (a `model=` its grid entry left to the experiment would rename every folder).
            if transferred:
                overrides = [o for o in overrides if not o.startswith("model=")] + [f"model={row['model']}"]
            seeds = spec.seeds_of(self.cfg, row["dataset"])
            if seeds == [int(row["seed"])] and not transferred:
                continue  # the grid run is the only seed wanted: nothing to launch
            overrides.append("seed=" + ",".join(map(str, seeds)))
            key = tuple(sorted(overrides))
            if key not in done:
                done.add(key)
                multiruns.append(overrides)
        multiruns += [o for o in self.also_seeded() if tuple(sorted(o)) not in done]
        self.stage("seeds", multiruns)

    # --- reporting -------------------------------------------------------------------------

    def final(self, df: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
        """The records behind the figure: the selected settings (all seeds), or everything. One row
        per observation and evaluation (records.evaluation_id): the merge with a selection tuned per
        attack repeats rows, which go; two evaluations of one observation (restarts=1 and 5) both stay."""
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
        merged = merged.assign(_evaluation=evaluations.per_row(merged, evaluation_id))
        unique = [c for c in OBSERVATION_FIELDS if c in merged] + ["_evaluation"]
        return merged.drop_duplicates(subset=unique).drop(columns=["hp_value_chosen", "_evaluation"])

    def title(self, records: pd.DataFrame) -> str:
        """The title of every file the report writes: the spec's title states the recipe, and the
        notes what the records' runs did (overrides such as trainer.epochs or eval.n change it),
        on what data and from which code."""
        return (f"{self.spec.title} [{self.profile}]{provenance.ran_note(records)}{provenance.synthetic_note(records)}"
                f"{provenance.provenance_note(records)}")

    def report(self, final: pd.DataFrame) -> list[Path]:
        kind = C.choice("study.report", self.spec.report, renderers.RENDERERS)
        resolved = OmegaConf.to_container(self.spec, resolve=True)
        return renderers.RENDERERS[kind](final, resolved, self.out / self.experiment, self.title(final))

    def tuned_per_table(self, df: pd.DataFrame, chosen: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """The final records to set beside each published table of `compare`: the study's own,
        or, for a table the paper tuned per attack (Tables 1, 2, 4) when the study selected by
        another criterion, a per-attack selection over the same grid runs."""
        frames = {}
        for table in map(str, self.spec.get("compare") or []):
            attacks = published.attacks(table)
            if attacks and self.spec.get("select") != "attack":
                ran = [a for a in attacks if "attack" in df and (df["attack"] == a).any()]
                frames[table] = self.final(df, self.select(df, "attack", ran)) if ran else self.final(df, chosen)
            else:
                frames[table] = self.final(df, chosen)
        return frames

    def versus_paper(self, final: pd.DataFrame, frames: dict[str, pd.DataFrame]) -> tuple[list[Path], dict[str, pd.DataFrame]]:
        """`<name>_vs_paper.*` (ours | paper | delta per published table of `compare`) and
        `claims.*` (every claim of the paper, read in these records), titled as the figure's table."""
        title = self.title(final)
        joined = {table: comparison.side_by_side(frame, table) for table, frame in frames.items()}
        written = renderers.versus_paper(joined, final, self.out / f"{self.experiment}_vs_paper", title) if joined else []
        verdicts = claims.evaluate(comparison.study_cells(final, frames))
        written += renderers.claims_table(verdicts, final, self.out / "claims", title)
        return written, {"claims": verdicts, **{f"table{t}_vs_paper": j for t, j in joined.items()}}

    def log_report(self, tables: dict[str, pd.DataFrame]) -> None:
        """The report's W&B run (logger of the runs' config, job type "report"): the
        side-by-side and the claims as tables."""
        logger = spec.run_config(self.experiment, self.profile, [o for o in self.extra if not o.startswith("hydra")]).logger
        config = {"study": OmegaConf.to_container(self.spec, resolve=True), "profile": self.profile}
        with tracking.start(logger, config, self.sweep, job_type="report",
                            name=f"{self.experiment}-{self.profile}-report") as tracker:
            tracker.log_tables(tables)

    def load(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(records, selection) as the last run wrote them to `results/<experiment>/<profile>/`:
        the notebooks start here, so they need the records, not the runs."""
        records = self.out / "records.csv"
        if not records.is_file():
            raise BLFError(f"{records} does not exist; allowed: the output folder of a finished "
                           f"`make {self.experiment} PROFILE={self.profile}` (or --stage report)")
        picked = self.out / "selection.csv"
        return pd.read_csv(records), pd.read_csv(picked) if picked.is_file() else pd.DataFrame()

    @contextmanager
    def held(self):
        """The sweep for this driver alone: a second driver on it says which process holds it
        (the runs' own locks would each refuse it, one traceback per job)."""
        if self.dry_run:
            yield
            return
        self.sweep.mkdir(parents=True, exist_ok=True)
        me = f"process {os.getpid()}: python -m blf.study {self.experiment} --profile {self.profile}"
        with storage.exclusive(self.sweep / ".driver.lock", me, lambda holder: BusyError(
                f"{self.sweep} is in use by another study driver ({holder}); allowed: wait for it to end, or another "
                "--sweep-dir")):
            yield

    def run(self, stage: str) -> int:
        with self.held():
            if not self.dry_run:
                # Every output is written without following a link: one planted in the output
                # folder is refused before any stage runs or any file is written.
                storage.refuse_links_inside(self.out)
            return self.run_stages(stage)

    def run_stages(self, stage: str) -> int:
        if stage in ("all", "grid"):
            self.grid()
        df, jobs = self.records()
        chosen = self.select(df) if stage in ("all", "seeds", "report") else pd.DataFrame()
        if stage in ("all", "seeds") and (not chosen.empty or self.also_seeded()):
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
                               f"({self.spec.get('select')}): {self.title(df)}\n\n{selection.markdown(chosen)}\n")
        final = self.final(df, chosen)
        written = self.report(final)
        if self.spec.get("also_seeded"):  # settings over the seeds beyond the selected ones: their own table
            resolved = OmegaConf.to_container(self.spec, resolve=True)
            written += renderers.seeded(df, resolved, self.out / f"{self.experiment}_seeds", self.title(df))
        compared, tables = self.versus_paper(final, self.tuned_per_table(df, chosen))
        written += compared
        self.log_report(tables)
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
        if warning := comparison.banner(final):
            print(f"\n!! {warning}\n", file=sys.stderr)
        if self.failures:
            print(f"!! {len(self.failures)} multirun(s) failed or left runs unfinished (listed above with their logs); "
                  "see jobs.csv", file=sys.stderr)
        # Last, the answer the command was run for: the study's table and how to read it.
        sys.stderr.flush()
        table = self.out / f"{self.experiment}.md"
        if table.is_file():
            print(f"\n{table.read_text().rstrip()}\n\n{comparison.reading(final, self.experiment)}", flush=True)
        return 1 if self.failures else 0


def job_environment() -> dict[str, str]:
    """The jobs' environment: the driver's, with `src` first on PYTHONPATH and the caller's
    entries kept (packages that come through PYTHONPATH: module systems, the GPU route's .gpu-site)."""
    kept = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(REPO / "src")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *kept])}


class Stopped(Exception):
    """SIGTERM or SIGINT reached the driver (main installs the handler)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stopped(signum, frame):
    raise Stopped(signum)


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (joblib's workers under a multirun), from /proc; none elsewhere."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def stop_jobs(process: subprocess.Popen, signum: int, grace: float = 60.0) -> None:
    """Pass `signum` to a multirun's process and every process below it (joblib's workers outlive
    their parent otherwise) and wait; what still runs after `grace` seconds is killed. Its
    finished runs are kept; a rerun resumes the others."""
    pids = [process.pid, *descendants(process.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + grace
    while any(alive(pid) for pid in pids[1:]) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    process.wait()


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, ended but not reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def run_overrides(run: Path, drop: tuple[str, ...]) -> list[str]:
    """The task overrides that produced a run folder, minus the keys in `drop`. The file is not
    trusted (trust.check_overrides): only plain settings are relaunched; the caller checks that
    each key exists by composing them."""
    source = run / ".hydra" / "overrides.yaml"
    try:
        entries = storage.read_yaml(source)  # bounded: size, depth, no aliases
    except OSError as error:
        raise UntrustedFileError(f"{source} cannot be read ({type(error).__name__}); allowed: the file Hydra wrote") from None
    overrides = trust.check_overrides([] if entries is None else entries, source)
    # Only the run's own settings: where jobs go and how they launch stay the driver's.
    return [o for o in overrides if o.split("=", 1)[0] not in drop]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="a study of conf/study/ (fig1, fig3, ..., table5, demo)")
    parser.add_argument("--profile", default="paper", choices=["paper", "smoke"])
    parser.add_argument("--launcher", default="basic", choices=LAUNCHERS)
    parser.add_argument("--jobs", type=C.count_argument("jobs"), default=2, help="parallel jobs for --launcher joblib")
    parser.add_argument("--stage", default="all", choices=["all", "grid", "seeds", "report"])
    parser.add_argument("--dry-run", action="store_true", help="print the multiruns without running them")
    parser.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                        help="how often the progress line repeats while jobs run (it also shows on every change)")
    parser.add_argument("--sweep-dir", type=Path, help="where the runs go (default multirun/<experiment>/<profile>)")
    parser.add_argument("--out-dir", type=Path, help="where records, figures and tables go (default results/<experiment>/<profile>)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides added to every job, e.g. trainer.threads=1")
    args = parser.parse_intermixed_args(argv)  # overrides may follow the options
    handlers = {signum: signal.signal(signum, _stopped) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        study = Study(args.name, args.profile, args.launcher, args.jobs, args.dry_run, args.overrides,
                      args.sweep_dir, args.out_dir, args.progress_every)
        study.check_overrides()
        return study.run(args.stage)
    except Stopped as stop:
        print(f"error: stopped by {stop}; its jobs were stopped with it. Finished runs are kept, and rerunning "
              "the command resumes the others", file=sys.stderr)
        return 128 + stop.signum
    except BLFError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the file system's answer (an output path that is a file, a full disk): nothing is lost
        print(f"error: {error.filename or 'a file'}: {error.strerror or error}; allowed: a writable --sweep-dir and "
              "--out-dir with free space", file=sys.stderr)
        return 2
    except (HydraException, OmegaConfBaseException) as error:  # an override Hydra cannot parse or apply
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"error: {first}; allowed: overrides of conf/train.yaml's keys (key=value, group=option)", file=sys.stderr)
        return 2
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
