"""Ours beside the paper: cells from records, the side-by-side with the published tables, the
summary line, the not-comparable banner, the paper's claims as checks, and the worst case and
integrity marks beside the numbers of a table."""

import math

import pandas as pd
import pytest

from blf.report import claims, comparison, labels, published, renderers, tables

EIGHT = 8 / 255  # as the configs resolve ${per255:8}


def record(kind="robustness", *, model="2c2f", training="standard", head="identity", gamma=None, regularizer="none",
           attack="square", eps=0.15, accuracy=50.0, seed=0, run=None, dataset="mnist", profile="paper", **extra):
    """One annotated-able record row, as a run writes it."""
    run = run or f"/runs/{model}-{training}-{head}-{regularizer}-{seed}"
    row = {"kind": kind, "dataset": dataset, "model": model, "training": training, "head": head, "gamma": gamma,
           "regularizer": regularizer, "lam": None, "alpha": None, "beta": None, "seed": seed, "run_dir": run,
           "profile": profile, "synthetic": False, "n_train": None, "n": 1000, "epochs": 100, "attack": attack, "eps": eps,
           "accuracy": accuracy}
    return {**row, **extra}


def frame(*rows):
    return labels.annotate(pd.DataFrame(list(rows)))


def test_every_claim_the_tables_can_test_holds_on_the_papers_own_numbers():
    verdicts = claims.evaluate(claims.published_cells(published.load()))
    from_tables = verdicts[verdicts["section"].str.contains("Table")]
    from_figures = verdicts[~verdicts["section"].str.contains("Table")]
    assert len(from_tables) == 14 and set(from_tables["verdict"]) == {"holds"}, from_tables[["claim", "verdict"]]
    # Published numbers are points: the deciding effect has no width.
    assert (from_tables["ci_low"] == from_tables["ci_high"]).all() and (from_tables["effect"] == from_tables["ci_low"]).all()
    # Figures have no published numbers: those claims wait for our records.
    assert set(from_figures["verdict"]) == {"not measured"}
    assert len(set(verdicts["claim"])) == len(verdicts) == len(claims.CLAIMS)


def test_side_by_side_joins_every_published_cell_with_its_interval_and_delta():
    final = frame(record(accuracy=50.0, seed=0), record(accuracy=52.0, seed=1, run="/runs/b1"),
                  record(model="resnet18", dataset="cifar10", eps=EIGHT + 1e-9, accuracy=1.0, run="/runs/rn"))
    joined = comparison.side_by_side(final, 2)
    assert len(joined) == 40  # every cell of Table 2, measured or not
    cell = joined[(joined["model"] == "2c2f") & (joined["setting"] == "ST") & (joined["method"] == "Baseline")].iloc[0]
    assert cell["ours"] == 51.0 and cell["ours_std"] == pytest.approx(math.sqrt(2)) and cell["seeds"] == 2
    assert cell["paper"] == 51.5 and cell["delta"] == pytest.approx(-0.5)
    # 8/255 as a resolved float (and float noise around it) meets the published budget.
    rn18 = joined[(joined["model"] == "resnet18") & (joined["setting"] == "ST") & (joined["method"] == "Baseline")].iloc[0]
    assert rn18["ours"] == 1.0 and rn18["delta"] == pytest.approx(0.7)
    assert joined["ours"].notna().sum() == 2
    line = comparison.summary(joined)
    assert line.startswith("2 of 40 cells of Table 2 measured; 2 of 2 within tolerance (accuracy: 2 points)")
    assert "median |delta| 0.60" in line and "largest |delta| 0.70 (RN18 ST Baseline square eps=8/255)" in line
    shown = comparison.display(joined)
    assert list(shown.columns) == ["attack", "eps", "method", "ours", "paper", "delta", "worst case", "failed checks"]
    first = shown.iloc[0]
    # Two seeds: the mean, the seeds' standard deviation and the bootstrap's interval over seeds and
    # images (t = 12.71 for one degree of freedom), delta the same interval shifted.
    assert (shown.index[0], first["method"], first["ours"], first["paper"], first["delta"]) == \
        ("2C2F ST", "Baseline", "51.0 ± 1.4 [34.0, 68.0]", "51.5", "-0.5 [-17.5, +16.5]")
    # Only the rows of the paper's table where something was measured: 2C2F ST and RN18 ST.
    assert set(shown.index) == {"2C2F ST", "RN18 ST"} and (shown["ours"] == "not measured").sum() == 8
    assert shown.loc[(shown["method"] == "TRADES") & (shown.index == "2C2F ST"), "paper"].iloc[0] == "N/A"
    nothing = comparison.side_by_side(final, 1)  # no SPSA record: every cell unmeasured, none shown
    assert comparison.display(nothing).empty and comparison.summary(nothing).startswith("0 of 40 cells of Table 1 measured")


def test_a_cell_carries_the_worst_case_and_the_failed_checks_of_its_runs():
    run = "/runs/blf"
    final = frame(record(attack="pgd", eps=0.15, head="blf", gamma=1.0, accuracy=60.0, run=run),
                  record(attack="square", eps=0.15, head="blf", gamma=1.0, accuracy=70.0, run=run),
                  record("worst_case", attack="worst_case", eps=0.15, head="blf", gamma=1.0, accuracy=55.0, run=run,
                         attacks="pgd+square"),
                  record("integrity", attack=None, eps=None, head="blf", gamma=1.0, run=run, check="pgd_convergence",
                         status="FAIL"),
                  record("integrity", attack=None, eps=None, head="blf", gamma=1.0, run=run, check="monotonic",
                         status="pass"))
    ours = comparison.cells(final).set_index("attack")
    assert ours.loc["pgd", "worst"] == 55.0 and ours.loc["square", "worst"] == 55.0
    assert ours.loc["pgd", "failed_checks"] == "pgd_convergence"
    shown = comparison.display(comparison.side_by_side(final, 2))
    blf = shown[(shown.index == "2C2F ST") & (shown["method"] == "BLF (gamma=1)")].iloc[0]
    # One run on 1,000 images: Wilson intervals; the worst case names the attacks it is made of.
    assert (blf["ours"], blf["worst case"], blf["failed checks"]) == \
        ("70.0 [67.1, 72.8]", "55.0 [51.9, 58.1] (pgd+square)", "pgd_convergence")
    assert r"BLF ($\gamma = 1$) & 70.0 [67.1, 72.8] & " in tables.to_latex(shown)
    assert r"pgd\_convergence \\" in tables.to_latex(shown)


def test_smoke_synthetic_and_subset_records_say_they_are_not_comparable():
    paper = frame(record())
    assert comparison.banner(paper) == "" and comparison.not_comparable(paper) == []
    assert comparison.caveats(paper) == ["evaluated on 1,000 of the 10,000 test images (the paper: all): sampling std "
                                         "up to 1.6 points per cell"]
    smoke = frame(record(profile="smoke", n_train=2000, synthetic=True))
    warning = comparison.banner(smoke)
    assert warning.startswith("NOT COMPARABLE WITH THE PAPER: profile smoke")
    assert "synthetic data in place of mnist" in warning and "first 2,000 training images" in warning
    # The demo runs the paper profile for 5 epochs: short of the recipe (appendix B.2) is not comparable.
    assert comparison.not_comparable(frame(record(epochs=100))) == []
    short = comparison.not_comparable(frame(record(epochs=5), record(model="resnet18", training="pgd_at", epochs=120)))
    assert short == ["2C2F standard trained 5 epochs, the paper's recipe 100"]
    several = comparison.not_comparable(frame(record(epochs=2), record(model="resnet18", training="pgd_at", epochs=2)))
    assert several == ["2 model/training pairs trained 2 epochs, the paper's recipes 100-120"]
    assert comparison.paper_epochs("resnet18", "standard") == 350 and comparison.paper_epochs("mine", "standard") is None


def test_the_written_side_by_side_and_claims_lead_with_the_warning(tmp_path):
    final = frame(record(profile="smoke"), record(head="blf", gamma=1.0, accuracy=58.0))
    joined = {"2": comparison.side_by_side(final, 2)}
    written = renderers.versus_paper(joined, final, tmp_path / "t_vs_paper", "T")
    assert [p.name for p in written] == ["t_vs_paper.md", "t_vs_paper.tex", "t_vs_paper.csv"]
    text = (tmp_path / "t_vs_paper.md").read_text()
    assert text.splitlines()[2].startswith("> **NOT COMPARABLE WITH THE PAPER")
    assert "| 2C2F ST | square | 0.15 | BLF (gamma=1) | 58.0 [54.9, 61.0] | 59.4 | -1.4 [-4.5, +1.6] |" in text
    assert comparison.DISPLAY_NOTE in text
    tex = (tmp_path / "t_vs_paper.tex").read_text()
    assert "NOT COMPARABLE" in tex.splitlines()[1]
    assert r" & attack & $\varepsilon$ & method & ours & paper & delta & worst case & failed checks \\" in tex
    assert r"2C2F ST & square & 0.15 & BLF ($\gamma = 1$) & 58.0 [54.9, 61.0] & 59.4 & -1.4 [-4.5, +1.6] &  &  \\" in tex
    assert len(pd.read_csv(tmp_path / "t_vs_paper.csv")) == 40
    verdicts = claims.evaluate(comparison.cells(final))
    renderers.claims_table(verdicts, final, tmp_path / "claims", "T")
    head = (tmp_path / "claims.md").read_text().splitlines()[0]
    assert "0 holds, 0 fails, 0 inconclusive, 31 not measured" in head and "NOT COMPARABLE" in head
    assert "| regularizers_above_baseline_square_st | 5.3, Table 2 |" in (tmp_path / "claims.md").read_text()
    assert list(pd.read_csv(tmp_path / "claims.csv").columns) == [
        "claim", "section", "text", "verdict", "seeds", "effect", "ci_low", "ci_high", "numbers", "verdict_worst_case",
        "seeds_worst_case", "effect_worst_case", "ci_low_worst_case", "ci_high_worst_case", "numbers_worst_case"]


def test_curve_table_puts_the_worst_case_under_the_attacks_and_marks_failed_checks():
    run = "/runs/blf"
    rows = [record(attack=a, eps=e, head="blf", gamma=1.0, accuracy=acc, run=run)
            for a, e, acc in [("pgd", 0.0, 99.0), ("pgd", 0.3, 40.0), ("pgd_tanh_surrogate", 0.3, 10.0)]]
    rows += [record("worst_case", attack="worst_case", eps=0.3, head="blf", gamma=1.0, accuracy=9.0, run=run,
                    attacks="pgd+pgd_tanh_surrogate"),
             record("integrity", attack=None, eps=None, head="blf", gamma=1.0, run=run, check="gradient_free_vs_gradient",
                    status="FAIL"),
             record(attack="pgd", eps=0.3, accuracy=5.0, run="/runs/base"),
             # A method evaluated by one attack still shows its worst case, named by that attack.
             record("worst_case", attack="worst_case", eps=0.3, accuracy=5.0, run="/runs/base", attacks="pgd")]
    final = frame(*rows)
    table = tables.curve_table(final, [])
    assert list(table.index) == ["Baseline, pgd", "Baseline, worst case (pgd)", "BLF (gamma=1), pgd",
                                 "BLF (gamma=1), pgd_tanh_surrogate", "BLF (gamma=1), worst case (pgd+pgd_tanh_surrogate)"]
    # One run of 1,000 images: each accuracy with its Wilson interval.
    assert table.loc["BLF (gamma=1), pgd", "eps=0.3"] == "40.0 [37.0, 43.1] †"
    assert table.loc["Baseline, pgd", "eps=0.3"] == "5.0 [3.8, 6.5]"
    assert table.loc["BLF (gamma=1), worst case (pgd+pgd_tanh_surrogate)", "eps=0.3"] == "9.0 [7.4, 10.9] †"
    notes = tables.integrity_notes(final, tables.failed_checks(final))
    assert notes == ["† 2C2F ST BLF (gamma=1) (seed 0): failed gradient_free_vs_gradient (blf)"]


def test_a_claim_about_robustness_is_also_read_in_the_worst_case():
    """BLF leads under PGD at eps 0.2 and 0.25 but not once the tanh-surrogate attack is counted:
    the claim holds as the paper measured it and fails in the worst case."""
    blf, base = "/runs/blf", "/runs/base"
    rows = []
    for eps in (0.2, 0.25):
        rows += [record(attack="pgd", eps=eps, head="blf", gamma=1.0, accuracy=32.0, run=blf),
                 record(attack="pgd_tanh_surrogate", eps=eps, head="blf", gamma=1.0, accuracy=15.0, run=blf),
                 record("worst_case", attack="worst_case", eps=eps, head="blf", gamma=1.0, accuracy=14.0, run=blf),
                 record(attack="pgd", eps=eps, accuracy=18.0, run=base),
                 record("worst_case", attack="worst_case", eps=eps, accuracy=18.0, run=base)]
    rows.append(record("operator_norm_summary", attack=None, eps=None, head="blf", gamma=1.0, mean_conv=7.0, run=blf))
    verdicts = claims.evaluate(comparison.cells(frame(*rows))).set_index("claim")
    large = verdicts.loc["blf_most_robust_mnist_st_large_eps"]
    # One seed of each: what the intervals say is a finding about these two models, not the methods.
    assert (large["verdict"], large["verdict_worst_case"]) == ("inconclusive: one seed (holds for the models trained)",
                                                               "inconclusive: one seed (fails for the models trained)")
    # No outcomes recorded: two binomials, unpaired; the deciding effect is BLF - Baseline.
    assert "BLF (gamma=1) #1, vs Baseline: 32 vs 18, +14.0 [" in large["numbers"] and "unpaired (binomial)" in large["numbers"]
    assert "BLF (gamma=1) #2, vs Baseline: 14 vs 18, -4.0 [" in large["numbers_worst_case"]
    assert large["effect"] == pytest.approx(14.0) and large["ci_low"] > 0 and large["ci_high_worst_case"] < 0
    norms = verdicts.loc["regularizers_smaller_operator_norms"]
    assert norms["verdict_worst_case"] == "-"  # not a robustness claim


# Two evaluations of one run: the same attack with other settings, or on another subset.
TWO_EVALUATIONS = [({"attack.restarts": 1}, {"attack.restarts": 5}, "restarts=1"),
                   ({"n": 100}, {"n": 20}, "n=100")]


def evaluated_twice(older, newer, **kwargs):
    """One run's PGD at eps 0.3 evaluated twice: 60% by the older evaluation, 40% by the newer."""
    return [record(attack="pgd", eps=0.3, accuracy=60.0, evaluated_at="2026-01-01T00:00:00", **older, **kwargs),
            record(attack="pgd", eps=0.3, accuracy=40.0, evaluated_at="2026-02-01T00:00:00", **newer, **kwargs)]


@pytest.mark.parametrize("older, newer, label", TWO_EVALUATIONS)
def test_two_evaluations_of_one_run_are_two_cells_never_their_mean(older, newer, label):
    ours = comparison.cells(frame(*evaluated_twice(older, newer)))
    assert sorted(ours["ours"]) == [40.0, 60.0] and list(ours["seeds"]) == [1, 1]
    # The newer evaluation is the cell under the attack's name; the older says what differs.
    assert dict(zip(ours["variant"], ours["ours"])) == {"": 40.0, label: 60.0}


@pytest.mark.parametrize("older, newer, label", TWO_EVALUATIONS)
def test_curve_and_accuracy_tables_show_two_evaluations_as_two_rows(older, newer, label):
    final = frame(*evaluated_twice(older, newer))
    curve = tables.curve_table(final, [])
    assert list(curve.index) == ["Baseline, pgd", f"Baseline, pgd ({label})"]
    assert curve["eps=0.3"].str.startswith("40.0").iloc[0] and curve["eps=0.3"].str.startswith("60.0").iloc[1]
    text = tables.accuracy_table(final)
    assert f"pgd ({label})" in text and "60.0" in text and "40.0" in text and "50.0" not in text


def test_a_published_cell_evaluated_twice_is_two_rows_beside_the_paper():
    rows = [record(accuracy=acc, evaluated_at=at, **{"attack.n_queries": q})
            for acc, at, q in ((50.0, "2026-01-01", 1000), (45.0, "2026-02-01", 5000))]
    shown = comparison.display(comparison.side_by_side(frame(*rows), 2))
    baseline = shown[(shown.index == "2C2F ST") & (shown["method"] == "Baseline")]
    assert list(baseline["attack"]) == ["square", "square (n_queries=1000)"]
    assert [o.split()[0] for o in baseline["ours"]] == ["45.0", "50.0"]
