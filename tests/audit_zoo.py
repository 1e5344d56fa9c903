"""A zoo of known-broken defenses whose true robust accuracy is known by construction.

Every model reads MNIST-sized images (1 x 28 x 28) through ten disjoint blocks of 78 pixels: the
pre-logit of class k is s * (mean of block k - c). An example of class y has its own block bright
and the others dark. Because the blocks are disjoint, an L-inf adversary moves each block's mean
independently within an interval it can compute exactly (pixels clipped to [0, 1]), so whether an
example can be broken is decided exactly, without any attack:
- identity head (and logits x 1000): broken iff the highest reachable wrong pre-logit reaches the
  lowest reachable true one;
- a bounded head g (BLF): broken iff max over reachable z_j of g(z_j) reaches min over reachable z_y
  of g(z_y) (g on each interval on a fine grid);
- input quantization: the same, with the pixels quantized (monotone, so the interval's ends are
  the quantized ends);
- a randomized input-noise defense: the optimal point is the same for every noise draw (the own
  block at its lowest, the others at their highest), so the true expected accuracy is a Gaussian
  probability, estimated by Monte Carlo with many draws;
- a trap for silent success: a wrong class wins only while the true class's block mean lies in a
  window, through a term with no gradient; cross-entropy ascends straight through the window.
"""

from __future__ import annotations

import torch
from torch import nn

from blf.nn.heads import BLF, Identity
from blf.nn.models import Classifier

CLASSES, BLOCK = 10, 78


def data(n: int, seed: int = 0, own=(0.55, 0.9), other=(0.05, 0.45), spread: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """n images with labels: each block's pixels drawn around a per-example level, the own block's
    level in `own`, the others' in `other` (uniform), pixels within +-spread of their block level."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    levels = other[0] + (other[1] - other[0]) * torch.rand(n, CLASSES, generator=g)
    levels[torch.arange(n), y] = own[0] + (own[1] - own[0]) * torch.rand(n, generator=g)
    pixels = levels[:, :, None] + spread * (2 * torch.rand(n, CLASSES, BLOCK, generator=g) - 1)
    x = torch.zeros(n, 28 * 28)
    x[:, : CLASSES * BLOCK] = pixels.clamp(0, 1).flatten(1)
    return x.view(n, 1, 28, 28), y


def block_means(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1)[:, : CLASSES * BLOCK].view(len(x), CLASSES, BLOCK).mean(2)


class Blocks(nn.Module):
    """The network: pre-logits s * (block means - c)."""

    def __init__(self, scale: float = 10.0, centre: float = 0.5):
        super().__init__()
        self.scale, self.centre = scale, centre

    def forward(self, x):
        return self.scale * (block_means(x) - self.centre)


class Times(nn.Module):
    """Logits multiplied by a constant: a saturated softmax whose cross-entropy gradient is zero."""

    def __init__(self, model: nn.Module, factor: float):
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x):
        return self.factor * self.model(x)


class Quantize(nn.Module):
    """Input quantization to `levels` grey levels (rounding: no gradient)."""

    def __init__(self, levels: int):
        super().__init__()
        self.levels = levels

    def forward(self, x):
        return torch.round(x * (self.levels - 1)) / (self.levels - 1)


class Noisy(nn.Module):
    """A randomized defense: Gaussian noise of std `sigma` on the input at every forward pass."""

    def __init__(self, model: nn.Module, sigma: float):
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x):
        return self.model(x + self.sigma * torch.randn_like(x))


class Trap(nn.Module):
    """Class y's logit is 2 m (m: its block's mean), every other class's 8 (m_k - 0.5), so
    cross-entropy rises as m falls; the class after y, (y + 1) mod 10, wins only while m lies in
    the window (low, high), through an indicator that carries no gradient. y is read from the
    brightest block (the example's class by construction, and it stays the brightest within the
    budgets used here)."""

    def __init__(self, low: float = 0.55, high: float = 0.6):
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x):
        means = block_means(x)
        y = means.detach().argmax(1)
        logits = (8.0 * (means - 0.5)).scatter(1, y[:, None], 2.0 * means.gather(1, y[:, None]))
        m = means.gather(1, y[:, None]).squeeze(1)
        inside = ((m > self.low) & (m < self.high)).float().detach()
        return logits + torch.zeros_like(logits).scatter(1, ((y + 1) % CLASSES)[:, None], (40.0 * inside)[:, None])


TRAP_DATA = {"own": (0.6, 0.8), "other": (0.05, 0.2), "spread": 0.05}  # the own block stays the brightest at eps 0.15


# Factories for `python -m blf.audit --model audit_zoo:<name>` (tests/test_audit.py).
LAST_BUILT: dict = {}


def blocks(scale: float = 10.0, centre: float = 0.5) -> Classifier:
    LAST_BUILT.clear()
    LAST_BUILT.update(scale=scale, centre=centre)
    return Classifier(Blocks(scale, centre), Identity())


def raising(**kwargs) -> nn.Module:
    raise ValueError("this factory always fails")


class ThreeDimensional(nn.Module):
    def forward(self, x):
        return x.flatten(2)


def three_dimensional() -> nn.Module:
    return ThreeDimensional()


def baseline() -> Classifier:
    return Classifier(Blocks(), Identity())


def saturated() -> nn.Module:
    return Times(Blocks(), 1000.0)


def blf_beyond_z_star(gamma: float = 1.0, scale: float = 40.0) -> Classifier:
    return Classifier(Blocks(scale=scale), BLF(gamma))


def quantized(levels: int = 16) -> nn.Module:
    return nn.Sequential(Quantize(levels), Blocks())


def noisy(sigma: float = 0.5) -> nn.Module:
    return Noisy(Blocks(), sigma)


def trap() -> nn.Module:
    return Trap()


# --- models that break the contract the audit assumes (blf.audit.contract) --------------------

class BatchStatistics(nn.Module):
    """Blocks shifted by the batch's own mean, as BatchNorm left in training mode is (and a program
    exported in training mode stays): an image's logits depend on the other images of its batch."""

    def forward(self, x):
        z = Blocks()(x)
        return z - 0.5 * z.mean(0, keepdim=True)


class NoisyOffGrid(nn.Module):
    """Deterministic on images of the 1/255 grid (every test image), Gaussian noise on the
    logits anywhere else (every perturbed point)."""

    def __init__(self, sigma: float = 2.0):
        super().__init__()
        self.sigma = sigma

    def forward(self, x):
        z = Blocks()(x)
        off = ((x * 255 - (x * 255).round()).abs() > 1e-3).flatten(1).any(1)
        return z + self.sigma * off[:, None] * torch.randn_like(z)


class NaNs(nn.Module):
    def forward(self, x):
        return Blocks()(x) * float("nan")


class Failing(nn.Module):
    """A forward pass that raises inside a submodule (a shape bug of the author's)."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10), nn.Linear(11, 10))

    def forward(self, x):
        return self.inner(x)


class Interrupted(nn.Module):
    def forward(self, x):
        raise KeyboardInterrupt


def batch_statistics() -> nn.Module:
    return BatchStatistics()


def noisy_off_grid() -> nn.Module:
    return NoisyOffGrid()


def nans() -> nn.Module:
    return NaNs()


def failing() -> nn.Module:
    return Failing()


def interrupted() -> nn.Module:
    return Interrupted()


def on_grid(x: torch.Tensor) -> torch.Tensor:
    """Images of the 1/255 grid, as every real test image is."""
    return (x * 255).round() / 255


# --- the truth -------------------------------------------------------------------------------

def reachable(x: torch.Tensor, eps: float, quantize=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The lowest and highest block means an L-inf adversary of budget eps can reach (pixels in [0, 1])."""
    low, high = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    if quantize is not None:
        low, high = quantize(low), quantize(high)
    return block_means(low), block_means(high)


def truth_monotone(x, y, eps, scale=10.0, centre=0.5, quantize=None) -> float:
    """Robust accuracy (%) of the identity head on the block pre-logits (also logits x 1000)."""
    low, high = reachable(x, eps, quantize)
    own_low = low.gather(1, y[:, None]).squeeze(1)
    others = high.scatter(1, y[:, None], float("-inf")).amax(1)
    return 100.0 * float((scale * (own_low - centre) > scale * (others - centre)).float().mean())


def _range_of(function, low: torch.Tensor, high: torch.Tensor, points: int = 4001):
    """Min and max of `function` over each [low, high] (elementwise), on a fine grid."""
    t = torch.linspace(0, 1, points, dtype=torch.float64)
    grid = low.double()[..., None] + (high - low).double()[..., None] * t
    values = function(grid)
    return values.amin(-1), values.amax(-1)


def truth_bounded(x, y, eps, function, scale=40.0, centre=0.5) -> float:
    low, high = reachable(x, eps)
    zmin, zmax = scale * (low - centre), scale * (high - centre)
    gmin, gmax = _range_of(function, zmin, zmax)
    own = gmin.gather(1, y[:, None]).squeeze(1)
    others = gmax.scatter(1, y[:, None], float("-inf")).amax(1)
    return 100.0 * float((own > others).float().mean())


def truth_noisy(x, y, eps, sigma, scale=10.0, draws: int = 20000, seed: int = 0) -> float:
    """Expected accuracy (%) at the point that is optimal for every draw (own block lowest, the
    others highest): the noise is added to the adversarial image, so each block mean gets an exact
    Gaussian of std sigma / sqrt(78); the scale does not change the argmax."""
    low, high = reachable(x, eps)
    z = high.scatter(1, y[:, None], low.gather(1, y[:, None]))
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(draws, *z.shape, generator=g) * (sigma / BLOCK ** 0.5)
    noisy_z = z[None] + noise
    return 100.0 * float((noisy_z.argmax(2) == y[None]).float().mean())


def truth_trap(x, y, eps, low_window=0.55, high_window=0.6) -> float:
    """Robust iff the own block's reachable means miss the window (the other classes never win
    outside it: 2 m >= 0.9 there against 8 (m_k - 0.5) <= -0.8)."""
    low, high = reachable(x, eps)
    own_low, own_high = low.gather(1, y[:, None]).squeeze(1), high.gather(1, y[:, None]).squeeze(1)
    window = (own_high > low_window) & (own_low < high_window)
    return 100.0 * float((~window).float().mean())
