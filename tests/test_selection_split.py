"""eval.selection_split=validation: training images held out pick the checkpoint and the
hyper-parameters, so that the test set picks nothing (the paper's protocol stays the default)."""

import pandas as pd
import pytest

from blf import assembly, data
from blf.errors import ConfigError
from blf.run import identity, storage
from blf.study import selection
from conftest import TINY, compose_config, evaluate, train

VALIDATION = ["eval.selection_split=validation", "eval.validation_n=64"]


def test_hold_out_moves_the_same_images_out_of_training_for_every_run():
    train_split, test_split = data.synthetic((1, 28, 28), 256, 64, seed=0)
    dataset = data.Dataset("mnist", train_split, test_split, 10, True)
    held = data.hold_out(dataset, 50)
    assert len(held.train) == 206 and len(held.validation) == 50 and held.test is test_split
    # Disjoint and together the training set: every training image is in exactly one of them.
    rows = {bytes(x.numpy()) for x in train_split.images}
    assert len(rows) == 256
    parts = [bytes(x.numpy()) for x in held.train.images] + [bytes(x.numpy()) for x in held.validation.images]
    assert sorted(parts) == sorted(bytes(x.numpy()) for x in train_split.images)
    again = data.hold_out(dataset, 50)
    assert (again.validation.images == held.validation.images).all()
    with pytest.raises(ConfigError, match=r"eval.validation_n=256 leaves none .* allowed: 1..255"):
        data.hold_out(dataset, 256)


def test_a_validation_run_trains_without_its_held_out_images_and_selects_on_them(tmp_path):
    run = assembly.for_training(compose_config("train", [*TINY, *VALIDATION]))
    assert len(run.dataset.train) == 192 and len(run.dataset.validation) == 64

    outcome = train(tmp_path / "run", *VALIDATION, "trainer.epochs=3")
    history = outcome.progress.history
    assert all("validation_acc" in row for row in history)
    best = storage.load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    chosen = max(history, key=lambda row: row["validation_acc"])  # the first of equal ones
    assert best["epoch"] == chosen["epoch"] and outcome.progress.best_accuracy == chosen["validation_acc"]
    rows = outcome.rows
    assert {r["selection_split"] for r in rows} == {"validation"}
    assert {r["clean_validation_acc"] for r in rows} == {best["validation_acc"]}
    # The paper's attacks on the validation split at the selection budgets (Table 2/4's 0.15, training's 0.3).
    held = [r for r in rows if r["kind"] == "validation"]
    assert sorted((r["attack"], r["eps"]) for r in held) == [("pgd", 0.15), ("pgd", 0.3)]
    assert all(r["validation_n"] == 32 and r["correct"] <= 32 for r in held)

    # Re-evaluating keeps the split the run was trained with, whatever the command says.
    again = evaluate(tmp_path / "run", "attack=[pgd]", "attack.pgd.nb_iter=2", "eval.selection_split=test")
    assert {r["selection_split"] for r in again.added} == {"validation"}
    assert {(r["attack"], r["eps"]) for r in again.added if r["kind"] == "validation"} == {("pgd", 0.15), ("pgd", 0.3)}


def test_the_split_is_part_of_the_run_only_when_it_holds_images_out():
    paper = compose_config("train", [])
    held = compose_config("train", VALIDATION)
    from omegaconf import OmegaConf

    paper, held = OmegaConf.to_container(paper, resolve=True), OmegaConf.to_container(held, resolve=True)
    older = {**paper, "eval": {k: v for k, v in paper["eval"].items() if k not in ("selection_split", "validation_n")}}
    assert identity.run_key(paper) == identity.run_key(older)  # runs trained before the option keep their key
    assert identity.run_key(held) != identity.run_key(paper)
    assert [k for k, _, _ in identity.differences(paper, held)] == ["eval.selection_split", "eval.validation_n"]
    assert identity.run_name(["head=blf", "eval.validation_n=64"]) == "head:blf"
    assert identity.run_name(["head=blf", *VALIDATION]) == (
        "eval.selection_split:validation+eval.validation_n:64+head:blf")


def records(run_dir, lam, *, test_clean, validation_clean=None, test_pgd=None, validation_pgd=None, training="standard"):
    base = {"run_dir": run_dir, "dataset": "mnist", "model": "2c2f", "head": "identity", "regularizer": "logit_squeezing",
            "lam": lam, "training": training, "seed": 0, "clean_test_acc": test_clean}
    if validation_clean is not None:
        base |= {"selection_split": "validation", "clean_validation_acc": validation_clean}
    rows = [{**base, "kind": "norms"}]
    if test_pgd is not None:
        rows.append({**base, "kind": "robustness", "attack": "pgd", "eps": 0.3, "accuracy": test_pgd})
    if validation_pgd is not None:
        rows.append({**base, "kind": "validation", "attack": "pgd", "eps": 0.3, "accuracy": validation_pgd})
    return rows


@pytest.mark.parametrize("criterion", ["protocol", "attack"])
def test_selection_reads_the_validation_split_where_the_runs_held_one_out(criterion):
    at = "pgd_at" if criterion == "protocol" else "standard"  # protocol scores PGD for adversarial training
    held_out = pd.DataFrame(records("a", 0.05, test_clean=99.0, validation_clean=95.0, test_pgd=60.0, validation_pgd=40.0,
                                    training=at)
                            + records("b", 0.1, test_clean=97.0, validation_clean=96.0, test_pgd=50.0, validation_pgd=45.0,
                                      training=at))
    chosen = selection.select(held_out, criterion, {"mnist": 0.3})
    assert chosen["run_dir"].tolist() == ["b"] and "(validation set)" in chosen["basis"].iloc[0]
    # The paper's protocol, on the same numbers without a validation split, picks the other run.
    paper = held_out.drop(columns=["selection_split", "clean_validation_acc"])
    paper = paper[paper["kind"] != "validation"]
    chosen = selection.select(paper, criterion, {"mnist": 0.3})
    assert chosen["run_dir"].tolist() == ["a"] and "(test set)" in chosen["basis"].iloc[0]


def test_protocol_for_standard_training_scores_clean_validation_accuracy():
    df = pd.DataFrame(records("a", 0.05, test_clean=99.0, validation_clean=95.0)
                      + records("b", 0.1, test_clean=97.0, validation_clean=96.0))
    chosen = selection.select(df, "protocol", {"mnist": 0.3})
    assert chosen["run_dir"].tolist() == ["b"] and chosen["score"].tolist() == [96.0]
    assert chosen["basis"].tolist() == ["clean accuracy (validation set)"]


def test_a_bad_split_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"eval.selection_split.*allowed.*test.*validation"):
        assembly.for_training(compose_config("train", [*TINY, "eval.selection_split=train"]))
    with pytest.raises(ConfigError, match=r"eval.validation_n=300 leaves none of the 256"):
        assembly.for_training(compose_config("train", [*TINY, "eval.selection_split=validation", "eval.validation_n=300"]))


@pytest.mark.slow
def test_a_study_on_a_validation_split_trains_apart_and_selects_on_it(tmp_path):
    from omegaconf import open_dict

    from blf.study import driver

    s = driver.Study("fig3", "smoke", overrides=[*TINY, "trainer.epochs=1", "dataset.n_train=null", *VALIDATION],
                     sweep=tmp_path / "multirun", out=tmp_path / "results")
    with open_dict(s.cfg):
        s.cfg.study.grid = {"blf": {"model": "2c2f", "training": "standard", "head": "blf", "head.gamma": "0.5,1.0"}}
        s.cfg.study.seeds = [0]
    s.spec = s.cfg.study
    assert s.run("all") == 0
    folders = sorted(p.name for p in (tmp_path / "multirun").iterdir() if p.is_dir())
    assert len(folders) == 2 and all("eval.selection_split:validation+eval.validation_n:64" in f for f in folders)
    chosen = pd.read_csv(tmp_path / "results" / "selection.csv")
    assert chosen["basis"].tolist() == ["clean accuracy (validation set)"]
    # The chosen run is the one with the larger clean validation accuracy, whatever the test set says.
    df = pd.read_csv(tmp_path / "results" / "records.csv")
    by_run = df.groupby("run_dir")["clean_validation_acc"].first()
    assert chosen["score"].iloc[0] == by_run.max()
