"""Collecting run folders into one frame refuses records it cannot read, naming the file."""

import pytest

from blf.errors import RecordError
from blf.report import collect
from blf.run import records, storage

IDENTITY = {"experiment": "x", "dataset": "mnist", "model": "2c2f", "head": "identity", "gamma": None, "regularizer": "none",
            "lam": None, "alpha": None, "training": "standard", "beta": None, "seed": 0, "epochs": 1, "checkpoint": "best",
            "checkpoint_epoch": 1, "n": 100, "eval_seed": 0}


def sweep_with(tmp_path, version):
    run = tmp_path / "sweep" / "run"
    (run / ".hydra").mkdir(parents=True, exist_ok=True)
    (run / ".hydra" / "config.yaml").write_text("trainer: {epochs: 1}\n")
    storage.write_jsonl(run / "results.jsonl", [{**IDENTITY, "kind": "robustness", "attack": "pgd", "eps": 0.1,
                                                 "accuracy": 50.0, "schema_version": version}])
    return run / "results.jsonl"


def test_a_record_of_an_unknown_schema_stops_a_strict_report_with_one_line_naming_its_file(tmp_path, capsys):
    results = sweep_with(tmp_path, records.SCHEMA_VERSION + 1)
    with pytest.raises(RecordError, match=f"{results}: a record has schema_version={records.SCHEMA_VERSION + 1}"):
        collect.collect(tmp_path / "sweep", strict=True)
    assert collect.main([str(tmp_path / "sweep"), str(tmp_path / "out"), "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {results}:") and "allowed: 1.." in err[0]


@pytest.mark.parametrize("spoil, says", [
    (lambda run: (run / "results.jsonl").write_text('{"kind": "norms"}\n{"kind": "robus'), "line 2 is not valid JSON"),
    (lambda run: (run / "results.jsonl").write_text("[1, 2]\n"), "line 1 is a JSON list, not an object"),
    (lambda run: (run / ".hydra" / "overrides.yaml").write_text("a: [unclosed\n"), "while parsing"),
    (lambda run: (run / ".hydra" / "overrides.yaml").write_text("{a: 1}\n"), "overrides.yaml is not a list of overrides"),
    (lambda run: sweep_with(run.parent.parent, records.SCHEMA_VERSION + 1), "a record has schema_version"),
])
def test_a_bad_run_folder_is_left_out_and_named_and_fails_only_a_strict_report(tmp_path, capsys, spoil, says):
    good = sweep_with(tmp_path, records.SCHEMA_VERSION).parent
    bad = good.parent / "zz-bad"
    (bad / ".hydra").mkdir(parents=True)
    (bad / ".hydra" / "config.yaml").write_text("trainer: {epochs: 1}\n")
    storage.write_jsonl(bad / "results.jsonl", [{"kind": "norms", "schema_version": records.SCHEMA_VERSION}])
    spoil(bad if "schema_version" not in says else good.parent / "zz-bad")
    if "schema_version" in says:  # sweep_with wrote into `run`: move it to the bad folder's place
        (good.parent / "run" / "results.jsonl").replace(bad / "results.jsonl")
        sweep_with(tmp_path, records.SCHEMA_VERSION)
    df, jobs = collect.collect(tmp_path / "sweep")
    assert set(df["run_dir"]) == {collect.shown(good)}
    assert jobs.set_index("run_dir").loc[collect.shown(bad), "status"] == "unreadable"
    assert collect.main([str(tmp_path / "sweep"), str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert f"unreadable, left out: {collect.shown(bad)}" in err and says in err and "Traceback" not in err
    assert collect.main([str(tmp_path / "sweep"), str(tmp_path / "out2"), "--strict"]) == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize("name, text, says", [
    ("results.jsonl", "[" * 100_000 + "]" * 100_000 + "\n", "results.jsonl line 1 nests deeper than 32 levels"),
    ("metrics.jsonl", '{"a": ' * 50 + "1" + "}" * 50 + "\n", "metrics.jsonl nests deeper than 32 levels"),
])
def test_records_nested_past_any_bound_stop_the_report_in_one_line(tmp_path, capsys, name, text, says):
    """Deeper than the project ever writes is no accident (as an oversized file): the report stops,
    naming the file, and writes nothing; json's own RecursionError never reaches the user."""
    run = sweep_with(tmp_path, records.SCHEMA_VERSION).parent
    (run / name).write_text(text)
    assert collect.main([str(tmp_path / "sweep"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    assert not (tmp_path / "out").exists()


def test_records_of_known_schemas_are_collected(tmp_path):
    sweep_with(tmp_path, 2)
    assert len(collect.collect(tmp_path / "sweep")[0]) == 1


def test_shipped_files_name_run_folders_relative_to_the_repository(tmp_path):
    from blf.report import collect

    inside = collect.REPO / "multirun" / "x" / "paper" / "seed:0"
    assert collect.shown(inside) == "multirun/x/paper/seed:0"
    assert collect.folder(collect.shown(inside)) == inside
    assert collect.shown(tmp_path / "run") == str((tmp_path / "run").resolve())  # outside: absolute
    assert collect.folder(collect.shown(tmp_path / "run")) == (tmp_path / "run").resolve()
