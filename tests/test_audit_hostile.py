"""blf.audit (and every other reader of a stranger's file) against a hostile author: programs that
would run code, files that would exhaust memory or block, nesting that would overflow the stack,
models that break the contract the numbers assume, flags out of range, and output that must be
written whole or not at all. Every hostile file is built here."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

import audit_zoo as Z
from blf.audit import audit, contract, settings, targets
from blf.errors import BLFError, CheckpointError, ConfigError, RecordError, UntrustedFileError
from blf.run import storage, untrusted
from conftest import REPO, train
from test_audit import QUICK, one_error, run_command

# Importing torch takes about 3.5 GiB of address space here; 6 GiB leaves 2.5 for the work.
MEMORY_LIMIT = 6 * 1024**3


@pytest.fixture(scope="module")
def blf_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile") / "run"
    train(folder, "head=blf")
    return folder


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, ignore=shutil.ignore_patterns("analysis", "wandb"))
    return to


def limited(*args, timeout: int = 60) -> tuple[subprocess.CompletedProcess, float]:
    """`python ARGS` under an address-space limit of MEMORY_LIMIT: (result, seconds)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    start = time.monotonic()
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO / 'tests'}", "WANDB_MODE": "disabled"}
    result = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                            preexec_fn=limit, env=env)
    return result, time.monotonic() - start


def one_line(result: subprocess.CompletedProcess, status: int = 2) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert result.returncode == status and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


# --- 1. no code from a file without the opt-in ------------------------------------------------

@pytest.fixture
def no_program_loaded(monkeypatch):
    """Records every call of torch's program loaders (which run an archive's code)."""
    calls = []
    for owner, name in ((torch.export, "load"), (torch.jit, "load")):
        original = getattr(owner, name)

        def record(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)
        monkeypatch.setattr(owner, name, record)
    return calls


def scripted(path: Path) -> Path:
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))), str(path))
    return path


def test_programs_load_only_with_trust_code_and_are_known_by_name_alone(blf_run, tmp_path, no_program_loaded):
    from blf.export import export

    export(blf_run, "torch_export", tmp_path / "pt2")
    export(blf_run, "torchscript", tmp_path / "ts")
    for path in (tmp_path / "pt2", tmp_path / "pt2" / "model.pt2", tmp_path / "ts" / "model.torchscript.pt"):
        with pytest.raises(UntrustedFileError, match="runs its author's code.*--trust-code"):
            targets.load(path)
    assert no_program_loaded == []
    assert targets.load(tmp_path / "pt2" / "model.pt2", trust_code=True).kind == "torch_export"
    assert no_program_loaded == ["load"]


def test_a_program_named_as_weights_is_refused_without_running(blf_run, tmp_path, no_program_loaded):
    """A TorchScript archive named state_dict.pt (with a config beside it), or planted as a run's
    checkpoint: refused as a program, never sniffed and loaded."""
    from blf.export import export

    export_dir = tmp_path / "export"
    export(blf_run, "state_dict", export_dir)
    scripted(export_dir / "state_dict.pt")
    run = copy_run(blf_run, tmp_path / "run")
    scripted(run / "checkpoints" / "best.pt")
    for target in (export_dir, export_dir / "state_dict.pt", run, run / "checkpoints" / "best.pt"):
        for trust in (False, True):  # --trust-code lifts nothing here: a program is known by its name
            with pytest.raises(UntrustedFileError, match="is a TorchScript or torch.export program, not weights"):
                targets.load(target, trust_code=trust)
    assert no_program_loaded == []


# --- 2. bounded resources -------------------------------------------------------------------

def stride_zero(state: dict, elements: int) -> dict:
    """`state` with its first weight replaced by a tensor that claims `elements` elements over a
    storage of one (stride 0): a few bytes on disk."""
    hostile = dict(state)
    name = next(iter(hostile["model"]))
    hostile["model"] = {**hostile["model"], name: torch.zeros(1).as_strided((elements,), (0,))}
    return hostile


@pytest.fixture(scope="module")
def hostile_run(blf_run, tmp_path_factory):
    """The run folder with both checkpoints claiming 1e12 elements (4 TB) in one weight."""
    run = copy_run(blf_run, tmp_path_factory.mktemp("stride") / "run")
    for name in ("best", "last"):
        path = run / "checkpoints" / f"{name}.pt"
        storage.save_checkpoint(stride_zero(torch.load(path, weights_only=True), 10**12), path)
        assert path.stat().st_size < 200_000
    return run


@pytest.mark.parametrize("elements", [10**9, 10**12])
def test_a_tensor_claiming_more_than_its_storage_is_refused_before_its_elements_are_touched(blf_run, tmp_path, elements):
    state = torch.load(blf_run / "checkpoints" / "best.pt", weights_only=True)
    path = tmp_path / "best.pt"
    storage.save_checkpoint(stride_zero(state, elements), path)
    start = time.monotonic()
    with pytest.raises(UntrustedFileError, match=f"claims {elements:,} elements"):
        storage.load_checkpoint(path)
    with pytest.raises(UntrustedFileError, match="claims"):
        targets.read_weights(path)
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("command", ["audit", "load", "export", "evaluate"])
def test_every_reader_refuses_the_4_tb_checkpoint_in_one_line_under_a_memory_limit(hostile_run, tmp_path, command):
    args = {
        "audit": ["-m", "blf.audit", hostile_run, *QUICK, "--out", tmp_path / "card"],
        "load": ["-c", "import sys, blf\ntry:\n    blf.load(sys.argv[1])\nexcept blf.errors.BLFError as e:\n"
                       "    sys.exit(print(f'error: {e}', file=sys.stderr) or 2)", hostile_run],
        "export": ["-m", "blf.export", hostile_run, "--format", "state_dict", "--out", tmp_path / "card",
                   "--allow-synthetic"],
        "evaluate": ["src/evaluate.py", f"run_dir={hostile_run}", "logger=none", "eval.n=8"],
    }[command]
    result, seconds = limited(*args)
    if command == "evaluate":  # Hydra's log line names the file too; the error line is the one that counts
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
        assert "claims 1,000,000,000,000 elements" in result.stderr
    else:
        assert "claims 1,000,000,000,000 elements" in one_line(result)
    assert seconds < 45 and not (tmp_path / "card").exists()


def test_compressed_members_and_old_formats_are_refused(blf_run, tmp_path):
    source = blf_run / "checkpoints" / "best.pt"
    packed = tmp_path / "packed.pt"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as out:
        for info in original.infolist():
            out.writestr(info.filename, original.read(info))
    with pytest.raises(UntrustedFileError, match="compressed members"):
        storage.load_checkpoint(packed)
    legacy = tmp_path / "legacy.pt"
    torch.save(torch.load(source, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="not a torch.save archive"):
        storage.load_checkpoint(legacy)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_target_that_is_not_a_file_is_refused_at_once(tmp_path, kind):
    if kind == "fifo":
        target = tmp_path / "model.pt"
        os.mkfifo(target)
    else:
        target = Path("/dev/zero")
    result, seconds = limited("-m", "blf.audit", target, *QUICK, timeout=60)
    assert "not a regular file" in one_line(result) and seconds < 30
    result, seconds = limited("-m", "blf.audit", target, "--model", "audit_zoo:baseline", *QUICK, timeout=60)
    assert "is not a file; allowed: a weights file" in one_line(result) and seconds < 30


def test_files_that_are_not_files_inside_folders_are_refused(blf_run, tmp_path):
    from blf.export import export

    export(blf_run, "state_dict", tmp_path / "export")
    (tmp_path / "export" / "config.yaml").unlink()
    os.mkfifo(tmp_path / "export" / "config.yaml")
    with pytest.raises(UntrustedFileError, match="config.yaml is not a regular file .a FIFO."):
        targets.load(tmp_path / "export")
    run = copy_run(blf_run, tmp_path / "run")
    (run / "checkpoints" / "best.pt").unlink()
    os.mkfifo(run / "checkpoints" / "best.pt")
    with pytest.raises(UntrustedFileError, match="best.pt is not a regular file"):
        targets.load(run)
    for name in ("results.jsonl", "finished.json"):
        (run / name).unlink(missing_ok=True)
        os.mkfifo(run / name)
    with pytest.raises(UntrustedFileError, match="results.jsonl is not a regular file"):
        storage.read_jsonl(run / "results.jsonl")
    from blf.run.folder import RunFolder
    with pytest.raises(UntrustedFileError, match="finished.json is not a regular file"):
        RunFolder(run).finished_as()


# --- 3. nesting: one line, never a RecursionError -------------------------------------------------

def deep(levels: int):
    value = []
    for _ in range(levels):
        value = [value]
    return value


def test_deep_nesting_in_records_markers_and_configs_is_one_error(blf_run, tmp_path):
    """(The report on such records: tests/test_collect.py.)"""
    from blf.run.folder import RunFolder

    sweep = tmp_path / "sweep"
    for name in ("results.jsonl", "metrics.jsonl"):
        run = copy_run(blf_run, sweep / name.split(".")[0])
        (run / name).write_text("[" * 100_000 + "]" * 100_000 + "\n")
        with pytest.raises(UntrustedFileError, match=f"{name} line 1 nests deeper than 32 levels"):
            storage.read_jsonl(run / name)
        (run / name).write_text(json.dumps({"kind": deep(40)}) + "\n")
        with pytest.raises(UntrustedFileError, match="nests deeper than 32 levels"):
            storage.read_jsonl(run / name)
    marker = RunFolder(run)
    for content in ("[1, 2]", json.dumps({"job_key": deep(40)}), "[" * 100_000 + "]" * 100_000):
        marker.finished_path.write_text(content)
        try:
            assert marker.finished_as() is None
        except UntrustedFileError as error:
            assert "nests deeper" in str(error) or "larger than 64 KiB" in str(error)
    # A checkpoint's config, an export's config.yaml and a RobustBench export's config.json.
    state = torch.load(blf_run / "checkpoints" / "best.pt", weights_only=True)
    state["config"]["model"]["extra"] = deep(200)
    storage.save_checkpoint(state, tmp_path / "deep.pt")
    with pytest.raises(UntrustedFileError, match="deep.pt nests deeper than 32 levels"):
        storage.load_checkpoint(tmp_path / "deep.pt")
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UntrustedFileError, match="config.json nests deeper"):
        targets.read_config(tmp_path / "config.json")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"a": deep(40)}))
    with pytest.raises(UntrustedFileError, match="config.yaml: nests deeper than 32"):
        targets.read_config(tmp_path / "config.yaml")


# --- 4. the model's contract ----------------------------------------------------------------

def grid_data(n: int = 40):
    x, y = Z.data(n)
    return Z.on_grid(x), y


def test_a_batch_dependent_model_is_never_reliable_unless_audited_one_at_a_time_or_accepted():
    x, y = grid_data()
    card = audit(Z.batch_statistics(), x, y, eps=[0.1], budget="quick", batch_size=20, progress=False)
    (a, _), = [card.answers(r) for r in card.results if r.eps > 0]
    assert a.verdict != "reliable" and "depend on its batch" in a.reason and "--batch-size 1" in a.reason
    assert any("depend on the other images of its batch" in note for note in card.notes)
    assert card.subject["contract"]["batch_change"] > 0.01
    for kwargs in ({"batch_size": 1}, {"batch_dependence_ok": True}):
        cfg, chosen = settings("quick")
        found = contract.check(Z.batch_statistics(), x, batch_size=kwargs.get("batch_size", 20), draws=2, eps=0.1,
                               given_training=False, cfg=cfg, batch_dependence_ok=kwargs.get("batch_dependence_ok", False))
        assert found.caveats == [] and found.batch_change > 0.01 and found.notes  # said, but not held against it
    plain = contract.check(Z.baseline(), x, batch_size=20, draws=2, eps=0.1, given_training=False, cfg=settings()[0])
    assert plain.caveats == [] and plain.notes == [] and plain.batch_change < 1e-5 and not plain.randomized


def test_randomness_only_at_perturbed_points_makes_the_model_randomized():
    x, y = grid_data()
    found = contract.check(Z.noisy_off_grid(), x, batch_size=20, draws=4, eps=0.1, given_training=False,
                           cfg=settings()[0])
    assert found.randomized and found.unstable == 0 and "randomized at perturbed points" in found.notes[0]
    card = audit(Z.noisy_off_grid(), x, y, eps=[0.1], budget="quick", progress=False)
    assert card.subject["randomized"] is True


def test_non_finite_logits_and_training_mode():
    x, y = grid_data()
    with pytest.raises(ConfigError, match="non-finite logits .NaN or infinite. for all 40 images"):
        audit(Z.nans(), x, y, eps=[0.1], budget="quick", progress=False)
    model = Z.baseline().train()
    card = audit(model, x, y, eps=[0.1], budget="quick", progress=False)
    assert any("given in training mode" in note for note in card.notes) and model.training  # its mode given back


def test_the_models_own_errors_and_ctrl_c_are_one_line_and_write_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    code, _, err = run_command(capsys, "--model", "audit_zoo:failing", *QUICK, "--out", tmp_path / "card")
    line = one_error(code, err)
    assert "the model raised RuntimeError in module inner.2 (Linear)" in line and "mat1 and mat2" in line
    code, _, err = run_command(capsys, "--model", "audit_zoo:interrupted", *QUICK, "--out", tmp_path / "card")
    assert code == 130 and err.strip().startswith("error: interrupted; nothing was written") and len(err.splitlines()) == 1
    assert not (tmp_path / "card").exists()


# --- 5. flags and the card --------------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    (["--eps", "2"], "'2' is not a budget; allowed: numbers in [0, 1]"),
    (["--eps", "1/255/2"], "'1/255/2' is not a budget"),
    (["--eps", "0", "--strict"], "--strict with only eps 0 attacks nothing"),
])
def test_flags_out_of_range_are_refused_before_any_work(tmp_path, capsys, monkeypatch, args, expected):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    base = [a for i, a in enumerate(QUICK) if a != "--eps" and (i == 0 or QUICK[i - 1] != "--eps")]
    code, _, err = run_command(capsys, "--model", "audit_zoo:interrupted", *base, *args, "--out", tmp_path / "card")
    assert expected in one_error(code, err)  # the model would stop with 130 had any work begun
    assert not (tmp_path / "card").exists()


def test_an_out_folder_that_cannot_take_the_card_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    out = tmp_path / "card"
    out.mkdir()
    (out / "audit.png").symlink_to(tmp_path / "elsewhere.png")  # dangling: exists() says False
    code, _, err = run_command(capsys, "--model", "audit_zoo:interrupted", *QUICK, "--out", out)
    assert "holds audit.png as a symbolic link" in one_error(code, err)
    assert sorted(p.name for p in out.iterdir()) == ["audit.png"] and not (tmp_path / "elsewhere.png").exists()
    (tmp_path / "a-file").write_text("")
    code, _, err = run_command(capsys, "--model", "audit_zoo:interrupted", *QUICK, "--out", tmp_path / "a-file" / "card")
    assert "is not a folder this process can write in" in one_error(code, err)


@pytest.mark.parametrize("exists", [False, True])
def test_the_card_is_written_whole_or_not_at_all(tmp_path, monkeypatch, exists):
    folder = tmp_path / "card"
    if exists:
        folder.mkdir()
        (folder / "audit.md").write_text("the earlier card\n")
    files = {"audit.md": b"new\n", "audit.json": b"{}\n", "audit.png": b"png"}
    real_fsync, calls = os.fsync, []

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        storage.publish(folder, files)
    left = sorted(p.name for p in tmp_path.rglob("*"))
    assert left == (["audit.md", "card"] if exists else [])  # no stage, no half of the card
    if exists:
        assert (folder / "audit.md").read_text() == "the earlier card\n"
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert storage.publish(folder, files) == [folder / name for name in files]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["audit.json", "audit.md", "audit.png", "card"]


def test_bounded_readers_name_the_bound(tmp_path):
    big = tmp_path / "results.jsonl"
    with big.open("wb") as handle:
        handle.truncate(untrusted.JSON_MAX_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(UntrustedFileError, match="larger than 256 MiB"):
        storage.read_jsonl(big)
    (tmp_path / "bad.jsonl").write_bytes(b"\xff\xfe\n")
    with pytest.raises(RecordError, match="not UTF-8"):
        storage.read_jsonl(tmp_path / "bad.jsonl")
    assert issubclass(UntrustedFileError, BLFError)


def test_ctrl_c_in_the_report_and_the_export_is_one_line(blf_run, tmp_path, capsys, monkeypatch):
    from blf import export as export_module
    from blf.report import collect

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(collect, "collect", interrupt)
    monkeypatch.setattr(export_module, "export", interrupt)
    assert collect.main([str(tmp_path), str(tmp_path / "out")]) == 130
    assert export_module.main([str(blf_run), "--format", "state_dict", "--out", str(tmp_path / "e")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: interrupted; every file written so far is whole") for line in err)
