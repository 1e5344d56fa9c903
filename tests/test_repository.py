"""The repository holds nothing of the machine that made it: a fresh clone elsewhere behaves as the
checkout that wrote it. A link to one machine's data folder, committed by accident, once broke
`make demo` on every other clone while the machine that made it stayed green."""

from __future__ import annotations

import io
import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

from blf.run import storage
from conftest import REPO

# Roots under which people and clusters keep their own files; a path below one of them, written
# into a tracked file, names one machine. System places (/usr, /etc, /var, /opt, /dev) are the
# same everywhere and may be named (the SLURM helper writes its logs to /var/log/slurm).
MACHINE_ROOTS = ("home", "root", "work", "Users", "scratch", "mnt", "gpfs", "lustre", "nfs", "data", "tmp")
# The paths tests hand to the code as hostile or example inputs are theirs to name.
NOT_SCANNED = ("tests/",)
# What a run writes in the repository: ignored whether it is a folder or a link.
RUN_OUTPUTS = ("data", "results", "outputs", "multirun/mnist_2c2f", "bench", "wandb")


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def tracked() -> list[tuple[str, str]]:
    """(mode, path) of every file git tracks here."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    rows = git("ls-files", "-s", "-z").split("\0")
    return [(row.split(" ", 1)[0], row.split("\t", 1)[1]) for row in rows if row]


def machine_paths() -> re.Pattern:
    """Absolute paths below a machine root, and this checkout's own location and home folder
    (whatever they are on the machine that runs the test)."""
    roots = b"|".join(re.escape(r.encode()) for r in MACHINE_ROOTS)
    own = {str(REPO), str(REPO.parent), str(Path.home())} - {"/"}
    own_part = b"".join(b"|" + re.escape(p.encode()) + b"(?=[/\"'\\s])" for p in sorted(own, key=len, reverse=True))
    # Not after a word character, a dot, a slash or a scheme: URLs and relative paths are not machines.
    return re.compile(rb"(?<![\w.~$}/:-])(?:/(?:" + roots + rb")/[^\s\"'`)\],]+" + own_part + rb")")


def texts_of(path: Path) -> list[bytes]:
    """The bytes a path's names could hide in: the file itself, each member of a zip (torch's
    checkpoints are zips), the cells of a Parquet file (compressed on disk)."""
    data = path.read_bytes()
    if data[:4] == b"PAR1":
        import pandas as pd

        return [pd.read_parquet(path).to_csv(index=False).encode()]
    found = [data]
    if data[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            found += [archive.read(member) for member in archive.namelist()]
    return found


def offending(files: list[str], root: Path = REPO) -> dict[str, list[str]]:
    pattern = machine_paths()
    hits: dict[str, list[str]] = {}
    for name in files:
        if name.startswith(NOT_SCANNED) or (root / name).is_symlink() or not (root / name).is_file():
            continue
        found = {m.group().decode(errors="replace") for text in texts_of(root / name) for m in pattern.finditer(text)}
        if found:
            hits[name] = sorted(found)[:3]
    return hits


def outside_links(tracked_rows: list[tuple[str, str]], root: Path = REPO) -> dict[str, str]:
    """Tracked symbolic links whose target is absolute or climbs out of the repository."""
    links = {}
    for mode, name in tracked_rows:
        if mode != "120000":
            continue
        target = os.readlink(root / name)
        inside = (root / name).parent.joinpath(target).resolve()
        if os.path.isabs(target) or not inside.is_relative_to(root.resolve()):
            links[name] = target
    return links


def test_no_tracked_link_leads_out_of_the_repository(tracked):
    assert outside_links(tracked) == {}


def test_no_tracked_file_names_a_machine_path(tracked):
    """Records, checkpoints, docs and code: relative paths only (records.recorded_run_dir)."""
    assert offending([name for _, name in tracked]) == {}


@pytest.mark.parametrize("name", RUN_OUTPUTS)
def test_what_runs_write_is_ignored_as_a_folder_or_as_a_link(name):
    """`git check-ignore` on a path that is not there asks about a file: a pattern with a trailing
    slash (`data/`) matches folders only, so a link named `data` would be committed."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(["git", "check-ignore", "--no-index", "-q", name],
                            cwd=REPO, capture_output=True)
    assert result.returncode == 0, f"{name} (a link or a file) is not ignored by .gitignore"


def test_the_checks_catch_a_link_out_and_a_machine_path(tmp_path):
    """The checks above, on a repository made here that has each fault once."""
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    git("init", "-q", cwd=repo)
    (repo / "data").symlink_to("/nonexistent/blf-runs/data")
    (repo / "docs" / "inside").symlink_to("../README.md")
    (repo / "README.md").write_text("see docs/ and https://example.org/home/x and file:///opt/y\n")
    (repo / "docs" / "results.jsonl").write_text('{"run_dir": "/work/blf-runs/multirun/x/seed:0"}\n')
    with zipfile.ZipFile(repo / "docs" / "last.pt", "w") as archive:  # as torch writes: stored, not deflated
        archive.writestr("archive/data.pkl", b"\x80\x02X\x1c\x00\x00\x00cwd: /home/someone/project\n")
    git("add", "-A", cwd=repo)
    rows = [(r.split(" ", 1)[0], r.split("\t", 1)[1]) for r in git("ls-files", "-s", "-z", cwd=repo).split("\0") if r]
    assert outside_links(rows, repo) == {"data": "/nonexistent/blf-runs/data"}
    hits = offending([name for _, name in rows], repo)
    assert set(hits) == {"docs/results.jsonl", "docs/last.pt"}
    assert hits["docs/results.jsonl"] == ["/work/blf-runs/multirun/x/seed:0"]


def test_a_run_writes_no_machine_path_into_its_records_or_checkpoints(tiny_run):
    """What a run folder ships (records, checkpoints, per-example outcomes) names its folder
    relative to the repository or by its name; only Hydra's own hydra.yaml, which nothing reads and
    no checkpoint keeps, holds the machine's paths."""
    run_dir, result = tiny_run()
    assert result.returncode == 0, result.stderr[-2000:]
    rows = storage.read_jsonl(run_dir / "results.jsonl")
    assert rows and {r["run_dir"] for r in rows} == {run_dir.name}
    assert str(run_dir) in (run_dir / ".hydra" / "hydra.yaml").read_text()  # the probe below can see it
    shipped = [p for p in run_dir.rglob("*") if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"]
    assert any(p.name == "last.pt" for p in shipped)
    assert [p for p in shipped if any(str(run_dir).encode() in text or str(run_dir.parent).encode() in text
                                      for text in texts_of(p))] == []
