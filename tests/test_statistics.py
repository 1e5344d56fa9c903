"""Intervals and tests behind every table and claim: Wilson for one accuracy, a bootstrap over
seeds and images for several (t over seeds without images), paired (McNemar) on the same images,
unpaired binomials where outcomes or images differ."""

import numpy as np
import pandas as pd
import pytest

from blf.report import statistics
from blf.report.statistics import Sample
from blf.run.records import encode_outcome


def sample(correct, n=1000, seed=0, eval_seed=0, outcome=True):
    """A run with `correct` of `n` right; its outcome puts them first, so two such runs are nested."""
    hexed = encode_outcome(np.arange(n) < correct) if outcome else None
    return Sample(100 * correct / n, seed=seed, n=n, eval_seed=eval_seed, outcome=hexed)


def test_wilson_t_and_mcnemar_match_their_textbook_values():
    assert statistics.wilson(744, 1000).text() == "74.4 [71.6, 77.0]"
    assert statistics.wilson(0, 1000).text() == "0.0 [0.0, 0.4]"  # no negative lower end at 0%
    assert [round(statistics.t_quantile(df), 3) for df in (1, 2, 3, 4, 5, 30)] == [12.706, 4.303, 3.182, 2.776, 2.571, 2.042]
    assert statistics.t_two_sided_p(2.776, 4) == pytest.approx(0.05, abs=1e-4)
    assert statistics.mcnemar_p(3, 1) == pytest.approx(0.625) and statistics.mcnemar_p(0, 0) == 1.0
    spread = statistics.seed_spread([60.0, 62.0, 58.0])
    assert (spread.estimate, spread.std) == (60.0, 2.0) and spread.high - 60.0 == pytest.approx(4.303 * 2 / 3 ** 0.5, abs=1e-3)


def test_a_paired_difference_is_sharper_than_an_unpaired_one_of_the_same_accuracies():
    paired = statistics.difference([sample(517)], [sample(500)])
    unpaired = statistics.difference([sample(517, outcome=False)], [sample(500)])
    assert paired.method == "paired (McNemar)" and unpaired.method == "unpaired (binomial)"
    assert paired.estimate == pytest.approx(1.7) and unpaired.estimate == pytest.approx(1.7)
    assert paired.low > 0 and paired.p_value < 1e-3  # 17 discordant examples, all one way
    assert unpaired.low < 0 < unpaired.high and unpaired.p_value > 0.4
    assert "+1.7 [" in paired.described() and "p=" in paired.described()


def test_other_images_or_a_broken_outcome_fall_back_to_unpaired():
    assert statistics.difference([sample(600, eval_seed=1)], [sample(500)]).method == "unpaired (binomial)"
    assert statistics.difference([sample(60, n=100)], [sample(500)]).method == "unpaired (binomial)"
    broken = Sample(60.0, n=1000, eval_seed=0, outcome="00")  # 8 bits cannot hold 1000 examples
    assert broken.outcomes() is None and statistics.difference([broken], [sample(500)]).method == "unpaired (binomial)"
    # Values that are not accuracies over images (operator norms) are points.
    assert statistics.difference([Sample(7.0)], [Sample(8.0)]) == statistics.point(-1.0)


def test_across_seeds_the_difference_is_a_bootstrap_over_seed_pairs_and_their_images():
    a = [sample(600, seed=s) for s in (0, 1, 2)]
    b = [sample(c, seed=s) for s, c in zip((2, 0, 1), (500, 480, 520))]  # paired by seed, whatever the order given
    diff = statistics.difference(a, b)
    assert diff.method == "bootstrap over 3 seeds and their images, paired"
    assert diff.estimate == pytest.approx(10.0) and diff.std == pytest.approx(2.0)
    assert diff.low < 10.0 < diff.high and diff == statistics.difference(a, b)  # a fixed seed: the same interval
    # Without outcomes for one pair: the t-interval over the per-seed differences.
    fallback = statistics.difference([*a[:2], sample(600, seed=2, outcome=False)], b)
    assert fallback.method == "t over 3 seeds of paired (McNemar)/unpaired (binomial) differences"
    assert fallback.estimate == pytest.approx(10.0) and fallback.std == pytest.approx(2.0)
    # A side with fewer seeds: only as many per-seed differences as it has runs.
    assert statistics.difference(a, b[:1]).method == "paired (McNemar)"


def seeds_of(differences, n=1000, base=500):
    """Two methods over seeds 0, 1, ... on the same `n` images: per seed, one is `difference`
    points ahead of the other (nested outcomes: every discordant example one way)."""
    ahead = [sample(base + round(d * n / 100) if d > 0 else base, seed=s) for s, d in enumerate(differences)]
    behind = [sample(base - round(d * n / 100) if d < 0 else base, seed=s) for s, d in enumerate(differences)]
    return ahead, behind


def test_a_difference_over_seeds_counts_the_seeds_not_only_the_images():
    """+6, -4, +5, -3, +4 points on 1000 images each: pooled as one paired sample of 5000 images
    (what ignoring the seeds would do) the 1.6 points look certain; across the seeds they are not."""
    a, b = seeds_of([6, -4, 5, -3, 4])
    pooled = statistics.paired(np.concatenate([s.outcomes() for s in a]), np.concatenate([s.outcomes() for s in b]))
    assert pooled.estimate == pytest.approx(1.6) and pooled.low > 0  # images only: excludes zero
    diff = statistics.difference(a, b)
    assert diff.method == "bootstrap over 5 seeds and their images, paired"
    assert diff.estimate == pytest.approx(1.6) and diff.low < 0 < diff.high and diff.p_value > 0.05
    assert diff.high - diff.low > 5 * (pooled.high - pooled.low)
    # Where the seeds agree, the images' error stays in the interval (a t over the seeds would have none).
    same = statistics.difference(*seeds_of([2, 2, 2]))
    assert same.std == 0.0 and same.low < 2.0 < same.high
    # One method's mean over seeds, likewise.
    accuracy = statistics.estimate(a)
    assert accuracy.method == "bootstrap over 5 seeds and their images"
    assert accuracy.estimate == pytest.approx(53.0) and accuracy.std == pytest.approx(2.83, abs=0.01)
    assert accuracy.low < 50.0 and accuracy.high > 56.0


def test_a_cell_estimate_is_wilson_for_one_run_t_for_seeds_and_a_point_otherwise():
    rows = pd.DataFrame([{"accuracy": 74.4, "n": 1000, "seed": 0, "eval_seed": 0, "outcome": None, "run_dir": "/a"},
                         {"accuracy": 70.0, "n": 1000, "seed": 1, "eval_seed": 0, "outcome": None, "run_dir": "/b"}])
    one = statistics.samples(rows.iloc[:1], "accuracy", accuracy=True)
    assert one == (Sample(74.4, seed=0, n=1000, eval_seed=0, run="/a"),)
    assert statistics.estimate(one).method == "Wilson"
    both = statistics.estimate(statistics.samples(rows, "accuracy", accuracy=True))
    assert both.method == "bootstrap over 2 seeds and their images" and both.text().startswith("72.2 ± 3.1 [")
    assert statistics.estimate(statistics.samples(rows, "accuracy", accuracy=False)).method == "t over 2 seeds"
    assert statistics.estimate(statistics.samples(rows.iloc[:1], "accuracy", accuracy=False)).text() == "74.4"


def test_an_accuracy_over_seeds_keeps_its_interval_within_0_and_100():
    """Two seeds near 98% (t = 12.7 for one degree of freedom) and near 0.5%: the interval stops at the ends."""
    high = statistics.estimate([sample(979, seed=0), sample(977, seed=1)])
    low = statistics.estimate([sample(6, seed=0), sample(4, seed=1)])
    assert high.high == 100.0 and 97.8 > high.low > 90 and low.low == 0.0 and low.high > 0.5
    # A difference is not an accuracy: it keeps its whole interval.
    assert statistics.difference([sample(6, seed=0), sample(4, seed=1)], [sample(979, seed=0), sample(977, seed=1)]).low < -98
