"""The paper's claims read through statistics: each predicate holds, fails, is inconclusive
(its 95% interval contains the claim's boundary) or is not measured, on small record frames
(`reading`: what the intervals say); the verdict also counts the seeds behind it (one seed of a
method is one trained model: inconclusive)."""

import numpy as np
import pandas as pd
import pytest

from blf.report import claims, comparison, labels, renderers
from blf.report.statistics import Interval
from blf.run.records import encode_outcome

EIGHT = 8 / 255
FOUR = 4 / 255
# The columns that make each method (labels.method) in records.
METHODS = {"Baseline": {}, "LSQ": {"regularizer": "logit_squeezing", "lam": 0.1},
           "LSM": {"regularizer": "label_smoothing", "alpha": 0.1}, "BLF": {"head": "blf", "gamma": 1.0},
           "L-BLF": {"head": "lblf", "gamma": 0.5}, "TRADES": {"training": "trades", "beta": 6.0},
           "tanh": {"head": "tanh", "gamma": 1.0}, "sine": {"head": "sine", "gamma": 1.0},
           "single wave": {"head": "single_wave", "gamma": 1.0}}


def record(method="Baseline", kind="robustness", *, setting="ST", accuracy=None, n=1000, paired=True, dataset="mnist",
           model="2c2f", attack="pgd", eps=0.2, seed=0, run=None, **extra):
    """One record of `method`; an accuracy with its per-example outcome (the first examples right,
    so the outcomes of two runs are nested) unless `paired` is False (a schema-2 record)."""
    columns = {"head": "identity", "gamma": None, "regularizer": "none", "lam": None, "alpha": None, "beta": None,
               "training": "standard" if setting == "ST" else "pgd_at", **METHODS[method]}
    row = {"kind": kind, "dataset": dataset, "model": model, "seed": seed, "n": n, "eval_seed": 0, "checkpoint": "best",
           "checkpoint_epoch": 10, "attack": attack, "eps": eps, "profile": "paper",
           "run_dir": run or f"/runs/{dataset}-{model}-{setting}-{method}-{columns['gamma']}-{seed}", **columns, **extra}
    if accuracy is not None:
        correct = round(accuracy * n / 100)
        row.update(accuracy=accuracy, correct=correct)
        if paired:
            row["outcome"] = encode_outcome(np.arange(n) < correct)
    return row


def cells(*rows):
    return comparison.cells(labels.annotate(pd.DataFrame(list(rows))))


def read(name, *rows, worst=False):
    claim = next(c for c in claims.CLAIMS if c.name == name)
    found = cells(*rows)
    return claim.test(claims.under_worst_case(found) if worst else found)


def test_one_comparison_holds_fails_or_is_inconclusive_by_its_interval():
    def effect(low, high):
        return Interval((low + high) / 2, low, high, "test")

    assert claims.judge(effect(0.5, 3.0), "above")[0] == "holds"
    assert claims.judge(effect(-3.0, -0.5), "above")[0] == "fails"
    assert claims.judge(effect(-1.0, 3.0), "above")[0] == "inconclusive"
    assert claims.judge(effect(-1.5, 1.5), "within", 2.0)[0] == "holds"
    assert claims.judge(effect(-1.5, 2.5), "within", 2.0)[0] == "inconclusive"
    assert claims.judge(effect(2.5, 4.0), "within", 2.0)[0] == "fails"
    # A tie read as a point: a "ranks first" (not below) holds it, a "more than" fails.
    assert claims.judge(effect(0.0, 0.0), "not_below")[0] == "holds" and claims.judge(effect(0.0, 0.0), "above")[0] == "fails"
    assert claims.judge(effect(0.5, 3.0), "above")[1] == 0.5  # strength: how far the interval clears the boundary


# --- ranked -------------------------------------------------------------------------------------

def mnist_st(blf, lsq, **kwargs):
    """BLF and LSQ under PGD at eps 0.2 and 0.25 (the claim speaks of eps > 0.15)."""
    return [record(m, accuracy=a, eps=e, **kwargs) for e in (0.2, 0.25) for m, a in (("BLF", blf), ("LSQ", lsq))]


def test_most_robust_holds_fails_is_inconclusive_or_not_measured():
    name = "blf_most_robust_mnist_st_large_eps"
    held = read(name, *mnist_st(40.0, 30.0))
    assert held.reading == "holds" and "BLF (gamma=1) #1, vs LSQ (lam=0.1): 40 vs 30, +10.0 [" in held.numbers
    assert held.effect == pytest.approx(10.0) and held.ci_low > 0
    assert read(name, *mnist_st(20.0, 30.0)).reading == "fails"
    # 1.5 points apart without outcomes: two binomials on 1,000 images cannot tell them apart.
    assert read(name, *mnist_st(31.5, 30.0, paired=False)).reading == "inconclusive"
    # ... while the same accuracies, paired example by example, can.
    assert read(name, *mnist_st(31.5, 30.0)).reading == "holds"
    assert read(name, *[r for r in mnist_st(40.0, 30.0) if r["head"] != "blf"]) == claims.NOT_MEASURED
    # One budget of a claim about several: not measured, even though BLF leads there.
    one = read(name, *mnist_st(40.0, 30.0)[:2])
    assert one.reading == "not measured" and "only 1 measured; the claim needs 2" in one.numbers


def test_a_quorum_over_several_settings_needs_two_of_them():
    """Review: "BLF top two under Square" read yes with one setting measured and BLF third."""
    third = [record(m, accuracy=a, attack="square", eps=0.15) for m, a in (("BLF", 50.0), ("LSQ", 60.0), ("LSM", 70.0))]
    assert read("blf_top_two_square", *third).reading == "not measured"
    other = [record(m, accuracy=a, attack="square", eps=0.15, model="4c3f") for m, a in (("BLF", 50.0), ("LSQ", 60.0),
                                                                                         ("LSM", 70.0))]
    assert read("blf_top_two_square", *third, *other).reading == "fails"
    first = [{**r, "accuracy": 80.0, "correct": 800, "outcome": encode_outcome(np.arange(1000) < 800)}
             if r["head"] == "blf" else r for r in other]
    assert read("blf_top_two_square", *third, *first).reading == "holds"  # one setting of two may miss


def test_a_claim_naming_a_rival_needs_it_measured():
    """Review: "BLF most robust, TRADES included" read yes with no TRADES run."""
    rows = [record(m, setting="AT", accuracy=a, dataset="cifar10", model="resnet18", eps=e)
            for e in (EIGHT, 2 * EIGHT) for m, a in (("BLF", 50.0), ("Baseline", 40.0))]
    assert read("blf_most_robust_cifar_at", *rows).reading == "not measured"
    trades = [record("TRADES", setting="AT", accuracy=45.0, dataset="cifar10", model="resnet18", eps=e)
              for e in (EIGHT, 2 * EIGHT)]
    assert read("blf_most_robust_cifar_at", *rows, *trades).reading == "holds"


def test_operator_norm_and_loss_claims_read_resnet18_on_cifar10_only():
    """Review: Table 3 and 5 claims read yes from MNIST 2C2F records."""
    def norms(dataset, model, **values):
        return [record(m, kind="operator_norm_summary", setting=s, dataset=dataset, model=model, attack=None, eps=None,
                       mean_conv=v) for m, v in values.items() for s in ("ST", "AT")]

    mnist = norms("mnist", "2c2f", Baseline=20.0, LSQ=15.0, LSM=10.0, BLF=5.0)
    assert read("regularizers_smaller_operator_norms", *mnist).reading == "not measured"
    assert read("blf_smallest_operator_norm_at", *mnist).reading == "not measured"
    rn18 = norms("cifar10", "resnet18", Baseline=20.0, LSQ=15.0, LSM=10.0, BLF=5.0)
    assert read("regularizers_smaller_operator_norms", *rn18).reading == "holds"
    assert read("blf_smallest_operator_norm_at", *rn18).reading == "holds"
    worse = norms("cifar10", "resnet18", Baseline=20.0, LSQ=25.0, LSM=10.0, BLF=12.0)
    assert read("regularizers_smaller_operator_norms", *worse).reading == "fails"
    assert read("blf_smallest_operator_norm_at", *worse).reading == "fails"


# --- versus -------------------------------------------------------------------------------------

def square_st(gains, paired=True):
    """Baseline at 50% and each regulariser `gain` points above it, under Square on 2C2F and 4C3F."""
    return [record(m, accuracy=50.0 + gains.get(m, 0.0), attack="square", eps=0.15, model=model, paired=paired)
            for model in ("2c2f", "4c3f") for m in ("Baseline", *gains)]


def test_every_regulariser_beats_baseline_only_where_the_interval_clears_zero():
    """Review: "every regulariser beats Baseline under Square" read yes from +1.7/+1.7/+3.1 points."""
    name = "regularizers_above_baseline_square_st"
    gains = {"LSQ": 1.7, "LSM": 1.7, "BLF": 3.1}
    unpaired = read(name, *square_st(gains, paired=False))
    assert unpaired.reading == "inconclusive" and "unpaired (binomial)" in unpaired.numbers
    assert unpaired.effect == pytest.approx(1.7) and unpaired.ci_low < 0 < unpaired.ci_high
    assert read(name, *square_st(gains)).reading == "holds"  # nested outcomes: every discordant example one way
    assert read(name, *square_st({"LSQ": -5.0, "LSM": 1.7, "BLF": 3.1})).reading == "fails"
    missing = read(name, *square_st({"LSM": 1.7, "BLF": 3.1}))
    assert missing.reading == "not measured" and "method=LSQ not measured" in missing.numbers


def test_outperforming_trades_is_strict():
    """Review: "outperform TRADES" was read as >=."""
    def apgd(gain):
        return [record(m, setting="AT", accuracy=90.0 + (gain if m != "TRADES" else 0.0), attack=a, eps=0.15, model=model)
                for model in ("2c2f", "4c3f") for a in claims.APGD for m in ("LSQ", "LSM", "BLF", "TRADES")]

    name = "regularizers_above_trades_mnist_apgd"
    # Ties everywhere: identical outcomes on 1,000 images leave a small gain possible, never shown.
    assert read(name, *apgd(0.0)).reading == "inconclusive"
    assert read(name, *apgd(-3.0)).reading == "fails"
    assert read(name, *apgd(3.0)).reading == "holds"
    assert read(name, *apgd(3.0)[:4]).reading == "not measured"  # one situation of a majority claim


def test_comparable_within_tolerance():
    rows = lambda blf: [record(m, setting="AT", accuracy=a, model="4c3f", eps=e, paired=False)  # noqa: E731
                        for e in (0.1, 0.2) for m, a in (("BLF", blf), ("TRADES", 90.0))]
    name = "blf_comparable_trades_4c3f_at"
    assert read(name, *rows(80.0)).reading == "fails"
    assert read(name, *rows(90.5)).reading == "inconclusive"  # 1,000 images cannot show |delta| <= 2
    assert read(name, *[r for r in rows(90.0) if r["training"] != "trades"]).reading == "not measured"


# --- parts of one sentence ----------------------------------------------------------------------

def surrogate(setting, eps, pgd, through_tanh):
    return [record("BLF", setting=setting, attack=a, accuracy=acc, eps=e, dataset="cifar10", model="resnet18")
            for e in eps for a, acc in (("pgd", pgd), ("pgd_tanh_surrogate", through_tanh))]


def test_both_parts_of_a_sentence_must_be_measured_to_hold():
    """Review: `_both` said yes when half the sentence was measured."""
    name = "surrogate_weak_elsewhere"
    at_holds = surrogate("AT", (EIGHT, 2 * EIGHT), 40.0, 41.0)
    st_holds = surrogate("ST", (2 / 255, FOUR), 40.0, 40.0)
    assert read(name, *at_holds).reading == "not measured"  # the standard-training half is missing
    assert read(name, *at_holds, *st_holds).reading == "holds"
    at_fails = surrogate("AT", (EIGHT, 2 * EIGHT), 40.0, 20.0)
    failed = read(name, *at_fails)
    assert failed.reading == "fails" and failed.effect == pytest.approx(-20.0)  # one part fails: the sentence fails


def test_sine_comparable_and_single_wave_below():
    def pgd(sine, wave):
        return [record(m, accuracy=a, eps=e) for e in (0.1, 0.2) for m, a in (("BLF", 50.0), ("sine", sine),
                                                                              ("single wave", wave))]

    name = "sine_comparable_single_wave_below"
    assert read(name, *pgd(50.0, 30.0)).reading == "holds"
    assert read(name, *pgd(30.0, 30.0)).reading == "fails"
    assert read(name, *[r for r in pgd(50.0, 30.0) if r["head"] != "single_wave"]).reading == "not measured"


# --- a value against a number -------------------------------------------------------------------

def test_zero_accuracy_under_apgd_t():
    def rows(correct):
        return [record(m, accuracy=correct / 10, attack="apgd_t", eps=EIGHT, dataset="cifar10", model="resnet18")
                for m in ("Baseline", "BLF")]

    name = "apgd_t_zero_cifar_st"
    assert read(name, *rows(0)).reading == "holds"  # 0 of 1,000: Wilson's upper end 0.4%
    assert read(name, *rows(50)).reading == "fails"
    assert read(name, *rows(8)).reading == "inconclusive"  # 0.8% [0.4, 1.6]
    assert read(name, *rows(0)[:1]).reading == "not measured"  # one cell of a claim about every method


def norms_run(method, norm, value, accuracy, gamma):
    """A Fig. 1 point: one RN18 run's clean norms and its PGD accuracy at 4/255."""
    kw = {"dataset": "cifar10", "model": "resnet18", "gamma": gamma} if method in ("tanh", "BLF") else \
        {"dataset": "cifar10", "model": "resnet18", "lam": gamma}
    run = f"/runs/fig1-{method}-{gamma}"
    return [record(method, "norms", attack=None, eps=None, run=run, **{norm: value}, **kw),
            record(method, accuracy=accuracy, eps=FOUR, run=run, **kw)]


def test_fig1_large_norms_give_almost_zero_accuracy():
    name = "tanh_not_robust"
    large = norms_run("tanh", "prelogit_l2", 12.0, 0.0, 1.0) + norms_run("tanh", "prelogit_l2", 9.0, 0.1, 0.8)
    held = read(name, *large)
    assert held.reading == "holds" and "prelogit_l2 12" in held.numbers
    robust = norms_run("tanh", "prelogit_l2", 12.0, 30.0, 1.2)
    assert read(name, *large, *robust).reading == "fails"
    small = norms_run("tanh", "prelogit_l2", 3.0, 30.0, 0.1) + norms_run("tanh", "prelogit_l2", 5.0, 20.0, 0.2)
    assert read(name, *small).reading == "not measured"  # no run beyond the threshold
    logits = norms_run("LSQ", "logit_l2", 9.0, 0.0, 0.01) + norms_run("LSQ", "logit_l2", 8.0, 5.0, 0.05)
    assert read("large_logit_norms_not_robust", *logits).reading == "fails"


def test_blf_prelogits_settle_near_z_star():
    def blf(*norms):
        return [r for i, v in enumerate(norms) for r in norms_run("BLF", "prelogit_linf", v, 50.0, 0.1 * (i + 1))]

    name = "blf_prelogits_near_z_star"
    held = read(name, *blf(2.4, 2.3))
    assert held.reading == "holds" and held.ci_low == held.ci_high  # a mean norm of one run: a point
    assert read(name, *blf(2.4, 4.3)).reading == "fails"
    assert read(name, *blf(2.4)).reading == "not measured"  # "whatever gamma": at least two
    mnist = [{**r, "dataset": "mnist", "model": "2c2f"} for r in blf(2.4, 2.3)]
    assert read(name, *mnist).reading == "not measured"


def test_fig5_clean_accuracies_of_rn18_blf():
    def clean(setting, accuracy, n=10_000):
        return record("BLF", setting=setting, accuracy=accuracy, eps=0.0, n=n, dataset="cifar10", model="resnet18")

    name = "fig5_clean_accuracy"
    assert read(name, clean("ST", 94.6), clean("AT", 82.4)).reading == "holds"
    assert read(name, clean("ST", 90.0), clean("AT", 82.4)).reading == "fails"
    assert read(name, clean("ST", 94.6, n=100), clean("AT", 82.4)).reading == "inconclusive"
    assert read(name, clean("ST", 94.6)).reading == "not measured"  # adversarial training missing


def test_table5_every_regulariser_flattens_the_loss_surface():
    def surfaces(**values):
        return [record(m, kind="loss_surface", setting=s, dataset="cifar10", model="resnet18", attack=None, eps=None,
                       point=p, max_minus_min=v * (1 + p)) for m, v in values.items() for s in ("ST", "AT") for p in (0, 1)]

    name = "regularizers_smaller_loss_difference"
    assert read(name, *surfaces(Baseline=9.0, LSQ=3.0, LSM=2.0, BLF=1.0)).reading == "holds"
    assert read(name, *surfaces(Baseline=9.0, LSQ=10.0, LSM=2.0, BLF=1.0)).reading == "fails"
    mnist = [{**r, "dataset": "mnist", "model": "2c2f"} for r in surfaces(Baseline=9.0, LSQ=3.0, LSM=2.0, BLF=1.0)]
    assert read(name, *mnist).reading == "not measured"


def test_lblf_learned_gamma_grows_from_its_initial_value():
    def lblf(gamma, **extra):
        return record("L-BLF", "norms", attack=None, eps=None, logit_l2=1.0, **{**extra, "gamma": gamma})

    name = "lblf_gamma_grows"
    held = read(name, lblf(2.0))
    assert held.reading == "holds" and held.effect == pytest.approx(2.0 - np.log1p(np.exp(-1.0)))
    assert read(name, lblf(0.2)).reading == "fails"
    assert read(name, lblf(2.0, **{"head.gamma_tilde_init": 3.0})).reading == "fails"  # it started at 3.05
    assert read(name, record("BLF", "norms", attack=None, eps=None, logit_l2=1.0)).reading == "not measured"


# --- the report ---------------------------------------------------------------------------------

def test_a_claim_about_methods_holds_or_fails_only_on_three_seeds_of_each(tmp_path):
    """One trained model per method is a finding about those models: where the intervals hold or
    fail, the verdict says inconclusive and why; from three seeds of every method on, it is the
    intervals' verdict."""
    name = "blf_most_robust_mnist_st_large_eps"

    def seeds(k, blf=40.0, lsq=30.0, methods=("BLF", "LSQ")):
        return [r for s in range(k) for r in mnist_st(blf, lsq, seed=s) if labels.method(r) in methods]

    one = read(name, *seeds(1))
    assert (one.reading, one.seeds, one.verdict) == ("holds", 1, "inconclusive: one seed (holds for the models trained)")
    assert read(name, *seeds(2)).verdict == "inconclusive: 2 seeds (holds for the models trained)"
    three = read(name, *seeds(3))
    assert (three.verdict, three.seeds) == ("holds", 3) and "bootstrap over 3 seeds and their images, paired" in three.numbers
    assert read(name, *seeds(1, blf=20.0)).verdict == "inconclusive: one seed (fails for the models trained)"
    assert read(name, *seeds(3, blf=20.0)).verdict == "fails"
    # Inconclusive by its interval as well: nothing to add.
    assert read(name, *mnist_st(31.5, 30.0, paired=False)).verdict == "inconclusive: one seed"
    # Three seeds of BLF, one of LSQ: the comparison rests on one LSQ model.
    uneven = seeds(3, methods=("BLF",)) + seeds(1, methods=("LSQ",))
    assert read(name, *uneven).verdict == "inconclusive: one seed (holds for the models trained)"
    assert read(name, *seeds(1)[:2]).verdict == "not measured"  # fewer seeds never make it measured
    verdicts = claims.evaluate(cells(*seeds(3))).set_index("claim")
    assert (verdicts.loc[name, "verdict"], verdicts.loc[name, "seeds"]) == ("holds", 3)
    # claims.md counts the inconclusive ones and says how many are so for too few seeds.
    renderers.claims_table(claims.evaluate(cells(*seeds(1))), labels.annotate(pd.DataFrame(seeds(1))),
                           tmp_path / "claims", "T")
    assert "0 holds, 0 fails, 1 inconclusive (1 for fewer than 3 seeds), 30 not measured" in \
        (tmp_path / "claims.md").read_text().splitlines()[0]
    assert pd.read_csv(tmp_path / "claims.csv").set_index("claim").loc[name, "seeds"] == 1
    assert [claims.verdict_kind(v) for v in ("inconclusive: 2 seeds", "not measured", "holds")] == \
        ["inconclusive", "not measured", "holds"]


def test_the_worst_case_reading_uses_the_worst_case_outcomes():
    rows = mnist_st(40.0, 30.0)
    worst = [record(m, "worst_case", accuracy=a, attack="worst_case", eps=e, attacks="pgd+square")
             for e in (0.2, 0.25) for m, a in (("BLF", 20.0), ("LSQ", 30.0))]
    assert read("blf_most_robust_mnist_st_large_eps", *rows, *worst, worst=True).reading == "fails"
    verdicts = claims.evaluate(cells(*rows, *worst)).set_index("claim")
    row = verdicts.loc["blf_most_robust_mnist_st_large_eps"]
    assert (row["verdict"], row["verdict_worst_case"]) == ("inconclusive: one seed (holds for the models trained)",
                                                           "inconclusive: one seed (fails for the models trained)")
    assert (row["seeds"], row["seeds_worst_case"]) == (1, 1)
    assert row["effect_worst_case"] == pytest.approx(-10.0) and "paired (McNemar)" in row["numbers_worst_case"]
    assert set(verdicts["verdict"].map(claims.verdict_kind)) <= set(claims.VERDICTS)


def test_a_failure_is_shown_by_the_comparison_that_fails():
    """BLF clearly behind the Baseline (paired, nested outcomes) and level with LSQ on unpaired
    records of 200 images (a wider interval, reaching further below zero): the claim fails, and its numbers
    and effect are the comparison with the Baseline, not the inconclusive one."""
    rows = [record("BLF", accuracy=20.0, eps=e) for e in (0.2, 0.25)]
    rows += [record("Baseline", accuracy=23.0, eps=e) for e in (0.2, 0.25)]
    rows += [record("LSQ", accuracy=20.5, eps=e, n=200, paired=False) for e in (0.2, 0.25)]
    found = read("blf_most_robust_mnist_st_large_eps", *rows)
    assert found.reading == "fails" and found.ci_high < 0 and found.effect == pytest.approx(-3.0)
    assert "vs Baseline: 20 vs 23, -3.0 [" in found.numbers and found.numbers.count(" fails") == 2
