"""A hostile user who controls only the files of a run folder (docs/security.md): nothing they
write may run code, write through a link, be relaunched as asked, or keep a reader busy."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from blf import trained, trust
from blf.errors import UntrustedFileError
from blf.run import storage
from conftest import REPO, TINY, bad, run_app, train

PLUGIN = "blfplugin"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    train(run_dir, "trainer.epochs=1", "analysis=[]", "eval.integrity.enabled=false")
    return run_dir


def copy_run(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target, symlinks=True)
    return target


def plant(run_dir: Path, key: str = "model") -> Path:
    """A module beside the run that leaves a marker when imported, and the run's checkpoints
    naming a class of it at `<key>._target_`. Returns the marker's path."""
    marker = run_dir.parent / f"imported-{run_dir.name}"
    (run_dir / f"{PLUGIN}.py").write_text(textwrap.dedent(f"""\
        open({str(marker)!r}, "w").write("imported")
        import torch
        class Net(torch.nn.Module):
            pass
        """))
    for name in ("best", "last"):
        path = run_dir / "checkpoints" / f"{name}.pt"
        state = storage.load_checkpoint(path)
        state["config"][key]["_target_"] = f"{PLUGIN}.Net"
        storage.save_checkpoint(state, path)
    return marker


def python(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# --- 1. code runs from a file -----------------------------------------------------------------


@pytest.mark.parametrize("key", ["model", "head"])
def test_a_class_named_by_a_checkpoint_is_never_imported_by_load_or_export(trained_run, tmp_path, key):
    run_dir = copy_run(trained_run, tmp_path / "run")
    marker = plant(run_dir, key)
    # From inside the folder, where the working directory is on sys.path.
    loaded = python("-c", "import blf; blf.load('.')", cwd=run_dir)
    assert loaded.returncode != 0 and "UntrustedFileError" in loaded.stderr
    assert f"{key}._target_='{PLUGIN}.Net' names code outside this project" in loaded.stderr
    exported = python("-m", "blf.export", ".", "--format", "state_dict", "--out", str(tmp_path / "out"), cwd=run_dir)
    line = bad(exported)
    assert "best.pt" in line and f"{key}._target_='{PLUGIN}.Net'" in line and "--trust-code" in line
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_evaluate_refuses_a_foreign_class_and_the_opt_in_imports_it(trained_run, tmp_path):
    run_dir = copy_run(trained_run, tmp_path / "run")
    marker = plant(run_dir)
    before = (run_dir / "results.jsonl").read_bytes()
    importable = {"PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{run_dir}"}  # the module could be imported
    line = bad(run_app("evaluate.py", f"run_dir={run_dir}", "logger=none", cwd=run_dir, env=importable))
    assert f"model._target_='{PLUGIN}.Net'" in line and "trust_code=true" in line
    assert not marker.exists() and (run_dir / "results.jsonl").read_bytes() == before
    # The user's own opt-in, for a folder they trust: the module is imported (its class then fails to build).
    trusting = run_app("evaluate.py", f"run_dir={run_dir}", "logger=none", "trust_code=true", cwd=run_dir, env=importable)
    assert marker.exists() and trusting.returncode != 0


def test_the_allow_list_resolves_only_project_classes():
    assert trust.is_project_class("blf.nn.heads.BLF") and trust.is_project_class("torch.optim.SGD")
    # Reachable through a project module, but not the project's class: refused.
    assert not trust.is_project_class("blf.data.subprocess.Popen") and not trust.is_project_class("blf.data.subprocess")
    assert not trust.is_project_class("builtins.open") and not trust.is_project_class(f"{PLUGIN}.Net")
    with pytest.raises(UntrustedFileError, match=r"model.name='\.\./\.\./etc' is not an option name"):
        trust.check_config({"model": {"name": "../../etc"}}, "best.pt")


# --- 2. relaunch does what a file asks ----------------------------------------------------------


@pytest.mark.parametrize("entry, why", [
    ("+optim.bar={_target_:builtins.open,file:VICTIM,mode:w}", "adds or deletes a key"),
    ("optim.bar={_target_:builtins.open,file:VICTIM,mode:w}", "holds a mapping"),
    ("++trainer.epochs=1", "adds or deletes a key"),
    ("~head", "adds or deletes a key"),
    ("hydra.run.dir=/tmp/elsewhere", "sets what the command itself decides"),
    ("model._target_=blfplugin.Net", "sets what the command itself decides"),
    ("head.gamma=0.5,1.0", "is a sweep"),
    ("paths.data_dir=${oc.env:HOME}", "holds an interpolation"),
])
def test_the_seeds_stage_relaunches_only_plain_settings(tmp_path, entry, why):
    from blf.study import driver

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "multirun" / "grid-run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["head=blf", entry.replace("VICTIM", str(victim))]))
    with pytest.raises(UntrustedFileError, match=rf"overrides.yaml: entry .* {why}; allowed: key=value"):
        driver.run_overrides(run, drop=())
    assert victim.read_text() == "precious"


def test_a_key_the_configs_do_not_have_is_not_relaunched(tmp_path, capsys, monkeypatch):
    from blf.study import driver

    run = tmp_path / "multirun" / "grid-run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["head=blf", "optim.bar=1"]))
    study = driver.Study("fig3", "smoke", sweep=tmp_path / "multirun", out=tmp_path / "results", dry_run=True)
    monkeypatch.setattr(driver.collect, "folder", lambda run_dir: Path(run_dir))
    chosen = pd.DataFrame([{"dataset": "mnist", "model": "2c2f", "setting": "ST", "method": "BLF", "hp_value": 1.0,
                            "seed": 0, "run_dir": str(run), "for_attack": None}])
    with pytest.raises(UntrustedFileError, match=r"overrides.yaml: its overrides do not compose .*optim.bar"):
        study.seeds(chosen)
    assert "$ " not in capsys.readouterr().out  # nothing launched


def test_a_config_that_is_not_a_mapping_is_one_clear_error(trained_run, tmp_path):
    run_dir = copy_run(trained_run, tmp_path / "run")
    path = run_dir / "checkpoints" / "best.pt"
    state = storage.load_checkpoint(path)
    state["config"] = ["not", "a", "config"]
    storage.save_checkpoint(state, path)
    with pytest.raises(Exception, match="best.pt: its config is not a mapping"):
        trained.load(run_dir)


# --- 3. writes follow links ---------------------------------------------------------------------

# Every file and folder the project writes into a run folder.
WRITTEN = [".lock", "train.log", "evaluate.log", ".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml",
           "results.jsonl", "metrics.jsonl", "finished.json", "checkpoints/last.pt", "checkpoints/best.pt",
           "per_example/{first}", "checkpoints", "per_example", ".hydra", "analysis", "wandb", "wandb_id.json"]


def link(run_dir: Path, name: str, tmp_path: Path) -> tuple[Path, Path]:
    """`name` in the run folder replaced by a link to a victim (a file, or a folder with a file)."""
    first = sorted((run_dir / "per_example").iterdir())[0].name
    path = run_dir / name.format(first=first)
    path.parent.mkdir(parents=True, exist_ok=True)  # .hydra/: a run trained in process has none
    victim = tmp_path / "victim"
    if path.is_dir() or name in ("analysis", "wandb"):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        victim.mkdir()
        (victim / "precious.txt").write_text("precious")
    else:
        path.unlink(missing_ok=True)
        victim.write_text("precious")
    path.symlink_to(victim)
    return path, victim


def untouched(victim: Path) -> bool:
    if victim.is_dir():
        return [p.name for p in victim.iterdir()] == ["precious.txt"] and (victim / "precious.txt").read_text() == "precious"
    return victim.read_text() == "precious"


@pytest.mark.parametrize("name", WRITTEN)
def test_no_write_goes_through_a_link_in_a_run_folder(trained_run, tmp_path, name):
    from conftest import evaluate

    run_dir = copy_run(trained_run, tmp_path / "run")
    path, victim = link(run_dir, name, tmp_path)
    with pytest.raises(UntrustedFileError, match=rf"{path.name} is a symbolic link .* never writes through one"):
        evaluate(run_dir, "attack=[pgd]", "attack.pgd.nb_iter=2", "analysis=[loss_surface]")
    with pytest.raises(UntrustedFileError, match=rf"{path.name} is a symbolic link"):
        train(run_dir, "trainer.epochs=2", "analysis=[]", "eval.integrity.enabled=false")
    assert untouched(victim)


@pytest.mark.parametrize("script, name", [("train.py", "train.log"), ("train.py", ".hydra/config.yaml"),
                                          ("evaluate.py", "evaluate.log")])
def test_the_apps_refuse_a_linked_folder_before_hydra_writes_into_it(trained_run, tmp_path, script, name):
    """Hydra opens the log and writes `.hydra/` before any of the apps' code runs."""
    run_dir = copy_run(trained_run, tmp_path / "run")
    path, victim = link(run_dir, name, tmp_path)
    where = f"hydra.run.dir={run_dir}" if script == "train.py" else f"run_dir={run_dir}"
    line = bad(run_app(script, where, "logger=none", "dataset.synthetic=true", "dataset.synthetic_train=256",
                       "dataset.synthetic_test=64", "trainer.epochs=1", "eval.n=32", "attack.pgd.nb_iter=3")
               if script == "train.py" else run_app(script, where, "logger=none"))
    assert f"{path} is a symbolic link" in line and untouched(victim)


def test_a_log_file_and_a_lock_never_open_through_a_link(tmp_path):
    import logging

    from blf.console import NoFollowFileHandler

    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "train.log").symlink_to(victim)
    with pytest.raises(UntrustedFileError, match="train.log is a symbolic link"):
        NoFollowFileHandler(str(tmp_path / "train.log")).emit(logging.makeLogRecord({"msg": "x"}))
    (tmp_path / ".lock").symlink_to(victim)
    with pytest.raises(UntrustedFileError, match=r"\.lock is a symbolic link"):
        storage.open_nofollow(tmp_path / ".lock")
    assert victim.read_text() == "precious"


# --- 4. numbers are trusted -------------------------------------------------------------------


def tamper(path: Path, change) -> None:
    state = storage.load_checkpoint(path)
    change(state)
    torch_save = __import__("torch").save
    torch_save(state, path)  # as a hostile writer would: no check on the way in


@pytest.mark.parametrize("which, change, says", [
    ("last", lambda s: s.update(epoch=-3), "epoch=-3 is not a whole number >= 1"),
    ("last", lambda s: s.update(best_epoch=7), "best_epoch=7 is not within 1..1"),
    ("last", lambda s: s["history"].append(dict(s["history"][0])), "its history is not one row per epoch"),
    ("last", lambda s: s["history"][0].update(train_loss=float("nan")), "history row 1 holds non-finite train_loss"),
    ("best", lambda s: next(iter(s["model"].values())).fill_(float("nan")), r"weight \S+ holds NaN or infinite values"),
    ("best", lambda s: s.update(test_acc=float("inf")), "test_acc=inf is not a percentage"),
    ("best", lambda s: s.update(model=["weights"]), "its weights are not a mapping of names to tensors"),
])
def test_checkpoint_fields_are_checked_before_use(trained_run, tmp_path, which, change, says):
    from blf.errors import CheckpointError
    from conftest import evaluate

    run_dir = copy_run(trained_run, tmp_path / "run")
    tamper(run_dir / "checkpoints" / f"{which}.pt", change)
    records = (run_dir / "results.jsonl").read_bytes()
    with pytest.raises(CheckpointError, match=rf"{which}.pt: {says}"):
        if which == "last":
            train(run_dir, "trainer.epochs=2", "analysis=[]", "eval.integrity.enabled=false")
        else:
            evaluate(run_dir, "attack=[pgd]", "attack.pgd.nb_iter=2")
    assert (run_dir / "results.jsonl").read_bytes() == records
    assert storage.read_jsonl(run_dir / "metrics.jsonl") == storage.read_jsonl(trained_run / "metrics.jsonl")


# --- 5. poor answers to faults ------------------------------------------------------------------


def test_a_broken_record_file_is_reported_before_any_attack_runs(trained_run, tmp_path, monkeypatch):
    from blf.errors import RecordError
    from blf.eval import robustness
    from conftest import evaluate

    run_dir = copy_run(trained_run, tmp_path / "run")
    with open(run_dir / "results.jsonl", "a") as handle:
        handle.write('{"kind": "robustness", "att')  # a truncated last line
    monkeypatch.setattr(robustness, "evaluate", lambda *a, **k: pytest.fail("an attack ran"))
    with pytest.raises(RecordError, match=r"results.jsonl line \d+ is not valid JSON .* delete it"):
        evaluate(run_dir, "attack=[pgd]")
    with pytest.raises(RecordError, match=r"results.jsonl line \d+ is not valid JSON"):
        train(run_dir, "trainer.epochs=2")
    assert len(storage.read_jsonl(run_dir / "metrics.jsonl")) == 1  # training did not start either


def test_a_second_driver_on_a_sweep_says_which_process_holds_it(tmp_path, capsys):
    from blf.study import driver

    first = driver.Study("demo", "smoke", sweep=tmp_path / "sweep", out=tmp_path / "out")
    with first.held():
        code = driver.main(["demo", "--profile", "smoke", "--sweep-dir", str(tmp_path / "sweep"),
                            "--out-dir", str(tmp_path / "out2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0] == (f"error: {tmp_path / 'sweep'} is in use by another study driver (process {os.getpid()}: "
                      "python -m blf.study demo --profile smoke); allowed: wait for it to end, or another --sweep-dir")
    assert not (tmp_path / "out2").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum, launcher", [("SIGTERM", "basic"), ("SIGINT", "basic"), ("SIGTERM", "joblib")])
def test_a_signal_to_the_driver_stops_its_jobs_and_says_so_in_one_line(tmp_path, signum, launcher):
    import signal
    import time

    from blf.study.driver import alive, descendants

    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "WANDB_MODE": "disabled"}
    driver = subprocess.Popen(
        [sys.executable, "-m", "blf.study", "demo", "--profile", "smoke", "--launcher", launcher, "--jobs", "2",
         "--sweep-dir", str(sweep), "--out-dir", str(tmp_path / "out"), "dataset.synthetic=true", "trainer.epochs=1000",
         "logger=none"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(sweep.rglob("train.log")) or "epoch 1/" not in "".join(p.read_text() for p in sweep.rglob("train.log")):
        assert time.monotonic() < deadline and driver.poll() is None, driver.communicate()
        time.sleep(0.5)
    jobs = descendants(driver.pid)  # the multirun and, under joblib, its workers
    driver.send_signal(getattr(signal, signum))
    out, err = driver.communicate(timeout=90)
    assert jobs and not [pid for pid in jobs if alive(pid)], "jobs kept running after the driver stopped"
    assert driver.returncode == 128 + getattr(signal, signum)
    # The driver's line; a job the signal reached in its training says its own (SIGINT).
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert lines[-1] == (f"error: stopped by {signum}; its jobs were stopped with it. Finished runs are kept, and "
                         "rerunning the command resumes the others")
    assert set(lines[:-1]) <= {"error: interrupted; the last checkpoint and every record written are kept (each write "
                               "is atomic), and rerunning the command resumes"}
    assert "Traceback" not in err
    still = subprocess.run(["pgrep", "-f", str(sweep)], capture_output=True, text=True).stdout.split()
    assert still == [], "jobs kept running after the driver stopped"


def test_a_diverging_gamma_is_named_in_the_error(tmp_path):
    from blf.errors import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match=r"Lower optim.lr, head.gamma \(now 1e\+30\) or the regularizer"):
        train(tmp_path / "run", "head=blf", "head.gamma=1e30", "trainer.epochs=1")


def test_evaluate_takes_a_thread_count_of_its_own(trained_run, tmp_path):
    from conftest import evaluate

    run_dir = copy_run(trained_run, tmp_path / "run")
    outcome = evaluate(run_dir, "attack=[pgd]", "attack.pgd.nb_iter=2", "trainer.threads=1", "eval.integrity.enabled=false")
    assert {r["threads"] for r in outcome.added} == {1}
    saved = storage.load_checkpoint(run_dir / "checkpoints" / "best.pt")["config"]["trainer"]
    assert saved == storage.load_checkpoint(trained_run / "checkpoints" / "best.pt")["config"]["trainer"]


# --- 6. a small file keeps a reader busy ----------------------------------------------------------


def alias_bomb(levels: int = 9) -> str:
    """The "billion laughs" shape: each level nine aliases of the one before, 9**levels strings
    from a few hundred bytes once a reader copies the tree (OmegaConf does)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


# Each the body of a `.hydra` file no reader may expand, with what the refusal says.
HOSTILE_YAML = {
    "alias bomb": (alias_bomb(), "YAML aliases are not allowed"),
    "deep nesting": ("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "nests deeper than"),
    "oversized": ("# padding\n" * 100_000 + "trainer: {epochs: 1}\n", "is larger than"),
}


@pytest.fixture(scope="module")
def hydra_run(tmp_path_factory) -> Path:
    """A run folder as `python src/train.py` leaves it: Hydra's own `.hydra/*.yaml` and records."""
    run_dir = tmp_path_factory.mktemp("hydra") / "run"
    result = run_app("train.py", *TINY, "trainer.epochs=1", "analysis=[]", "eval.integrity.enabled=false",
                     f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


def hostile_sweep(hydra_run: Path, tmp_path: Path, name: str, text: str) -> tuple[Path, Path]:
    """(a sweep of a real run and a copy of it whose `.hydra/<name>` is `text`, the file)."""
    sweep = tmp_path / "sweep"
    copy_run(hydra_run, sweep / "good")
    hostile = copy_run(hydra_run, sweep / "zz-hostile") / ".hydra" / name
    hostile.write_text(text)
    return sweep, hostile


def timed(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    """`python <args>` from the repository, and its wall time. A reader busy for minutes is
    stopped at 60 seconds (the test fails); startup (torch, pandas) takes seconds."""
    import time

    start = time.monotonic()
    result = python(*args, cwd=REPO, timeout=60)
    return result, time.monotonic() - start


def test_hydras_own_files_hold_no_alias_and_read_as_yaml_reads_them(hydra_run):
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        path = hydra_run / ".hydra" / name
        assert storage.read_yaml(path) == yaml.safe_load(path.read_text()), name


@pytest.mark.parametrize("hostile", HOSTILE_YAML)
@pytest.mark.parametrize("name", ["config.yaml", "overrides.yaml"])
def test_the_report_refuses_a_hostile_hydra_file_in_one_line_at_once(hydra_run, tmp_path, name, hostile):
    text, says = HOSTILE_YAML[hostile]
    sweep, path = hostile_sweep(hydra_run, tmp_path, name, text)
    result, seconds = timed("-m", "blf.report", str(sweep), str(tmp_path / "out"))
    line = bad(result)
    assert f"{path.parent.parent.name}/.hydra/{name}" in line and says in line and "allowed:" in line
    assert len(result.stderr.strip().splitlines()) == 1 and seconds < 30
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("hostile", ["alias bomb", "deep nesting"])
@pytest.mark.parametrize("name", ["config.yaml", "overrides.yaml"])
def test_the_study_driver_refuses_a_hostile_hydra_file_in_one_line_at_once(hydra_run, tmp_path, name, hostile):
    text, says = HOSTILE_YAML[hostile]
    sweep, path = hostile_sweep(hydra_run, tmp_path, name, text)
    result, seconds = timed("-m", "blf.study", "demo", "--stage", "report", "--sweep-dir", str(sweep),
                            "--out-dir", str(tmp_path / "out"))
    line = bad(result)
    assert f"{path.parent.parent.name}/.hydra/{name}" in line and says in line and seconds < 30
    assert not (tmp_path / "out").exists()


def test_the_seeds_stage_reads_overrides_through_the_bounded_reader(tmp_path):
    from blf.study import driver

    run = tmp_path / "multirun" / "grid-run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- &a head=blf\n- *a\n")
    with pytest.raises(UntrustedFileError, match=r"grid-run/\.hydra/overrides\.yaml: YAML aliases are not allowed"):
        driver.run_overrides(run, drop=())


@pytest.mark.parametrize("text, says", [
    ("a: &x 1\n", "YAML aliases are not allowed"),  # an anchor alone: Hydra writes none either
    ("a: " + "{b: " * 40 + "1" + "}" * 40 + "\n", "nests deeper than 32 levels"),
    ("a: 1\n" * 60_000, "is larger than 256 KiB"),
])
def test_the_yaml_reader_bounds_what_it_accepts(tmp_path, text, says):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(UntrustedFileError, match=rf"^{re.escape(str(path))}:? .*{says}.*; allowed: "):
        storage.read_yaml(path)


def test_the_yaml_reader_reads_no_fifo_or_device(tmp_path):
    fifo = tmp_path / "overrides.yaml"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    with pytest.raises(UntrustedFileError, match=r"overrides.yaml is not a regular file"):
        storage.read_yaml(fifo)
    (tmp_path / "config.yaml").symlink_to("/dev/zero")  # endless
    with pytest.raises(UntrustedFileError, match=r"config.yaml is not a regular file"):
        storage.read_yaml(tmp_path / "config.yaml")


def oc_create(levels: int = 7) -> str:
    """An interpolation that asks OmegaConf's `oc.create` to parse an alias bomb: no alias in the
    file itself, one once the value is resolved."""
    return "${oc.create:'{" + alias_bomb(levels).strip().replace("\n", ", ") + "}'}"


@pytest.mark.parametrize("name", ["hydra.yaml", "config.yaml"])
def test_what_the_report_does_not_need_it_never_expands(hydra_run, tmp_path, name):
    """hydra.yaml is not read; a config's interpolations are followed only to other keys, never
    through a resolver (oc.create would parse its text as YAML, aliases included)."""
    config = yaml.safe_load((hydra_run / ".hydra" / "config.yaml").read_text())
    config["trainer"]["epochs"] = oc_create()
    sweep, _ = hostile_sweep(hydra_run, tmp_path, name, alias_bomb() if name == "hydra.yaml" else yaml.safe_dump(config))
    result, seconds = timed("-m", "blf.report", str(sweep), str(tmp_path / "out"))
    assert result.returncode == 0 and "Traceback" not in result.stderr and seconds < 30, result.stderr[-2000:]
    jobs = pd.read_csv(tmp_path / "out" / "jobs.csv")
    assert jobs["status"].tolist() == ["complete", "complete"]
    good, hostile = jobs["epochs"].tolist()
    assert good == 1 and (hostile == 1 if name == "hydra.yaml" else pd.isna(hostile))  # unknown: not resolved


def test_a_checkpoint_config_never_hands_omegaconf_an_interpolation(trained_run, tmp_path):
    """A checkpoint holds the resolved config: an interpolation in it was planted, and resolving
    it would run a resolver on the file's text (oc.create parses YAML, aliases included)."""
    import time

    run_dir = copy_run(trained_run, tmp_path / "run")
    for name in ("best", "last"):
        path = run_dir / "checkpoints" / f"{name}.pt"
        state = storage.load_checkpoint(path)
        state["config"]["head"]["gamma"] = oc_create()
        storage.save_checkpoint(state, path)
    start = time.monotonic()
    result = python("-c", f"import blf; blf.load({str(run_dir)!r})", cwd=tmp_path, timeout=60)
    assert time.monotonic() - start < 30 and "UntrustedFileError" in result.stderr, result.stderr[-2000:]
    assert "best.pt: head.gamma=" in result.stderr and "is an interpolation" in result.stderr


# --- 7. the report's output folder -------------------------------------------------------------


@pytest.mark.parametrize("command, table", [
    (("-m", "blf.report", "{sweep}", "{out}"), "accuracy.md"),
    # the study's table, written last: the driver must refuse before anything else is written
    (("-m", "blf.study", "demo", "--stage", "report", "--sweep-dir", "{sweep}", "--out-dir", "{out}"), "demo.md"),
], ids=["report", "study"])
def test_a_link_in_the_output_folder_is_refused_before_anything_is_written(hydra_run, tmp_path, command, table):
    sweep = tmp_path / "sweep"
    copy_run(hydra_run, sweep / "good")
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (out / table).symlink_to(victim)
    line = bad(python(*(a.format(sweep=sweep, out=out) for a in command), cwd=REPO, timeout=120))
    assert f"{out / table} is a symbolic link" in line and victim.read_text() == "precious"
    assert [p.name for p in out.iterdir()] == [table]  # nothing written beside it


@pytest.mark.parametrize("command", ["report", "study"])
def test_an_output_folder_that_is_a_file_is_one_line(hydra_run, tmp_path, capsys, command):
    from blf.report import collect
    from blf.study import driver

    sweep = tmp_path / "sweep"
    copy_run(hydra_run, sweep / "good")
    out = tmp_path / "out"
    out.write_text("precious")
    code = (collect.main([str(sweep), str(out)]) if command == "report" else
            driver.main(["demo", "--stage", "report", "--sweep-dir", str(sweep), "--out-dir", str(out)]))
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {out}: File exists; allowed: ")
    assert out.read_text() == "precious"
