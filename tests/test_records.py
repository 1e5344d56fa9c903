"""Atomic writes, tidy records, and checkpoint safety."""

import pytest
import torch

from blf.errors import CheckpointError
from blf.run import records, storage
from blf.run.folder import RunFolder


def row(attack="pgd", eps=0.1, accuracy=50.0, **extra):
    return {"kind": "robustness", "attack": attack, "eps": eps, "n": 10, "eval_seed": 0, "checkpoint": "best",
            "accuracy": accuracy, "attack.nb_iter": 40, **extra}


def test_upsert_replaces_same_key_and_keeps_the_rest(tmp_path):
    path = tmp_path / "results.jsonl"
    records.upsert(path, [row(eps=0.0, accuracy=99.0), row(eps=0.1, accuracy=80.0)])
    records.upsert(path, [row(eps=0.1, accuracy=70.0), row(attack="spsa", eps=0.1, accuracy=75.0)])
    rows = storage.read_jsonl(path)
    assert [(r["attack"], r["eps"], r["accuracy"]) for r in rows] == [
        ("pgd", 0.0, 99.0), ("pgd", 0.1, 70.0), ("spsa", 0.1, 75.0)
    ]
    # Different attack settings are a different observation, not a replacement.
    records.upsert(path, [row(eps=0.1, accuracy=60.0, **{"attack.nb_iter": 100})])
    assert len(storage.read_jsonl(path)) == 4


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "metrics.jsonl"
    storage.write_jsonl(path, [{"epoch": 1}])

    class Boom:
        pass

    with pytest.raises(TypeError):
        storage.write_jsonl(path, [{"epoch": 2, "bad": Boom()}])
    assert storage.read_jsonl(path) == [{"epoch": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temp file left


def test_non_finite_numbers_become_null(tmp_path):
    path = tmp_path / "r.jsonl"
    storage.write_jsonl(path, [{"a": float("nan"), "b": float("inf"), "c": 1.5}])
    assert storage.read_jsonl(path) == [{"a": None, "b": None, "c": 1.5}]


def test_corrupted_checkpoint_is_reported_not_loaded(tmp_path):
    path = tmp_path / "last.pt"
    storage.save_checkpoint({"model": {"w": torch.ones(3)}, "config": {}}, path)
    assert torch.equal(storage.load_checkpoint(path)["model"]["w"], torch.ones(3))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="unreadable"):
        storage.load_checkpoint(path)


def test_checkpoints_refuse_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "payload": RunFolder(tmp_path)}, path)
    with pytest.raises(CheckpointError, match="unreadable"):
        storage.load_checkpoint(path)


def test_workspace_refuses_a_different_run_and_restores_hydra_files(tmp_path):
    workspace = RunFolder(tmp_path)
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("head: {name: identity}\n")  # rewritten by Hydra
    saved = {"head": {"name": "blf", "gamma": 1.0}, "trainer": {"epochs": 5}, "logger": {"name": "wandb"}}
    requested = {"head": {"name": "blf", "gamma": 2.0}, "trainer": {"epochs": 9}, "logger": {"name": "none"}}
    with pytest.raises(CheckpointError, match=r"head.gamma: run has 1.0, command asks 2.0"):
        workspace.ensure_same_run(saved, requested, {"config.yaml": "head: {name: blf, gamma: 1.0}\n"})
    assert (tmp_path / ".hydra" / "config.yaml").read_text() == "head: {name: blf, gamma: 1.0}\n"
    # Epochs, logger, evaluation settings may change: that is the same run, resumed.
    requested["head"]["gamma"] = 1.0
    workspace.ensure_same_run(saved, requested, {})


def test_missing_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(CheckpointError, match=f"{tmp_path} has no checkpoints/best.pt"):
        RunFolder(tmp_path).load("best")


def test_stale_and_mixed_results_are_flagged_by_the_report(tmp_path, capsys):
    """A report over records of two code versions says so; CIFAR-10 runs whose checkpoints
    predate schema 2 (trained before augmentation reached the loop) are named."""
    from blf.report import collect, provenance

    identity = {"dataset": "cifar10", "model": "resnet18", "head": "identity", "gamma": None, "regularizer": "none",
                "lam": None, "alpha": None, "training": "standard", "beta": None, "seed": 0}
    runs = {
        "new": {"schema_version": 2, "code_commit": "a" * 40, "code_dirty": False, "trained_schema_version": 2},
        "newer": {"schema_version": 2, "code_commit": "b" * 40, "code_dirty": True, "trained_schema_version": 2},
        "old": {},  # written before schema 2: no provenance at all
    }
    for name, stamp in runs.items():
        run = tmp_path / "sweep" / name
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text("trainer: {epochs: 1}\n")
        storage.write_jsonl(run / "results.jsonl", [row(eps=e, **identity, **stamp, run_dir=str(run)) for e in (0.0, 0.1)])
    assert collect.main([str(tmp_path / "sweep"), str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "3 code versions (aaaaaaaaaa, bbbbbbbbbb+dirty, before schema 2)" in err
    assert "1 CIFAR-10 run(s) were trained before the augmentation reached training" in err and "/old" in err

    df = collect.collect(tmp_path / "sweep")[0]
    assert provenance.provenance_note(df) == " [MIXED CODE VERSIONS: 3] [CIFAR-10 TRAINED WITHOUT AUGMENTATION: 1 runs]"
    assert provenance.provenance_note(df[df["run_dir"].str.endswith("new")]) == ""


def test_records_parquet_holds_the_csvs_values_in_typed_columns(tmp_path):
    """records.parquet beside records.csv: every column typed and nullable (no object column),
    the values those of the CSV, including columns that mix numbers and words or hold lists."""
    import pandas as pd

    from blf.report import collect

    run = tmp_path / "sweep" / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("trainer: {epochs: 1}\n")
    identity = {"dataset": "mnist", "model": "2c2f", "head": "blf", "gamma": 1.0, "lam": None, "seed": 0, "synthetic": True}
    rows = [row(eps=0.0, accuracy=99.5, **identity, **{"attack.rand_init": True, "attack.target": None}),
            row(eps=1 / 3, accuracy=70.0, **identity, **{"attack.rand_init": False, "attack.target": None}),
            {**identity, "kind": "integrity", "check": "pgd_convergence", "status": "PASS", "value": 0.25, "threshold": 1.0,
             "detail": 'gap_max 5% & "more"'},
            {**identity, "kind": "integrity", "check": "label_leak", "status": "SKIP", "value": "n/a", "threshold": None},
            {**identity, "kind": "worst_case", "eps": 1 / 3, "accuracy": 65.0, "attacks": ["pgd", "spsa"]}]
    storage.write_jsonl(run / "results.jsonl", rows)
    df, jobs = collect.collect(tmp_path / "sweep")
    collect.write(df, jobs, tmp_path / "out")

    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["jobs.csv", "records.csv", "records.parquet"]
    back = pd.read_parquet(tmp_path / "out" / "records.parquet")
    types = {name: str(dtype) for name, dtype in back.dtypes.items()}
    assert not [name for name, dtype in types.items() if dtype in ("object", "str")]  # typed, nullable: no object
    assert {name: types[name] for name in ("seed", "eps", "accuracy", "n", "lam", "attack.target", "synthetic",
                                           "attack.rand_init", "kind", "value", "attacks")} == {
        "seed": "Int64", "eps": "Float64", "accuracy": "Float64", "n": "Float64", "lam": "Float64",
        "attack.target": "Float64", "synthetic": "boolean", "attack.rand_init": "boolean", "kind": "string",
        "value": "string", "attacks": "string"}
    csv = (tmp_path / "out" / "records.csv").read_text()
    assert back.to_csv(index=False) == csv  # the same values, spelled the same
    assert back["eps"].iloc[1] == 1 / 3 and back["value"].tolist()[2:4] == ["0.25", "n/a"]
    assert back["attack.rand_init"].tolist()[:3] == [True, False, pd.NA] and back["attacks"].iloc[4] == "['pgd', 'spsa']"
    read = pd.read_csv(tmp_path / "out" / "records.csv")
    for name in ("seed", "eps", "accuracy", "threshold"):
        assert back[name].astype(float).tolist() == pytest.approx(read[name].tolist(), nan_ok=True), name


def test_an_empty_checkpoint_file_is_one_clear_error(tmp_path):
    from blf.errors import CheckpointError
    from blf.run import storage

    empty = tmp_path / "best.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is unreadable .an empty file"):
        storage.load_checkpoint(empty)
