"""Collecting run folders into one frame refuses records it cannot read, naming the file."""

import pytest

from blf.errors import RecordError
from blf.report import collect
from blf.run import records, storage


def sweep_with(tmp_path, version):
    run = tmp_path / "sweep" / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("trainer: {epochs: 1}\n")
    storage.write_jsonl(run / "results.jsonl", [{"kind": "robustness", "attack": "pgd", "eps": 0.1, "accuracy": 50.0,
                                                 "schema_version": version}])
    return run / "results.jsonl"


def test_a_record_of_an_unknown_schema_stops_the_report_with_one_line_naming_its_file(tmp_path, capsys):
    results = sweep_with(tmp_path, records.SCHEMA_VERSION + 1)
    with pytest.raises(RecordError, match=f"{results}: a record has schema_version={records.SCHEMA_VERSION + 1}"):
        collect.collect(tmp_path / "sweep")
    assert collect.main([str(tmp_path / "sweep"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {results}:") and "allowed: 1.." in err[0]


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
