"""W&B answers the questions asked of a trained model: read back from the offline run files."""

from __future__ import annotations

import shutil

import pytest

from blf.run import tracking
from conftest import TINY, train
from offline_wandb import read

# A BLF run with a budget curve (PGD), an attack at one budget (Square), and the integrity checks.
COMMAND = [*TINY, "head=blf", "head.gamma=1.5", "logger=wandb", "logger.log_checkpoints=true",
           "attack=[pgd,square]", "attack.pgd.nb_iter=3", "attack.pgd.eps=[0.0,0.1,0.2]", "attack.square.n_queries=20",
           "attack.square.eps=[0.1]", "eval.integrity.enabled=true", "analysis=[]"]


def offline_runs(run_dir):
    return sorted((run_dir / "wandb").glob("offline-run-*"))


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")


def test_the_summary_holds_the_evaluated_checkpoint(tmp_path, offline):
    outcome = train(tmp_path / "run", *COMMAND)
    (folder,) = offline_runs(tmp_path / "run")
    run = read(folder)
    rows = outcome.rows
    clean = rows[0]["clean_test_acc"]
    summary = run.summary
    assert summary["clean/accuracy"] == pytest.approx(clean)
    assert summary["checkpoint/which"] == "best" and summary["checkpoint/epoch"] == rows[0]["checkpoint_epoch"]
    robust = {(r["attack"], r["eps"]): r["accuracy"] for r in rows if r["kind"] == "robustness"}
    assert set(robust) == {("pgd", 0.0), ("pgd", 0.1), ("pgd", 0.2), ("square", 0.1)}
    for (attack, eps), accuracy in robust.items():
        assert summary[f"robust/{attack}@{eps:.4g}"] == pytest.approx(accuracy)
    for r in rows:
        if r["kind"] == "worst_case":
            assert summary[f"worst_case@{r['eps']:.4g}"] == pytest.approx(r["accuracy"])
    verdicts = {r["check"]: r["status"] for r in rows if r["kind"] == "integrity"}
    assert len(verdicts) >= 4 and all(summary[f"integrity/{check}"] == status for check, status in verdicts.items())
    assert summary["integrity/failed"] == sum(status == "FAIL" for status in verdicts.values())
    # The last epoch's accuracy is a training curve against the epoch, not the summary's answer.
    assert run.step_metrics["epoch/*"] == "epoch"
    assert "epoch/test_acc" in run.history_keys


def test_names_tags_charts_and_the_checkpoint_artifact(tmp_path, offline):
    train(tmp_path / "run", *COMMAND)
    run = read(offline_runs(tmp_path / "run")[0])
    assert run.name == "2C2F BLF (gamma=1.5) standard s0"
    assert {"default", "paper", "mnist", "2c2f", "blf", "standard"} <= set(run.tags)
    # A line per multi-budget attack; the single-budget attacks together in one bar chart.
    charts = {key.removesuffix("/_type") for key in run.history_keys if key.endswith("/_type")}
    assert charts == {"robustness/table", "robustness/pgd_table", "robustness/worst_case_table",
                      "robustness/single_budget_table"}
    (artifact,) = [a for a in run.artifacts if a["type"] == "model"]
    assert artifact["type"] == "model" and artifact["files"] == ["best.pt"] and "best" in artifact["aliases"]


def test_no_artifact_unless_asked(tmp_path, offline):
    train(tmp_path / "run", *[c for c in COMMAND if not c.startswith("logger.log_checkpoints")])
    assert [a for a in read(offline_runs(tmp_path / "run")[0]).artifacts if a["type"] == "model"] == []


def test_a_resumed_run_keeps_its_id_and_a_deleted_one_gets_a_new_one(tmp_path, offline):
    command = [*TINY, "logger=wandb", "analysis=[]", "eval.integrity.enabled=false"]
    run_dir = tmp_path / "run"
    train(run_dir, *command, "trainer.epochs=1")
    first = read(offline_runs(run_dir)[0]).id
    train(run_dir, *command, "trainer.epochs=2")  # resumes epoch 2 from last.pt: the same W&B run
    assert {read(f).id for f in offline_runs(run_dir)} == {first}
    shutil.rmtree(run_dir)
    train(run_dir, *command, "trainer.epochs=1")
    (again,) = offline_runs(run_dir)
    assert read(again).id != first


def test_names_and_tags_come_from_the_run_identity():
    identity = {"model": "resnet18", "head": "identity", "regularizer": "logit_squeezing", "lam": 0.1,
                "training": "pgd_at", "seed": 2, "experiment": "table2", "profile": "smoke", "dataset": "cifar10"}
    assert tracking.run_name(identity) == "RN18 LSQ (lam=0.1) pgd_at s2"
    assert tracking.tags(identity, ["mine"]) == ["table2", "smoke", "cifar10", "resnet18", "identity", "pgd_at", "mine"]
