"""Methods, hyper-parameters and the paper's selection protocol, on hand-made records."""

import pandas as pd
import pytest

from blf.report import labels
from blf.study import selection


def run(run_dir, *, head="identity", gamma=None, regularizer="none", lam=None, alpha=None, training="standard",
        beta=None, clean=90.0, pgd=None, spsa=None, seed=0, dataset="mnist", model="2c2f"):
    base = {"run_dir": run_dir, "dataset": dataset, "model": model, "head": head, "gamma": gamma,
            "regularizer": regularizer, "lam": lam, "alpha": alpha, "training": training, "beta": beta,
            "seed": seed, "clean_test_acc": clean}
    rows = [{**base, "kind": "norms"}]
    for attack, values in (("pgd", pgd or {}), ("spsa", spsa or {})):
        rows += [{**base, "kind": "robustness", "attack": attack, "eps": e, "accuracy": a} for e, a in values.items()]
    return rows


def test_methods_and_their_hyperparameters():
    assert labels.method({"head": "identity", "regularizer": "none", "training": "standard"}) == "Baseline"
    assert labels.method({"head": "identity", "regularizer": "logit_squeezing", "training": "pgd_at"}) == "LSQ"
    assert labels.method({"head": "blf", "regularizer": "none", "training": "standard"}) == "BLF"
    assert labels.method({"head": "lblf", "regularizer": "none"}) == "L-BLF"
    assert labels.method({"head": "identity", "regularizer": "none", "training": "trades"}) == "TRADES"
    assert labels.method({"head": "blf", "regularizer": "label_smoothing"}) == "LSM+BLF"
    assert labels.hyperparameter({"regularizer": "label_smoothing", "alpha": 0.1}) == ("alpha", 0.1)
    assert labels.hyperparameter({"training": "trades", "beta": 6.0}) == ("beta", 6.0)
    assert labels.hyperparameter({"head": "lblf", "gamma": 0.31}) == (None, None)
    assert labels.setting("pgd_at") == labels.setting("trades") == "AT" != labels.setting("standard")


def frame(*runs):
    return pd.DataFrame([row for r in runs for row in r])


def test_protocol_uses_clean_accuracy_for_standard_and_pgd_for_adversarial_training():
    df = frame(
        run("st-a", head="blf", gamma=0.5, clean=97.0, pgd={0.3: 1.0}),
        run("st-b", head="blf", gamma=1.0, clean=98.0, pgd={0.3: 0.0}),
        run("at-a", head="blf", gamma=0.5, training="pgd_at", clean=99.0, pgd={0.3: 80.0}),
        run("at-b", head="blf", gamma=1.0, training="pgd_at", clean=95.0, pgd={0.3: 85.0}),
    )
    chosen = selection.select(df, "protocol", {"mnist": 0.3}).set_index("setting")
    assert chosen.loc["ST", "hp_value"] == 1.0 and chosen.loc["ST", "run_dir"] == "st-b"
    assert chosen.loc["AT", "hp_value"] == 1.0 and chosen.loc["AT", "score"] == 85.0
    assert "clean accuracy" in chosen.loc["ST", "basis"] and "eps=0.3" in chosen.loc["AT", "basis"]


def test_ties_go_to_the_smallest_value_and_unfinished_runs_are_ignored():
    df = frame(
        run("a", regularizer="logit_squeezing", lam=0.5, clean=97.0),
        run("b", regularizer="logit_squeezing", lam=0.05, clean=97.0),
        run("c", regularizer="logit_squeezing", lam=0.01, clean=None),
    )
    chosen = selection.select(df, "protocol", {"mnist": 0.3})
    assert chosen["hp_value"].tolist() == [0.05]


def test_attack_criterion_tunes_for_the_table_attack():
    df = frame(
        run("a", regularizer="label_smoothing", alpha=0.1, pgd={0.15: 90.0}, spsa={0.15: 40.0}),
        run("b", regularizer="label_smoothing", alpha=0.3, pgd={0.15: 10.0}, spsa={0.15: 60.0}),
    )
    assert selection.select(df, "attack", {"mnist": 0.15}, attack="spsa")["hp_value"].tolist() == [0.3]
    assert selection.select(df, "attack", {"mnist": 0.15}, attack="pgd")["hp_value"].tolist() == [0.1]


def test_one_choice_per_dataset_model_setting_and_method():
    df = frame(
        run("m1", model="2c2f", clean=90.0), run("m2", model="4c3f", clean=91.0),
        run("m3", model="2c2f", head="blf", gamma=1.0, clean=92.0),
        run("m4", model="2c2f", training="pgd_at", pgd={0.3: 50.0}),
    )
    chosen = selection.select(df, "protocol", {"mnist": 0.3})
    assert len(chosen) == 4
    assert set(map(tuple, chosen[["model", "setting", "method"]].values)) == {
        ("2c2f", "ST", "Baseline"), ("4c3f", "ST", "Baseline"), ("2c2f", "ST", "BLF"), ("2c2f", "AT", "Baseline")}
    text = selection.markdown(chosen)
    assert "gamma = 1" in text and text.count("\n") == len(chosen) + 1


def test_unknown_criterion_is_refused():
    with pytest.raises(Exception, match="study.select='best'"):
        selection.scores(frame(run("a")), "best", {"mnist": 0.3})


def test_wrn_takes_resnet18s_choice_for_each_attack_and_the_choice_is_written_down():
    from blf.study import driver

    eps = 8 / 255
    df = frame(
        run("r1", dataset="cifar10", model="resnet18", head="blf", gamma=0.1, spsa={eps: 30.0}),
        run("r2", dataset="cifar10", model="resnet18", head="blf", gamma=0.5, spsa={eps: 50.0}),
        run("r3", dataset="cifar10", model="resnet18", spsa={eps: 20.0}),
        # a WRN run already trained (a rerun after the seeds stage) is not tuned on its own
        run("w1", dataset="cifar10", model="wrn34_10", head="blf", gamma=0.1, spsa={eps: 99.0}),
    )
    chosen = driver.Study("table1", "smoke").select(df)
    assert len(chosen) == 4
    wrn = chosen[chosen["model"] == "wrn34_10"]
    assert sorted(wrn["method"]) == ["BLF", "Baseline"]
    assert wrn.loc[wrn["method"] == "BLF", "hp_value"].tolist() == [0.5] and wrn["score"].isna().all()
    assert (wrn["for_attack"] == "spsa").all() and wrn["basis"].str.contains("resnet18's choice").all()
    text = selection.markdown(chosen)
    assert "| cifar10 | wrn34_10 | ST | BLF | gamma = 0.5 | - |" in text


def test_the_study_selects_on_the_grid_seed_even_when_other_seeds_score_higher():
    from blf.study import driver

    df = frame(
        run("g1", head="blf", gamma=0.5, clean=90.0, seed=0), run("g2", head="blf", gamma=1.0, clean=91.0, seed=0),
        run("s1", head="blf", gamma=0.5, clean=99.0, seed=1),  # a later seed of the first choice
    )
    chosen = driver.Study("fig3", "smoke").select(df)
    assert chosen["run_dir"].tolist() == ["g2"] and chosen["hp_value"].tolist() == [1.0]


@pytest.mark.parametrize("older, newer, label", [({"attack.restarts": 1}, {"attack.restarts": 5}, "restarts=1"),
                                                 ({"n": 100}, {"n": 20}, "n=100")])
def test_a_run_evaluated_twice_is_scored_by_its_newest_evaluation_and_says_so(older, newer, label):
    rows = run("at", head="blf", gamma=1.0, training="pgd_at", pgd={0.3: 60.0})
    second = {**rows[-1], "accuracy": 40.0, "evaluated_at": "2026-02-01", **newer}
    rows[-1].update(evaluated_at="2026-01-01", **older)
    scored = selection.scores(pd.DataFrame([*rows, second]), "protocol", {"mnist": 0.3}).iloc[0]
    assert scored["score"] == 40.0  # never 50, the mean of the two
    assert scored["basis"] == f"pgd accuracy at eps=0.3 (test set) (the newest of 2 evaluations; not used: {label}: 60)"


@pytest.mark.parametrize("older, newer", [({"attack.restarts": 1}, {"attack.restarts": 5}), ({"n": 100}, {"n": 20})])
def test_the_final_records_keep_both_evaluations_of_a_run(older, newer):
    """Review: Study.final de-duplicated on the observation and dropped a restarts=5 row."""
    from blf.study import driver

    base = {"dataset": "mnist", "model": "2c2f", "head": "blf", "gamma": 1.0, "regularizer": "none", "lam": None,
            "alpha": None, "training": "standard", "beta": None, "seed": 0, "run_dir": "r", "kind": "robustness",
            "attack": "spsa", "eps": 0.15, "n": 1000, "eval_seed": 0, "checkpoint": "best"}
    df = pd.DataFrame([{**base, "accuracy": 60.0, **older}, {**base, "accuracy": 40.0, **newer}])
    chosen = pd.DataFrame([{"dataset": "mnist", "model": "2c2f", "setting": "ST", "method": "BLF", "hp_value": 1.0,
                            "for_attack": a} for a in ("spsa", "square")])  # a table tuned per attack: rows repeat
    final = driver.Study("table1", "smoke").final(df, chosen)
    assert sorted(final["accuracy"]) == [40.0, 60.0]
