"""The integrity checks fire on a gradient-masked model and pass on an honest one."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from blf import data
from blf.errors import ConfigError
from blf.eval import attacks, integrity, robustness
from blf.nn import heads, models
from conftest import TINY, attack_config, evaluate, option, toy, train

CHECKS = OmegaConf.create({
    "monotonic_tolerance": 0.5,
    "unbounded": {"eps": 0.5, "nb_iter": 100, "eps_iter": 0.025, "max_accuracy": 2.0},
    "convergence": {"iter_factor": 4, "restarts": 3, "step_factors": [0.5, 2.0], "tolerance": 2.0, "max_n": 200},
    "gradient_free": {"n_queries": 300, "max_n": 200},
    "saturation": {"max_share": 10.0, "max_n": 200},
    "attack_gap_tolerance": 5.0,
})
CPU = torch.device("cpu")
GRADIENTS = OmegaConf.create({"max_share": 5.0, "relative_floor": 1e-12})  # the signal unavailable_gradients


class Quantize(nn.Module):
    """Rounds pixels to 4 levels: the output no longer depends smoothly on the input, so every
    input gradient is zero (a textbook gradient-masking 'defense')."""

    def forward(self, x):
        return torch.round(x * 3) / 3


@pytest.fixture(scope="module")
def dataset():
    cfg = OmegaConf.create({"name": "mnist", "synthetic": True, "synthetic_train": 3000, "synthetic_test": 200, "synthetic_seed": 0,
                            "n_train": None})
    return data.load(cfg)


@pytest.fixture(scope="module")
def honest(dataset):
    torch.manual_seed(0)
    classifier = models.build(option("model", "2c2f"), heads.Identity(), (1, 28, 28), 10)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        classifier.train()
        order = torch.randperm(len(dataset.train), generator=generator)
        for start in range(0, len(order), 64):
            x, y = dataset.train.batch(order[start:start + 64])
            loss = nn.functional.cross_entropy(classifier(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert robustness.clean_accuracy(classifier, dataset.test, 100, CPU) > 90
    return classifier.eval()


def masked_version(classifier):
    return models.Classifier(nn.Sequential(Quantize(), classifier.network), classifier.head).eval()


def assess(classifier, dataset):
    suite = [
        attacks.build("pgd", attack_config("pgd", eps=[0.0, 0.05, 0.1, 0.2], nb_iter=20, eps_iter=0.01)),
        attacks.build("square", attack_config("square", eps=[0.1], n_queries=300, p_init=0.8, n_restarts=1, loss="margin",
                                              seed=0)),
        attacks.build("pgd_dlr_prelogits", attack_config("pgd_dlr_prelogits", eps=[0.05], nb_iter=20)),
    ]
    _, outcomes = robustness.evaluate(classifier, dataset.test, suite, seed=0, batch_size=100, device=CPU, num_classes=10, progress=False)
    verdicts = integrity.run(classifier, dataset.test, outcomes, CHECKS, batch_size=100, device=CPU, seed=0)
    return {v.check: v for v in verdicts}, outcomes


def test_honest_model_passes_every_check(honest, dataset):
    verdicts, _ = assess(honest, dataset)
    expected = {**dict.fromkeys(verdicts, "pass"), "saturation": "skipped"}  # the identity head does not saturate
    assert {name: v.status for name, v in verdicts.items()} == expected, integrity.report(list(verdicts.values()))


def test_masked_model_is_caught(honest, dataset):
    masked = masked_version(honest)
    assert robustness.clean_accuracy(masked, dataset.test, 100, CPU) > 80  # still a working classifier
    verdicts, outcomes = assess(masked, dataset)
    report = integrity.report(list(verdicts.values()))
    assert verdicts["input_gradients"].failed and verdicts["input_gradients"].value == 100.0
    assert verdicts["unbounded_attack"].failed
    assert verdicts["gradient_free_vs_gradient"].failed and verdicts["gradient_free_vs_gradient"].value > 1.0
    assert "!! FAIL" in report and "FAILED" in report
    # PGD looks strong against it; Square shows the accuracy is an illusion.
    pgd_at_01 = next(r for r, _ in outcomes if r["attack"] == "pgd" and r["eps"] == 0.1)
    square = next(r for r, _ in outcomes if r["attack"] == "square")
    assert square["accuracy"] < pgd_at_01["accuracy"]


def test_monotonic_check_flags_a_rising_curve():
    rows = [{"attack": "pgd", "eps": e, "accuracy": a} for e, a in [(0.0, 99.0), (0.1, 50.0), (0.2, 60.0)]]
    verdict = integrity.monotonic(rows, tolerance=0.5)
    assert verdict.failed and verdict.value == pytest.approx(10.0) and "eps=0.2" in verdict.detail
    assert not integrity.monotonic(rows[:2], tolerance=0.5).failed
    assert integrity.monotonic(rows[:1], tolerance=0.5).status == "skipped"


def test_worst_case_is_the_per_example_minimum():
    a = torch.tensor([True, True, False, True])
    b = torch.tensor([True, False, True, True])
    rows = robustness.worst_case([({"attack": "pgd", "eps": 0.1}, a), ({"attack": "square", "eps": 0.1}, b),
                                  ({"attack": "pgd", "eps": 0.2}, b)])
    assert [(r["eps"], r["accuracy"], r["attacks"]) for r in rows] == [(0.1, 50.0, "pgd+square"), (0.2, 75.0, "pgd")]


# --- the checks that catch a saturated bounded head (BLF beyond z*) ------------------------------


def test_saturation_and_input_gradients_fail_on_blf_beyond_z_star_and_pass_inside():
    masked, split = toy(heads.BLF(1.0), 6.0)  # every pre-logit at |z| = 6 > z* = 2.4
    plain, _ = toy(heads.BLF(1.0), 1.0)  # every pre-logit at |z| = 1 < z*
    checks = CHECKS.saturation
    assert integrity.saturation(masked, split, None, checks, 30, CPU, 0).failed
    verdict = integrity.saturation(plain, split, None, checks, 30, CPU, 0)
    assert verdict.status == "pass" and verdict.value == 0.0
    assert integrity.saturation(toy(heads.Identity(), 6.0)[0], split, None, checks, 30, CPU, 0).status == "skipped"
    gradients = integrity.input_gradients(masked, split, 30, CPU, GRADIENTS)
    assert gradients.failed and gradients.value == 100.0 and "30 reversed" in gradients.detail
    assert integrity.input_gradients(plain, split, 30, CPU, GRADIENTS).status == "pass"


def test_input_gradients_flag_a_saturated_softmax_but_not_a_plain_one():
    assert integrity.input_gradients(toy(heads.Identity(), 1000.0)[0], toy(heads.Identity(), 1.0)[1], 30, CPU, GRADIENTS).failed
    assert not integrity.input_gradients(*toy(heads.Identity(), 6.0), 30, CPU, GRADIENTS).failed


def test_attack_gap_names_the_attack_that_beats_the_papers():
    pgd = torch.tensor([True] * 8 + [False] * 2)
    bpda = torch.tensor([False] * 9 + [True])
    honest = torch.tensor([True] * 7 + [False] * 3)
    outcomes = [({"attack": "pgd", "eps": 0.3}, pgd), ({"attack": "bpda_envelope", "eps": 0.3}, bpda)]
    verdict = integrity.attack_gap(outcomes, tolerance=5.0)
    assert verdict.failed and verdict.value == pytest.approx(70.0) and "bpda_envelope" in verdict.detail
    assert "gradient masking" in verdict.detail
    assert not integrity.attack_gap([outcomes[0], ({"attack": "bpda_envelope", "eps": 0.3}, honest)], 10.0).failed
    assert integrity.attack_gap(outcomes[:1], 5.0).status == "skipped"


def test_convergence_tests_the_pgd_that_ran(honest, dataset):
    """The check reruns PGD with the settings of the evaluation's records, at their largest eps."""
    suite = [attacks.build("pgd", attack_config("pgd", eps=[0.0, 0.1, 0.2], nb_iter=1, eps_iter=0.01))]
    _, outcomes = robustness.evaluate(honest, dataset.test, suite, seed=0, batch_size=100, device=CPU, num_classes=10,
                                      progress=False)
    verdict = integrity.pgd_convergence(honest, dataset.test, integrity.pgd_settings(outcomes), CHECKS.convergence, 100,
                                        CPU, 0)
    assert "PGD-1 (as evaluated)" in verdict.detail and "eps=0.2" in verdict.detail
    assert verdict.failed  # one step of 0.01 is far from converged at 0.2
    assert integrity.pgd_convergence(honest, dataset.test, None, CHECKS.convergence, 100, CPU, 0).status == "skipped"


def test_convergence_and_saturation_judge_the_weakest_pgd_recorded_on_the_checkpoint(tmp_path):
    """`src/train.py ... 'attack=[pgd]'` then `src/evaluate.py ... attack.pgd.nb_iter=7`: the
    checkpoint holds PGD-10 from training and PGD-7 just run. The checks judge the weakest (fewest
    iterations x restarts), PGD-7, and name the other."""
    run = tmp_path / "run"
    train(run, "head=blf", "attack=[pgd]", "attack.pgd.nb_iter=10", "eval.integrity.convergence.max_n=16",
          "eval.integrity.saturation.max_n=16")
    # The evaluation command with TINY's evaluation settings (the run folder holds the data's).
    tiny = [o for o in TINY if not o.startswith(("dataset.", "trainer."))]
    added = evaluate(run, *tiny, "attack=[pgd]", "attack.pgd.nb_iter=7", "eval.integrity.convergence.max_n=16",
                     "eval.integrity.saturation.max_n=16").added
    checks = {r["check"]: r for r in added if r["kind"] == "integrity"}
    convergence, saturation = checks["pgd_convergence"]["detail"], checks["saturation"]["detail"]
    assert "PGD-7 (as evaluated)" in convergence and "also recorded: PGD-10" in convergence, convergence
    assert "PGD-14 x 2 restarts" in convergence  # the check's stronger PGD: 2 x the evaluated iterations
    assert "adversarial: PGD-7 at eps=" in saturation, saturation


def test_pgd_settings_picks_the_fewest_iterations_x_restarts_and_names_the_others():
    right = torch.ones(4, dtype=torch.bool)

    def pgd(eps, nb_iter, restarts=1):
        return {"attack": "pgd", "eps": eps, "attack.nb_iter": nb_iter, "attack.eps_iter": 0.01, "attack.restarts": restarts}

    outcomes = [(pgd(e, 40), right) for e in (0.0, 0.1, 0.3)] + [(pgd(0.3, 10, restarts=5), right), (pgd(0.2, 20), right)]
    chosen = integrity.pgd_settings(outcomes)
    assert (chosen.row["attack.nb_iter"], chosen.row["eps"]) == (20, 0.2)  # 20 x 1 < 40 x 1 < 10 x 5, at its largest eps
    assert chosen.name == "PGD-20" and chosen.others == ("PGD-40 at eps=0.3", "PGD-10 x 5 restarts at eps=0.3")
    assert integrity.pgd_settings([(pgd(0.0, 40), right)]) is None  # clean accuracy only: no PGD to judge


def test_budget_sweep_shows_a_converging_pgd_and_records_one_row_per_budget(honest, dataset):
    from blf import settings
    from blf.eval import budget_sweep

    cfg = settings.budget_sweep(OmegaConf.create({"eps": 0.1, "eps_iter": 0.005, "steps": [1, 5, 20], "restarts": [1, 3],
                                                   "restart_steps": 5, "max_n": 100}))
    rows = budget_sweep.sweep(honest, dataset.test, cfg, batch_size=100, device=CPU, seed=0)
    budgets = [(r["attack.nb_iter"], r["attack.restarts"]) for r in rows]
    assert budgets == [(1, 1), (5, 1), (20, 1), (5, 3)]  # (5, 1) once
    by_steps = [r["accuracy"] for r in rows if r["attack.restarts"] == 1]
    assert by_steps[0] > by_steps[-1]  # one step of 0.005 is far from converged at 0.1
    assert all(r["sweep_n"] == 100 and r["kind"] == "budget_sweep" for r in rows)
    with pytest.raises(ConfigError, match="analysis.budget_sweep.steps"):
        settings.budget_sweep(OmegaConf.create({**cfg, "steps": [0]}))


def test_the_tanh_surrogate_counts_as_adaptive_in_the_attack_gap():
    """Fig. 5's surrogate is a check of BLF's gradients, not a number the paper reports as
    robustness: beside it, PGD's inflated accuracy must still show as a gap."""
    pgd = torch.tensor([True] * 2 + [False] * 8)
    surrogate = torch.tensor([False] * 10)
    verdict = integrity.attack_gap([({"attack": "pgd", "eps": 0.3}, pgd), ({"attack": "pgd_tanh_surrogate", "eps": 0.3},
                                                                            surrogate)], tolerance=5.0)
    assert verdict.failed and "pgd_tanh_surrogate 0.00%" in verdict.detail
