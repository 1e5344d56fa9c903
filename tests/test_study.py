"""Experiments as configs, the study driver (grid -> selection -> seeds -> report), the
launchers, and resumable sweeps."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from omegaconf import open_dict

from blf.errors import ConfigError
from blf.report import collect, renderers
from blf.run import storage
from blf.study import driver
from blf.study import spec as specs
from blf.study import sweep as sweeps
from conftest import REPO, TINY, compose_config, run_app

EXPERIMENTS = ["demo", "fig1", "fig3", "fig4", "fig5", "fig7", "mnist_2c2f", "table1", "table2", "table3", "table4", "table5"]


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("profile", ["paper", "smoke"])
def test_every_experiment_composes_and_its_grid_entries_are_valid_overrides(name, profile):
    study = driver.Study(name, profile)
    spec = study.spec
    assert spec.report in renderers.RENDERERS and spec.get("select", "protocol") in ("protocol", "attack", "none")
    assert spec.grid and spec.seeds
    if spec.get("select", "protocol") != "none":
        eps = specs.budgets(spec)
        assert all(isinstance(v, float) and 0 < v <= 0.3 for v in eps.values()), eps
    for overrides in study.grid_overrides():
        first = study.jobs(overrides)[0]  # as Hydra expands the sweep (a list value is one value)
        job = compose_config(overrides=first)
        assert job.experiment_name == name and job.profile_name == profile


def test_paper_grids_and_the_smoke_reduction():
    paper = driver.Study("fig3", "paper").grid_overrides()
    smoke = driver.Study("fig3", "smoke").grid_overrides()
    assert "regularizer.lam=0.01,0.05,0.1,0.3,0.5" in paper[1] and "regularizer.lam=0.01,0.05" in smoke[1]
    assert "model=2c2f,4c3f" in smoke[1] and "seed=0" in smoke[1]  # only hyper-parameter grids shrink
    assert specs.seeds_of(specs.load("fig3", "paper"), "mnist") == [0, 1, 2, 3, 4]
    assert specs.seeds_of(specs.load("fig3", "smoke"), "mnist") == [0]
    assert specs.seeds_of(specs.load("fig7", "paper"), "cifar10") == [0, 1, 2]
    assert specs.load("fig4", "paper").study.transfer.wrn34_10 == "resnet18"


def test_study_specs_live_apart_from_runs():
    """The spec is the driver's: a run's config has no `study` section, and an unknown study or
    profile is refused with the allowed values."""
    run = compose_config(overrides=["experiment=fig3", "profile=smoke"])
    assert "study" not in run and "study_limits" not in run
    assert driver.Study("fig3", "smoke").spec.title.startswith("Fig. 3")
    with pytest.raises(ConfigError, match="study='fig99' is not an option; allowed: demo, fig1"):
        specs.load("fig99", "paper")
    with pytest.raises(ConfigError, match="--profile='huge' is not an option; allowed: paper, smoke"):
        specs.load("fig3", "huge")


def test_sweep_expansion_spells_values_as_hydra_does():
    """The jobs of a multirun, in Hydra's order and spelling (run folders are named from it)."""
    jobs = sweeps.expand(["model=2c2f,4c3f", "head.gamma=0.5,1", "progress=true", "model=4c3f,2c2f"])
    assert sweeps.expand(["seed=range(2)"]) == [["seed=0"], ["seed=1"]]
    assert jobs == [["model=4c3f", "head.gamma=0.5", "progress=True"], ["model=4c3f", "head.gamma=1", "progress=True"],
                    ["model=2c2f", "head.gamma=0.5", "progress=True"], ["model=2c2f", "head.gamma=1", "progress=True"]]
    with pytest.raises(ConfigError, match="range or interval sweep"):
        sweeps.expand(["head.gamma=interval(0.5,1.0)"])


def test_launchers_share_the_cores():
    assert sweeps.launcher_overrides("basic", 1) == []
    joblib = sweeps.launcher_overrides("joblib", 2)
    assert joblib[:2] == ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    assert joblib[2] == f"trainer.threads={max(1, (os.cpu_count() or 1) // 2)}"
    assert sweeps.launcher_overrides("slurm", 1) == ["hydra/launcher=slurm"]


def small_study(tmp_path, launcher="basic"):
    """fig3's driver on two tiny grid entries and two seeds, with BLF gamma 1.5 (off the smoke
    grid) over the seeds whatever the selection, in tmp_path."""
    # The integrity checks have tests of their own (test_integrity.py); here they would only add minutes.
    s = driver.Study("fig3", "smoke", launcher=launcher, jobs=2,
                     overrides=[*TINY, "trainer.epochs=1", "dataset.n_train=null", "eval.integrity.enabled=false"],
                    sweep=tmp_path / "multirun", out=tmp_path / "results")
    with open_dict(s.cfg):
        s.cfg.study.grid = {"baseline": {"model": "2c2f", "training": "standard"},
                            "blf": {"model": "2c2f", "training": "standard", "head": "blf", "head.gamma": "0.5,1.0,1.5"}}
        s.cfg.study.seeds = [0, 1]
        s.cfg.study.also_seeded = {"blf_1_5": {"model": "2c2f", "training": "standard", "head": "blf", "head.gamma": "1.5"}}
        s.cfg.limits.smoke.seeds = None
    s.spec = s.cfg.study
    return s


def test_study_runs_grid_selection_seeds_and_report_with_joblib(tmp_path, capsys):
    s = small_study(tmp_path, launcher="joblib")
    assert s.run("all") == 0
    assert "!! SYNTHETIC DATA: ['mnist']" in capsys.readouterr().err  # TINY trains on synthetic data
    jobs = pd.read_csv(tmp_path / "results" / "jobs.csv")
    # grid: baseline + BLF at 2 of 3 gammas (smoke keeps 2); seeds: seed 1 of each choice, and
    # BLF gamma 1.5 (also_seeded) on seeds 0 and 1.
    assert len(jobs) == 7 and set(jobs["status"]) == {"complete"}
    chosen = pd.read_csv(tmp_path / "results" / "selection.csv")
    assert sorted(chosen["method"]) == ["BLF", "Baseline"] and set(chosen.loc[chosen["method"] == "BLF", "hp_value"]) <= {0.5, 1.0}
    for name in ("fig3.png", "fig3.pdf", "fig3.md", "fig3.tex", "records.csv", "records.parquet", "selection.md"):
        assert (tmp_path / "results" / name).is_file(), name
    assert len(pd.read_parquet(tmp_path / "results" / "records.parquet")) == len(pd.read_csv(tmp_path / "results" / "records.csv"))
    table = (tmp_path / "results" / "fig3.md").read_text()
    assert "BLF (gamma=" in table and "Baseline" in table and "[SYNTHETIC DATA: mnist]" in table.splitlines()[0]
    assert "BLF (gamma=1.5)" not in table  # the figure is the selection's
    seeded = (tmp_path / "results" / "fig3_seeds.md").read_text()
    assert "(2 seeds each)" in seeded.splitlines()[0] and "BLF (gamma=1.5)" in seeded and "Baseline" in seeded

    # Rerunning finds everything done: nothing is launched, no run retrains, no record is duplicated.
    before = {p: p.stat().st_mtime for p in (tmp_path / "multirun").rglob("checkpoints/last.pt")}
    assert small_study(tmp_path).run("all") == 0
    out = capsys.readouterr().out
    assert "$ " not in out and out.count("finished, not launched") == 5  # 2 grid + 2 seed + 1 also_seeded multiruns
    assert {p: p.stat().st_mtime for p in (tmp_path / "multirun").rglob("checkpoints/last.pt")} == before
    df, _ = collect.collect(tmp_path / "multirun")
    keys = df[df["kind"] == "robustness"][["run_dir", "attack", "eps"]]
    assert not keys.duplicated().any()
    # Another evaluation setting is work left to do: that multirun would launch again.
    again = small_study(tmp_path)
    grid = again.grid_overrides()
    assert again.finished(grid[0])
    again.extra.append("eval.n=16")
    assert not again.finished(grid[0])


def test_a_selected_settings_seeds_land_beside_its_grid_run(tmp_path, monkeypatch):
    """mnist_2c2f's grid entries leave the model to the experiment: the seeds of the selected
    setting are the grid run's overrides with other seeds, so its seed-0 folder is the grid run's
    and seeds 1-4 are the folders `make mnist-2c2f` trained, not a second set under other names."""
    s = driver.Study("mnist_2c2f", "paper", overrides=["trainer.threads=1"], sweep=tmp_path / "multirun",
                     out=tmp_path / "results")
    grid_run = tmp_path / "multirun" / "regularizer.lam:0.05+regularizer:logit_squeezing+seed:0"
    storage.write_text(grid_run / ".hydra" / "overrides.yaml", "- experiment=mnist_2c2f\n- profile=paper\n"
                       "- regularizer=logit_squeezing\n- regularizer.lam=0.05\n- seed=0\n- trainer.threads=1\n")
    chosen = pd.DataFrame([{"run_dir": str(grid_run), "model": "2c2f", "method": "LSQ", "setting": "ST",
                            "dataset": "mnist", "seed": 0, "for_attack": None}])
    launched = []
    monkeypatch.setattr(s, "stage", lambda name, multiruns: launched.extend(multiruns))
    s.seeds(chosen)
    lsq = [o for o in launched if "regularizer=logit_squeezing" in o]
    assert len(lsq) == 1 and not any(o.startswith("model=") for o in lsq[0])
    assert [f.name for f in s.folders(lsq[0])] == [grid_run.name.replace("seed:0", f"seed:{n}") for n in range(5)]


def test_a_transferred_choice_runs_the_source_setting_on_its_own_model(tmp_path, monkeypatch):
    """fig4: WRN-34-10 takes ResNet-18's selected setting ("the same hyper-parameters as those of
    RN18"): its seeds are the ResNet-18 grid run's overrides with the model swapped."""
    s = driver.Study("fig4", "paper", overrides=["trainer.threads=1"], sweep=tmp_path / "multirun", out=tmp_path / "results")
    grid_run = tmp_path / "multirun" / "head.gamma:0.8+head:blf+model:resnet18+seed:0+training:standard"
    storage.write_text(grid_run / ".hydra" / "overrides.yaml", "- experiment=fig4\n- profile=paper\n- model=resnet18\n"
                       "- training=standard\n- head=blf\n- head.gamma=0.8\n- seed=0\n")
    row = {"method": "BLF", "setting": "ST", "dataset": "cifar10", "seed": 0, "for_attack": None}
    chosen = pd.DataFrame([{**row, "run_dir": str(grid_run), "model": "resnet18"},
                           {**row, "run_dir": None, "model": "wrn34_10"}])
    launched = []
    monkeypatch.setattr(s, "stage", lambda name, multiruns: launched.extend(multiruns))
    s.seeds(chosen)
    models = [[o for o in overrides if o.startswith("model=")] for overrides in launched]
    assert models == [["model=resnet18"], ["model=wrn34_10"]]
    assert [f.name for f in s.folders(launched[1])][0] == grid_run.name.replace("resnet18", "wrn34_10")


def test_the_driver_shows_progress_and_names_unfinished_runs_with_their_logs(tmp_path, capsys):
    s = small_study(tmp_path)
    s.extra += ["optim.lr=1e30", "optim.momentum=0.9"]  # the loss overflows: every job fails in training
    with open_dict(s.cfg):
        s.cfg.study.grid = {"blf": {"model": "2c2f", "training": "standard", "head": "blf", "head.gamma": "0.5,1.0"}}
    s.spec = s.cfg.study
    s.grid()
    err = capsys.readouterr().err
    assert "[grid] 0/2 runs finished" in err
    folders = s.folders(s.grid_overrides()[0])
    for folder in folders:
        assert f"!! not finished: {folder} (logs: {folder / 'train.log'})" in err
        assert "Lower optim.lr" in (folder / "train.log").read_text()  # the error, in the log named
    assert len(s.failures) == 1 and "1 multirun(s) failed" not in err  # the run's summary comes at the report


def test_progress_counts_finished_training_and_waiting_runs(tmp_path):
    from blf.study.progress import StageProgress

    sweep = tmp_path / "sweep"
    assert run_app("train.py", "-m", *TINY, "trainer.epochs=2", "seed=0,1", f"hydra.sweep.dir={sweep}").returncode == 0
    done, stopped = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    # `stopped` as a run killed after its first epoch: last.pt there, one line of metrics, not finished.
    (stopped / "finished.json").unlink()
    (stopped / "metrics.jsonl").write_text((stopped / "metrics.jsonl").read_text().splitlines()[0] + "\n")
    progress = StageProgress("grid", [done, stopped, sweep / "not-yet"], sweep)
    assert progress.line() == "[grid] 1/3 runs finished, 1 training (1 of 2 epochs), 1 not started"
    assert progress.report_failures([done, stopped]) == [f"!! not finished: {stopped} (logs: {stopped / 'train.log'})"]
    # Trained every epoch, not finished: its evaluation is running.
    (stopped / "metrics.jsonl").write_text((done / "metrics.jsonl").read_text())
    assert progress.line() == "[grid] 1/3 runs finished, 1 evaluating, 1 not started"


def test_progress_prints_a_line_when_a_run_changes_state_not_for_each_epoch(tmp_path, capsys, monkeypatch):
    from blf.study import progress as module

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    jobs = iter([{"epochs": 5, "epochs_done": n} for n in (1, 2, 3, 5, 5)])
    monkeypatch.setattr(module.collect, "job_status", lambda folder: next(jobs))
    shown = module.StageProgress("grid", [run], tmp_path, every=3600)
    for _ in range(5):
        shown.show()
    assert capsys.readouterr().err.splitlines() == ["[grid] 0/1 runs finished, 1 training (1 of 5 epochs)",
                                                    "[grid] 0/1 runs finished, 1 evaluating"]


def test_submitit_local_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_app("train.py", "-m", *TINY, "trainer.epochs=1", "seed=0,1", "hydra/launcher=submitit_local",
                     "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    df, jobs = collect.collect(sweep)
    assert len(jobs) == 2 and set(jobs["status"]) == {"complete"}
    assert sorted(df[df["kind"] == "norms"]["seed"]) == [0, 1]


def test_aggregation_reports_unfinished_runs(tmp_path):
    sweep = tmp_path / "sweep"
    assert run_app("train.py", "-m", *TINY, "trainer.epochs=1", "seed=0,1", f"hydra.sweep.dir={sweep}").returncode == 0
    broken = next(p for p in sweep.iterdir() if p.is_dir() and "seed:1" in p.name)
    (broken / "results.jsonl").unlink()
    df, jobs = collect.collect(sweep)
    assert dict(zip(jobs["run_dir"].map(lambda p: "seed:1" in p), jobs["status"])) == {True: "training", False: "complete"}
    assert "warning: training" in collect.report_jobs(jobs)
    assert set(df["seed"]) == {0}


def rows_per_attack(robust) -> dict:
    """Per attack, the budgets of its grid: the grid attacks (PGD, BPDA envelope, DLR on pre-logits)
    at fig3's seven eps, the others at the table eps."""
    grid = {"pgd", "bpda_envelope", "pgd_dlr_prelogits"}
    return {attack: 7 if attack in grid else 1 for attack in robust["attack"].unique()}


@pytest.mark.slow
def test_killed_smoke_sweep_resumes_without_loss_or_duplicates(tmp_path):
    """Kill `make fig3 PROFILE=smoke` midway (the driver and its jobs), rerun it, and find every
    job finished exactly once."""
    command = [sys.executable, "-m", "blf.study", "fig3", "--profile", "smoke",
               "--sweep-dir", str(tmp_path / "multirun"), "--out-dir", str(tmp_path / "results")]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "WANDB_MODE": "disabled"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 900
    while len(list((tmp_path / "multirun").glob("*/results.jsonl"))) < 6 and time.time() < deadline:
        time.sleep(1)
    time.sleep(2)  # somewhere inside a later job
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished_before = len(list((tmp_path / "multirun").glob("*/results.jsonl")))
    assert 6 <= finished_before < 36
    assert subprocess.run(command, cwd=REPO, env=env, capture_output=True).returncode == 0
    df, jobs = collect.collect(tmp_path / "multirun")
    assert len(jobs) == 36 and set(jobs["status"]) == {"complete"}
    for run_dir, rows in df.groupby("run_dir"):
        robust = rows[rows["kind"] == "robustness"]
        assert not robust[["attack", "eps"]].duplicated().any(), run_dir
        assert (robust["attack"] == "pgd").sum() == 7  # the seven PGD budgets, once each
        # and every attack of the run's set (the paper's PGD and the adaptive set) at the same budgets as the others
        assert robust.groupby("attack").size().to_dict() == rows_per_attack(robust), run_dir
    assert len(storage.read_jsonl(next((tmp_path / "multirun").glob("*/metrics.jsonl")))) == 2


def test_a_table_tuned_per_attack_is_compared_on_its_own_selection(tmp_path):
    """mnist_2c2f selects by the protocol for its curves (largest clean accuracy), but sets its
    Square numbers beside Table 2 as the paper tuned them: the largest Square accuracy."""
    study = driver.Study("mnist_2c2f", "paper", sweep=tmp_path / "multirun", out=tmp_path / "results")
    rows = []
    for gamma, clean, square in [(0.5, 99.0, 40.0), (1.0, 98.0, 60.0)]:
        run = str(tmp_path / f"blf{gamma}")
        common = {"dataset": "mnist", "model": "2c2f", "training": "standard", "head": "blf", "gamma": gamma,
                  "regularizer": "none", "seed": 0, "run_dir": run, "clean_test_acc": clean, "profile": "paper"}
        rows += [{**common, "kind": "robustness", "attack": "pgd", "eps": 0.15, "accuracy": 30.0},
                 {**common, "kind": "robustness", "attack": "square", "eps": 0.15, "accuracy": square}]
    df = pd.DataFrame(rows)
    chosen = study.select(df)
    assert list(chosen["hp_value"]) == [0.5]  # the protocol: clean accuracy
    frames = study.tuned_per_table(df, chosen)
    assert sorted(frames) == ["2", "4"]
    square = frames["2"][frames["2"]["attack"] == "square"]
    assert list(square["gamma"]) == [1.0] and list(square["accuracy"]) == [60.0]
    # Table 4's attacks were not run here: its cells come from the study's own selection.
    assert set(frames["4"]["gamma"]) == {0.5}
    written, logged = study.versus_paper(study.final(df, chosen), frames)
    names = sorted(p.name for p in written)
    assert names == ["claims.csv", "claims.md", "mnist_2c2f_vs_paper.csv", "mnist_2c2f_vs_paper.md",
                     "mnist_2c2f_vs_paper.tex"]
    joined = logged["table2_vs_paper"]
    blf = joined[(joined["model"] == "2c2f") & (joined["setting"] == "ST") & (joined["method"] == "BLF")].iloc[0]
    assert (blf["ours"], blf["paper"]) == (60.0, 59.4)


def test_every_file_of_the_report_says_what_ran(tmp_path):
    """`python -m blf.study mnist_2c2f trainer.epochs=1 eval.n=20` (two grid runs): the spec's title
    says 100 epochs and 1000 test images; every title the study writes (the figure's table, the
    side-by-side, the claims, the selection) says what ran instead."""
    overrides = [*TINY, "trainer.epochs=1", "eval.n=20", "dataset.n_train=null", "attack=[pgd]",
                 "eval.integrity.enabled=false"]
    s = driver.Study("mnist_2c2f", "smoke", overrides=overrides, sweep=tmp_path / "multirun", out=tmp_path / "results")
    with open_dict(s.cfg):
        s.cfg.study.grid = {"baseline": {}, "blf": {"head": "blf", "head.gamma": "1.0"}}
    s.spec = s.cfg.study
    assert s.run("all") == 0
    ran = "[ran: 1 epoch, 20 test images, PGD-3]"
    for name in ("mnist_2c2f.md", "mnist_2c2f_vs_paper.md", "mnist_2c2f_vs_paper.tex", "claims.md", "selection.md"):
        first = (tmp_path / "results" / name).read_text().splitlines()[0]
        assert ran in first and "[SYNTHETIC DATA: mnist]" in first, (name, first)


def test_the_report_logs_the_comparison_and_the_claims_to_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    study = driver.Study("table2", "smoke", overrides=["logger=wandb"], sweep=tmp_path / "multirun", out=tmp_path / "out")
    study.log_report({"claims": pd.DataFrame({"claim": ["a", "b"], "verdict": ["holds", "not measured"], "numbers": ["1", None]})})
    tables = list((tmp_path / "multirun").rglob("offline-run-*/files/media/table/report/claims_*.table.json"))
    assert len(tables) == 1
    logged = json.loads(tables[0].read_text())
    assert logged["columns"] == ["claim", "verdict", "numbers"] and logged["data"] == [["a", "holds", "1"], ["b", "not measured", None]]


def test_jobs_keep_the_callers_pythonpath_after_src(monkeypatch):
    """Packages that come through PYTHONPATH (module systems, the GPU route's .gpu-site) reach the jobs."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/opt/site-a", str(driver.REPO / "src"), "/opt/site-b"]))
    assert driver.job_environment()["PYTHONPATH"].split(os.pathsep) == [str(driver.REPO / "src"), "/opt/site-a", "/opt/site-b"]
    monkeypatch.delenv("PYTHONPATH")
    assert driver.job_environment()["PYTHONPATH"] == str(driver.REPO / "src")


@pytest.mark.parametrize("shards", [None, "2"])
def test_slurm_shared_asks_for_shards_of_a_gpu_not_a_gpu(tmp_path, monkeypatch, shards):
    """LAUNCHER=slurm_shared: several runs per GPU, by SLURM's GPU shards. The sbatch script that
    submitit writes from the launcher's config asks for a shard and no whole GPU."""
    import submitit.slurm.slurm
    from hydra import compose, initialize_config_dir

    from blf.study import sweep
    from conftest import CONF

    if shards:
        monkeypatch.setenv("SLURM_SHARDS_PER_JOB", shards)
    assert sweep.launcher_overrides("slurm_shared", 1) == ["hydra/launcher=slurm_shared"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra/launcher=slurm_shared"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    # The script submitit's SlurmExecutor would submit, rendered by the function the executor calls:
    # the executor itself looks for `srun` when built, and this check needs no SLURM on the machine.
    script = submitit.slurm.slurm._make_sbatch_string("python src/train.py", tmp_path, gres=launcher.gres,
                                                      gpus_per_node=launcher.gpus_per_node, cpus_per_task=2, time=1)
    assert f"#SBATCH --gres=shard:{shards or 1}\n" in script
    gpus = [line for line in script.splitlines() if "gpu" in line.lower() and "=0" not in line]
    assert not gpus, gpus  # no whole GPU: at most --gpus-per-node=0
