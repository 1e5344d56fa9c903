"""The training objectives against hand computations on small tensors (section 2.1, eq. 3)."""

import math

import pytest
import torch

from blf.errors import ConfigError
from blf.nn import regularizers
from conftest import option

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
Y = torch.tensor([0, 2])


def log_softmax_by_hand(row):
    norm = math.log(sum(math.exp(v) for v in row))
    return [v - norm for v in row]


def build(name: str, **values):
    return regularizers.build(option("regularizer", name, **values))


def test_none_is_cross_entropy():
    rows = LOGITS.tolist()
    expected = -(log_softmax_by_hand(rows[0])[0] + log_softmax_by_hand(rows[1])[2]) / 2
    assert float(build(name="none")(LOGITS, Y)) == pytest.approx(expected, rel=1e-6)


def test_logit_squeezing_adds_half_lambda_squared_norm():
    rows = LOGITS.tolist()
    ce = -(log_softmax_by_hand(rows[0])[0] + log_softmax_by_hand(rows[1])[2]) / 2
    squares = (4 + 0 + 1 + 0.25 + 2.25 + 0) / 2  # mean over the batch of ||z||^2
    expected = ce + 0.3 / 2 * squares
    assert float(build(name="logit_squeezing", lam=0.3)(LOGITS, Y)) == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_spreads_alpha_over_the_other_classes():
    alpha = 0.3
    targets = [[0.7, 0.15, 0.15], [0.15, 0.15, 0.7]]  # p_t = 1 - alpha, p_k = alpha / (M - 1)
    rows = LOGITS.tolist()
    expected = -sum(
        sum(p * lp for p, lp in zip(t, log_softmax_by_hand(r))) for t, r in zip(targets, rows)
    ) / 2
    reg = build(name="label_smoothing", alpha=alpha)
    assert torch.allclose(reg.targets(Y, 3, torch.float32), torch.tensor(targets))
    assert float(reg(LOGITS, Y)) == pytest.approx(expected, rel=1e-6)
    # ... which is not torch's label smoothing (alpha spread over all M classes).
    torch_version = torch.nn.functional.cross_entropy(LOGITS, Y, label_smoothing=alpha)
    assert float(torch_version) != pytest.approx(expected, rel=1e-4)


def test_zero_strength_reduces_to_cross_entropy():
    ce = build(name="none")(LOGITS, Y)
    assert torch.allclose(build(name="logit_squeezing", lam=0.0)(LOGITS, Y), ce)
    assert torch.allclose(build(name="label_smoothing", alpha=0.0)(LOGITS, Y), ce)


@pytest.mark.parametrize("cfg, key", [
    ({"name": "logit_squeezing", "lam": -0.1}, "regularizer.lam"),
    ({"name": "label_smoothing", "alpha": 1.0}, "regularizer.alpha"),
    ({"name": "label_smoothing", "alpha": -0.01}, "regularizer.alpha"),
    ({"name": "none", "_target_": "blf.nn.regularizers.Mixup"}, "regularizer._target_='blf.nn.regularizers.Mixup' cannot"),
    ({"name": "none", "lam": 0.1}, r"regularizer: Regularizer cannot take \['lam'\]"),
])
def test_bad_values_are_refused(cfg, key):
    with pytest.raises(ConfigError, match=key):
        build(**cfg)


def test_describe_names_the_strength():
    assert build(name="logit_squeezing", lam=0.05).describe() == {"regularizer": "logit_squeezing", "lam": 0.05, "alpha": None}
    assert build(name="label_smoothing", alpha=0.1).describe() == {"regularizer": "label_smoothing", "lam": None, "alpha": 0.1}
