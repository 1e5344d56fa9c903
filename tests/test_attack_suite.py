"""Every attack of the paper runs on a tiny model, stays in budget, and records its settings;
the analyses (operator norms, loss surfaces) match their definitions."""

import pytest
import torch
from omegaconf import OmegaConf

import conftest
from blf import data
from blf.errors import ConfigError
from blf.eval import attacks, loss_surface, operator_norm, robustness
from blf.nn import heads, models
from conftest import option

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    head = heads.build(option("head", "blf", gamma=2.0))
    classifier = models.build(option("model", "2c2f"), head, (1, 28, 28), 10)
    split = data.load(OmegaConf.create({"name": "mnist", "synthetic": True, "synthetic_train": 8, "synthetic_test": 6,
                                        "synthetic_seed": 0, "n_train": None})).test
    return classifier.eval(), split


# Small settings per attack: the structure is the paper's, the budgets are tiny.
FAST = {
    "pgd": {"nb_iter": 3},
    "pgd_tanh_surrogate": {"nb_iter": 3},
    "spsa": {"nb_iter": 2, "nb_sample": 32, "max_batch_size": 16},
    "square": {"n_queries": 20},
    "apgd_ce": {"n_iter": 5, "n_restarts": 2},
    "apgd_t": {"n_iter": 5, "n_restarts": 1, "n_target_classes": 2},
    "autoattack": {},
}


def attack_config(name, **extra):
    return conftest.attack_config(name, **{**FAST[name], "eps": [0.1], **extra})


@pytest.mark.parametrize("name", sorted(FAST))
def test_each_attack_runs_within_budget(tiny, name):
    classifier, split = tiny
    attack = attacks.build(name, attack_config(name))
    x, y = split.batch(slice(None))
    if name == "autoattack":
        pytest.importorskip("pyautoattack")
    with models.frozen(classifier):
        torch.manual_seed(0)
        x_adv = attack.perturb(classifier, x, y, 0.1)
    assert x_adv.shape == x.shape
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-5
    assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
    rows = robustness.robustness(classifier, split, attack, batch_size=6, seed=0, device=CPU, progress=False)
    (row, correct), = rows
    assert row["attack"] == name and row["eps"] == 0.1 and correct.shape == (6,)
    assert all(f"attack.{k}" in row for k in attack.settings())


def test_paper_settings_live_in_config():
    cfg = conftest.compose_config(overrides=["attack=[pgd,spsa,square,apgd_ce,apgd_t]"]).attack
    assert (cfg.spsa.eps, cfg.spsa.delta, cfg.spsa.lr, cfg.spsa.nb_iter, cfg.spsa.nb_sample) == ([0.15], 0.01, 0.01, 40, 2048)
    assert (cfg.square.n_queries, cfg.square.loss) == (5000, "margin")
    assert (cfg.apgd_ce.n_restarts, cfg.apgd_t.n_restarts) == (5, 5)
    assert list(cfg.pgd.eps) == [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3] and cfg.pgd.nb_iter == 40


def test_pgd_restarts_never_lose_a_broken_example(tiny):
    classifier, split = tiny
    x, y = split.batch(slice(None))
    single = attacks.build("pgd", attack_config("pgd", nb_iter=2, eps_iter=0.005))
    multi = attacks.build("pgd", attack_config("pgd", nb_iter=2, eps_iter=0.005, restarts=4))
    with models.frozen(classifier):
        torch.manual_seed(3)
        broken_once = classifier(single.perturb(classifier, x, y, 0.02)).argmax(1) != y
        torch.manual_seed(3)
        broken_multi = classifier(multi.perturb(classifier, x, y, 0.02)).argmax(1) != y
    assert (broken_multi | ~broken_once).all()  # everything broken by the first run stays broken


def test_targeted_pgd_moves_towards_its_targets(tiny):
    classifier, split = tiny
    x, y = split.batch(slice(None))
    with models.frozen(classifier):
        targets = attacks.pgd_module.choose_targets(classifier, x, y, "least_likely", 10)
        assert (targets != y).all()
        before = torch.nn.functional.cross_entropy(classifier(x), targets)
        x_adv = attacks.pgd(classifier, x, targets, eps=0.3, nb_iter=10, eps_iter=0.03, targeted=True)
        assert torch.nn.functional.cross_entropy(classifier(x_adv), targets) < before


def test_tanh_surrogate_crafts_on_tanh_and_needs_a_blf_head(tiny):
    classifier, _ = tiny
    surrogate = attacks.build("pgd_tanh_surrogate", attack_config("pgd_tanh_surrogate"))
    crafter = surrogate.crafting_model(classifier)
    assert crafter.head.name == "tanh" and crafter.head.gamma == 2.0 and crafter.network is classifier.network
    surrogate.check(classifier, 10)
    baseline = models.Classifier(classifier.network, heads.Identity())
    with pytest.raises(ConfigError, match="head=identity"):
        surrogate.check(baseline, 10)


def test_operator_norm_is_the_largest_absolute_row_sum():
    conv = torch.nn.Conv2d(2, 3, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(24, dtype=torch.float32).view(3, 2, 2, 2) - 12)
    # Rows (outputs): |-12..-5| = 68, |-4..3| = 16, |4..11| = 60.
    assert operator_norm.linf_operator_norm(conv.weight) == 68.0
    model = models.build(option("model", "4c3f"), heads.Identity(), (1, 28, 28), 10)
    rows = operator_norm.layer_norms(model)
    assert [r["layer_type"] for r in rows] == ["conv"] * 4 + ["linear"] * 3
    assert rows[-1]["operator_norm"] == 0.0  # 4C3F's last layer starts at zero
    summary = operator_norm.summary(rows)
    assert summary["mean_conv"] == pytest.approx(sum(r["operator_norm"] for r in rows[:4]) / 4)


def test_loss_surface_grid_and_spread(tiny):
    classifier, split = tiny
    axis, index, surfaces, rows = loss_surface.compute(classifier, split, points=2, radius=4 / 255, step=1 / 255,
                                                        seed=0, clip=False, batch_size=100, device=CPU)
    assert axis.tolist() == pytest.approx([k / 255 for k in range(-4, 5)])
    assert surfaces.shape == (2, 9, 9)
    x, y = split.batch(index[:1])
    with torch.no_grad():
        clean = torch.nn.functional.cross_entropy(classifier(x), y)
    assert float(surfaces[0, 4, 4]) == pytest.approx(float(clean), rel=1e-5)
    assert rows[0]["max_minus_min"] == pytest.approx(float(surfaces[0].max() - surfaces[0].min()))
    v1, v2 = loss_surface.directions((1, 28, 28), seed=1)
    assert set(v1.unique().tolist()) == {-1.0, 1.0} and not torch.equal(v1, v2)
