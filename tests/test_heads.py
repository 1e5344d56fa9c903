"""BLF against its definition (eq. 5) and Theorem 3; the other heads against theirs."""

import math

import pytest
import torch

from blf.errors import ConfigError
from blf.nn import heads
from conftest import option

SQRT5 = math.sqrt(5.0)


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


@pytest.mark.parametrize("z", [-7.3, -2.4, -0.5, 0.0, 0.3, 1.0, 2.4, 9.0])
def test_blf_matches_equation_5(z):
    s = sigmoid(z)
    expected = 2.0 * (z * s + s - z * s * s) - 1.0
    got = float(heads.blf(torch.tensor(z, dtype=torch.float64)))
    assert got == pytest.approx(expected, abs=1e-12)


def test_blf_is_odd_zero_at_zero_and_has_unit_slope():
    z = torch.linspace(-20, 20, 2001, dtype=torch.float64, requires_grad=True)
    g = heads.blf(z)
    assert torch.allclose(g, -heads.blf(-z), atol=1e-12)
    assert float(heads.blf(torch.tensor(0.0))) == 0.0
    zero = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(heads.blf(zero), zero)
    assert float(slope) == pytest.approx(1.0, abs=1e-12)


def test_blf_tends_to_plus_minus_one():
    big = torch.tensor([50.0, 1e3, 1e6], dtype=torch.float64)
    assert torch.allclose(heads.blf(big), torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(heads.blf(-big), -torch.ones(3, dtype=torch.float64), atol=1e-12)


def test_blf_derivative_matches_the_proof_of_theorem_3():
    # g'(z) = 2 s(z)(1 - s(z))(2 + z - 2 z s(z))
    z = torch.linspace(-8, 8, 321, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(heads.blf(z).sum(), z)
    s = torch.sigmoid(z.detach())
    expected = 2 * s * (1 - s) * (2 + z.detach() - 2 * z.detach() * s)
    assert torch.allclose(grad, expected, atol=1e-12)


def test_theorem_3_extrema():
    z_star, g_star = heads.blf_extremum()
    assert 2.0 < z_star < SQRT5 + 1.0
    assert 1.0 < g_star < (SQRT5 + 1.0) / 2.0
    assert g_star == pytest.approx(z_star / 2.0, abs=1e-9)  # g(z*) = z*/2 at the stationary point
    # It is the global maximum: no grid point exceeds it, and the minimum mirrors it.
    grid = torch.linspace(-30, 30, 600001, dtype=torch.float64)
    values = heads.blf(grid)
    assert float(values.max()) <= g_star + 1e-12
    assert float(grid[values.argmax()]) == pytest.approx(z_star, abs=1e-3)
    assert float(values.min()) == pytest.approx(-g_star, abs=1e-9)
    assert float(grid[values.argmin()]) == pytest.approx(-z_star, abs=1e-3)
    zt = torch.tensor(z_star, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(heads.blf(zt), zt)
    assert abs(float(slope)) < 1e-9


def test_single_wave_matches_appendix_d_and_has_finite_gradients():
    z = torch.linspace(-5, 5, 101, dtype=torch.float64)
    expected = torch.sin(z) / (torch.exp(z) + torch.exp(-z)) ** 2
    assert torch.allclose(heads.single_wave(z), expected, atol=1e-12)
    far = torch.tensor([-200.0, 200.0], requires_grad=True)
    (grad,) = torch.autograd.grad(heads.single_wave(far).sum(), far)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize(
    "name, function",
    [("tanh", torch.tanh), ("sigmoid", torch.sigmoid), ("blf", heads.blf), ("sine", torch.sin), ("single_wave", heads.single_wave)],
)
def test_bounded_heads_scale_by_gamma(name, function):
    head = heads.build(option("head", name, gamma=2.5))
    z = torch.randn(4, 10)
    assert torch.allclose(head(z), 2.5 * function(z))
    assert head.describe() == {"head": name, "gamma": 2.5}


def test_identity_head_passes_prelogits_through():
    head = heads.build(option("head", "identity"))
    z = torch.randn(3, 10)
    assert torch.equal(head(z), z)
    assert head.describe() == {"head": "identity", "gamma": None}


def test_learnable_blf_starts_at_softplus_minus_one_and_learns_gamma():
    head = heads.build(option("head", "lblf", gamma_tilde_init=-1.0))
    assert head.scale() == pytest.approx(math.log1p(math.exp(-1.0)))
    z = torch.full((2, 10), 2.4)
    out = head(z)
    assert torch.allclose(out, head.gamma * heads.blf(z))
    out.sum().backward()
    assert head.gamma_tilde.grad is not None and float(head.gamma_tilde.grad) != 0.0


@pytest.mark.parametrize("gamma", [0.0, -1.0, float("nan"), "x"])
def test_gamma_must_be_positive(gamma):
    with pytest.raises(ConfigError, match="head.gamma"):
        heads.build(option("head", "blf", gamma=gamma))


def test_a_head_class_that_is_not_one_is_refused():
    allowed = "allowed: a subclass of blf.nn.heads.Head, as module.Class"
    with pytest.raises(ConfigError, match=f"head._target_='blf.nn.heads.ReLU' cannot be imported; {allowed}"):
        heads.build(option("head", "blf", _target_="blf.nn.heads.ReLU"))
    with pytest.raises(ConfigError, match=f"head._target_='torch.nn.ReLU' is not a Head; {allowed}"):
        heads.build(option("head", "blf", _target_="torch.nn.ReLU"))
    with pytest.raises(ConfigError, match=r"head: Identity cannot take \['gamma'\].*allowed: no keys"):
        heads.build(option("head", "blf", _target_="blf.nn.heads.Identity", name="identity"))
    with pytest.raises(ConfigError, match="head._target_='blf.nn.heads.Tanh' is the class of 'tanh', not of head.name='blf'"):
        heads.build(option("head", "blf", _target_="blf.nn.heads.Tanh"))
