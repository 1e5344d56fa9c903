"""PGD: the budget, the box, advertorch's semantics, and the evaluation around it."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from blf.data import Split
from blf.errors import ConfigError
from blf.eval import attacks, robustness
from blf.nn import heads, models
from conftest import attack_config, option


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    net = models.build(option("model", "2c2f"), heads.build(option("head", "blf", gamma=1.0)), (1, 28, 28), 10)
    return net.eval()


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(1)
    return torch.rand(16, 1, 28, 28, generator=generator), torch.randint(10, (16,), generator=generator)


def pgd_attack(**overrides):
    cfg = {"eps": [0.0, 0.1], "nb_iter": 10, "eps_iter": 0.02, "rand_init": True, "implementation": "native", **overrides}
    return attacks.build("pgd", attack_config("pgd", **cfg))


@pytest.mark.parametrize("implementation", ["native", "advertorch"])
@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_pgd_stays_in_the_ball_and_the_box(classifier, batch, implementation, eps):
    x, y = batch
    with models.frozen(classifier):
        x_adv = pgd_attack(implementation=implementation).perturb(classifier, x, y, eps)
    assert x_adv.shape == x.shape
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert float((x_adv - x).abs().max()) > 0.5 * eps  # it did move


def test_native_pgd_reproduces_advertorch_from_the_same_start(classifier, batch):
    x, y = batch
    with models.frozen(classifier):
        torch.manual_seed(7)
        ours = pgd_attack(implementation="native").perturb(classifier, x, y, 0.1)
        torch.manual_seed(7)
        theirs = pgd_attack(implementation="advertorch").perturb(classifier, x, y, 0.1)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_pgd_increases_the_loss(classifier, batch):
    x, y = batch
    loss = nn.functional.cross_entropy
    with models.frozen(classifier):
        x_adv = attacks.pgd(classifier, x, y, eps=0.2, nb_iter=20, eps_iter=0.02, rand_init=False)
        assert float(loss(classifier(x_adv), y)) > float(loss(classifier(x), y))
        target = (y + 1) % 10
        x_tgt = attacks.pgd(classifier, x, target, eps=0.2, nb_iter=20, eps_iter=0.02, rand_init=False, targeted=True)
        assert float(loss(classifier(x_tgt), target)) < float(loss(classifier(x), target))


def test_pgd_does_not_touch_parameter_gradients(classifier, batch):
    x, y = batch
    with models.frozen(classifier):
        attacks.pgd(classifier, x, y, eps=0.1, nb_iter=2, eps_iter=0.05)
    assert all(p.grad is None for p in classifier.parameters())


def test_robustness_rows_and_clean_row_at_eps_zero(classifier, batch):
    x, y = batch
    split = Split((x * 255).round().to(torch.uint8), y)
    outcomes = robustness.robustness(classifier, split, pgd_attack(), batch_size=8, seed=0, device=torch.device("cpu"), progress=False)
    rows = [row for row, _ in outcomes]
    assert [r["eps"] for r in rows] == [0.0, 0.1]
    assert [int(c.sum()) for _, c in outcomes] == [r["correct"] for r in rows]
    clean = robustness.clean_accuracy(classifier, split, 8, torch.device("cpu"))
    assert rows[0]["accuracy"] == pytest.approx(clean)
    assert rows[1]["accuracy"] <= rows[0]["accuracy"]
    assert rows[1]["attack.nb_iter"] == 10
    again = robustness.robustness(classifier, split, pgd_attack(), batch_size=8, seed=0, device=torch.device("cpu"), progress=False)
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(again, outcomes))


@pytest.mark.parametrize("overrides, key", [
    ({"eps": [0.1, -0.05]}, "attack.pgd.eps"),
    ({"nb_iter": 0}, "attack.pgd.nb_iter"),
    ({"eps_iter": 0.0}, "attack.pgd.eps_iter"),
    ({"implementation": "cleverhans"}, "attack.pgd.implementation"),
])
def test_bad_attack_settings_are_refused(overrides, key):
    with pytest.raises(ConfigError, match=key):
        pgd_attack(**overrides)


def test_unknown_attack_is_refused():
    with pytest.raises(ConfigError, match="attack.cw._target_=None is missing; allowed: a subclass of blf.eval.attacks.base.Attack"):
        attacks.build("cw", OmegaConf.create({}))
    with pytest.raises(ConfigError, match="attack.pgd._target_='blf.nn.heads.BLF' is not a Attack"):
        attacks.build("pgd", attack_config("pgd", _target_="blf.nn.heads.BLF"))
