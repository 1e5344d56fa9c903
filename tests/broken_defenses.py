"""A zoo of defenses from the literature that are known to be broken, on MNIST, each with the
adaptive attack that breaks it (the reference: the number the audit must reach, or else say
`unreliable`). Unlike tests/audit_zoo.py, whose truths are exact by construction, these are real
trained CNNs (the paper's 2C2F, standard training) behind the defense, and their truth is the
strongest attack of the literature. Our own implementations:

- control: no defense. Reference: PGD-100 x 5 restarts.
- shattered: the input transform clip(x + a sin(w x)); its gradients exist, but w a >> 1 makes
  them noise (shattered gradients, Athalye et al. ICML 2018 sec. 4.1; input transformations sec.
  5.4). Reference: BPDA through the transform (the identity's backward, sec. 4.1.1).
- kwta: k-winners-take-all activations, the top 10% per layer, trained with them (Xiao et al. ICLR
  2020; broken by Tramer et al. NeurIPS 2020 sec. 5.3). Reference: BPDA with a soft k-WTA backward.
- resize_pad: random resizing to 20-28 pixels and random zero padding back to 28, trained with it
  (Xie et al. ICLR 2018; broken by Athalye et al. 2018 sec. 5.3.1). Reference: EOT-PGD, 16 draws.
- sawtooth: a discontinuous activation on the last hidden layer, relu(z) - a frac(w relu(z)),
  whose every piece falls (slope 1 - a w < 0) while it rises on average: a gradient that exists and
  is wrong (Athalye et al. 2018 sec. 4.1). Reference: BPDA with the ReLU's backward.
- thermometer: thermometer encoding of each pixel into 16 levels, trained on it (Buckman et al.
  ICLR 2018; broken by Athalye et al. 2018 sec. 5.2 with BPDA). Reference: BPDA with the encoding's
  linear relaxation.

The networks train once per cache folder, seeded (2 epochs of Adam; a few seconds each on a CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from blf.eval.attacks import PGD
from blf.nn.models import TwoConvTwoFC

LEVELS = 16  # thermometer levels


# --- the defenses -----------------------------------------------------------------------------

class Shattered(nn.Module):
    """clip(x + a sin(w x), 0, 1): within a of the image, with a derivative 1 + a w cos(w x)."""

    def __init__(self, a: float = 0.03, w: float = 300.0):
        super().__init__()
        self.a, self.w = a, w

    def forward(self, x):
        return (x + self.a * torch.sin(self.w * x)).clamp(0, 1)


class KWTA(nn.Module):
    """k-winners-take-all (Xiao et al. 2020): per example, the top `ratio` of the activations
    pass unchanged, the others are zero."""

    def __init__(self, ratio: float = 0.1):
        super().__init__()
        self.ratio = ratio

    def threshold(self, a: torch.Tensor) -> torch.Tensor:
        flat = a.flatten(1)
        k = max(1, int(self.ratio * flat.shape[1]))
        return flat.topk(k, dim=1).values[:, -1:].view(-1, *[1] * (a.dim() - 1))

    def forward(self, a):
        return a * (a >= self.threshold(a)).to(a.dtype)


class SoftKWTABackward(KWTA):
    """The reference's BPDA for k-WTA: k-WTA forward, the gradient of a sigmoid-gated soft k-WTA
    a * sigmoid((a - t) / T) backward."""

    def __init__(self, module: KWTA, temperature: float = 0.1):
        super().__init__(module.ratio)
        self.temperature = temperature

    def forward(self, a):
        t = self.threshold(a).detach()
        soft = a * torch.sigmoid((a - t) / (self.temperature * a.detach().flatten(1).std(1).view_as(t) + 1e-6))
        return super().forward(a).detach() + soft - soft.detach()


class ResizePad(nn.Module):
    """Random resizing to s x s, s uniform in [low, 28], then zero padding at a random offset back
    to 28 x 28 (Xie et al. 2018, scaled to MNIST). One draw per batch; bilinear, so differentiable."""

    def __init__(self, low: int = 20, size: int = 28):
        super().__init__()
        self.low, self.size = low, size

    def forward(self, x):
        s = int(torch.randint(self.low, self.size + 1, ()))
        small = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        left, top = (int(v) for v in torch.randint(0, self.size - s + 1, (2,)))
        return F.pad(small, (left, self.size - s - left, top, self.size - s - top))


class Sawtooth(nn.Module):
    """relu(z) - a frac(w relu(z)): within a of the ReLU, rising on average, but every piece falls
    (slope 1 - a w): the gradient points against the function's trend."""

    def __init__(self, a: float = 0.05, w: float = 40.0):
        super().__init__()
        self.a, self.w = a, w

    def forward(self, z):
        r = torch.relu(z)
        return r - self.a * torch.frac(self.w * r)


class ReluBackward(nn.Module):
    """The reference's BPDA for the sawtooth: its forward, the ReLU's backward."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, z):
        r = torch.relu(z)
        return self.module(z).detach() + r - r.detach()


class Thermometer(nn.Module):
    """Thermometer encoding (Buckman et al. 2018): channel k is 1 where the pixel exceeds k / L.
    Built from floor, so the graph exists and its gradient is zero."""

    def __init__(self, levels: int = LEVELS):
        super().__init__()
        self.levels = levels

    def forward(self, x):
        q = torch.floor(x.clamp(0, 1 - 1e-6) * self.levels)
        k = torch.arange(self.levels, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (q - k).clamp(0, 1)


class ThermometerRelaxed(Thermometer):
    """The reference's BPDA (Athalye et al. 2018 sec. 5.2): the encoding forward, its linear
    relaxation clip(L x - k, 0, 1) backward."""

    def forward(self, x):
        k = torch.arange(self.levels, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        soft = (self.levels * x - k).clamp(0, 1)
        return super().forward(x).detach() + soft - soft.detach()


class Straight(nn.Module):
    """BPDA with the identity's backward (Athalye et al. 2018 sec. 4.1.1)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return x + (self.module(x) - x).detach()


class Defended(nn.Module):
    """An input transform (or encoding) before a network."""

    def __init__(self, transform: nn.Module, network: nn.Module):
        super().__init__()
        self.transform, self.network = transform, network

    def forward(self, x):
        return self.network(self.transform(x))


def with_activations(network: TwoConvTwoFC, make, which: str = "all") -> TwoConvTwoFC:
    """2C2F with its ReLUs (all, or only the last hidden one) replaced by `make()`."""
    if which in ("all", "features"):
        network.features[2], network.features[5] = make(), make()
    if which in ("all", "last"):
        network.classifier[1] = make()
    return network


# --- the members ------------------------------------------------------------------------------

@dataclass
class Member:
    name: str
    model: nn.Module            # the defended model, eval mode
    reference: str              # the reference attack, in words
    randomized: bool = False

    def reference_attack(self, x, y, eps: float, seed: int = 0) -> torch.Tensor:
        """Per-example survival (1 robust, 0 broken; a share of draws when randomized) under the
        reference attack."""
        return REFERENCES[self.name](self, x, y, eps, seed)


def pgd(eps: float, steps: int = 100, restarts: int = 5) -> PGD:
    attack = PGD([eps], steps, 2.5 * eps / steps, restarts=restarts)
    attack.keep_broken = True
    return attack


def survival(model: nn.Module, x, y, draws: int = 1) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([(model(x).argmax(1) == y).float() for _ in range(draws)]).mean(0)


def attacked(member: Member, crafter: nn.Module, x, y, eps, seed, restarts: int = 5) -> torch.Tensor:
    torch.manual_seed(seed)
    points = []
    for start in range(0, len(x), 500):
        xb, yb = x[start:start + 500], y[start:start + 500]
        points.append(pgd(eps, restarts=restarts).restarted(member.model, crafter, xb, yb, yb, eps))
    return survival(member.model, torch.cat(points), y, draws=64 if member.randomized else 1)


def _control(member, x, y, eps, seed):
    return attacked(member, member.model, x, y, eps, seed)


def _shattered(member, x, y, eps, seed):
    return attacked(member, Defended(Straight(member.model.transform), member.model.network), x, y, eps, seed)


def _kwta(member, x, y, eps, seed):
    import copy

    crafter = copy.deepcopy(member.model)
    with_activations(crafter, lambda: SoftKWTABackward(KWTA(member.model.features[2].ratio)))
    return attacked(member, crafter, x, y, eps, seed)


class EOT(nn.Module):
    def __init__(self, model, draws):
        super().__init__()
        self.model, self.draws = model, draws

    def forward(self, x):
        return torch.stack([self.model(x) for _ in range(self.draws)]).mean(0)


def _resize_pad(member, x, y, eps, seed):
    return attacked(member, EOT(member.model, 16), x, y, eps, seed, restarts=1)


def _sawtooth(member, x, y, eps, seed):
    import copy

    crafter = copy.deepcopy(member.model)
    crafter.classifier[1] = ReluBackward(crafter.classifier[1])
    return attacked(member, crafter, x, y, eps, seed)


def _thermometer(member, x, y, eps, seed):
    return attacked(member, Defended(ThermometerRelaxed(LEVELS), member.model.network), x, y, eps, seed)


REFERENCES = {"control": _control, "shattered": _shattered, "kwta": _kwta, "resize_pad": _resize_pad,
              "sawtooth": _sawtooth, "thermometer": _thermometer}
DESCRIBED = {"control": "PGD-100 x 5 restarts", "shattered": "BPDA-PGD-100 x 5 (identity through the transform)",
             "kwta": "BPDA-PGD-100 x 5 (soft k-WTA backward)", "resize_pad": "EOT-PGD-100 (16 draws)",
             "sawtooth": "BPDA-PGD-100 x 5 (ReLU backward)", "thermometer": "BPDA-PGD-100 x 5 (relaxed encoding)"}
NAMES = tuple(REFERENCES)


# --- training -----------------------------------------------------------------------------------

def train(network: nn.Module, transform: nn.Module | None, images: torch.Tensor, labels: torch.Tensor, *,
          epochs: int = 2, seed: int = 0) -> nn.Module:
    """Adam, batch 128, `epochs` epochs of standard training of transform -> network, seeded."""
    torch.manual_seed(seed)
    model = network if transform is None else Defended(transform, network)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=g)
        for start in range(0, len(images), 128):
            index = order[start:start + 128]
            loss = F.cross_entropy(model(images[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return network.eval()


def networks(images: torch.Tensor, labels: torch.Tensor) -> dict[str, nn.Module]:
    """The trained networks behind the members (the sawtooth and the shattered transform are
    applied at test time to the control's network, as such defenses are)."""
    return {
        "control": train(TwoConvTwoFC(), None, images, labels),
        "kwta": train(with_activations(TwoConvTwoFC(), KWTA), None, images, labels),
        "resize_pad": train(TwoConvTwoFC(), ResizePad(), images, labels),
        "thermometer": train(TwoConvTwoFC(in_channels=LEVELS), Thermometer(), images, labels),
    }


def members(weights: dict[str, dict]) -> list[Member]:
    """The zoo from trained weights (networks' state_dicts)."""
    def load(net, key):
        net.load_state_dict(weights[key])
        return net.eval()

    import copy

    control = load(TwoConvTwoFC(), "control")
    sawtooth = copy.deepcopy(control)
    sawtooth.classifier[1] = Sawtooth()
    return [
        Member("control", control, DESCRIBED["control"]),
        Member("shattered", Defended(Shattered(), copy.deepcopy(control)).eval(), DESCRIBED["shattered"]),
        Member("kwta", load(with_activations(TwoConvTwoFC(), KWTA), "kwta"), DESCRIBED["kwta"]),
        Member("resize_pad", Defended(ResizePad(), load(TwoConvTwoFC(), "resize_pad")).eval(), DESCRIBED["resize_pad"],
               randomized=True),
        Member("sawtooth", sawtooth.eval(), DESCRIBED["sawtooth"]),
        Member("thermometer", Defended(Thermometer(), load(TwoConvTwoFC(in_channels=LEVELS), "thermometer")).eval(),
               DESCRIBED["thermometer"]),
    ]


def zoo(cache: Path, root: Path) -> tuple[list[Member], torch.Tensor, torch.Tensor]:
    """(the members, MNIST test images in [0, 1], their labels), training the networks into
    `cache` (a weights file) the first time."""
    from blf import data
    from blf.run import storage

    train_split, test_split = data.mnist(root, download=True)
    path = Path(cache) / "broken_defenses.pt"
    if path.exists():
        weights = storage.load_tensors(path)
    else:
        images = train_split.images.float() / 255
        weights = {k: v.state_dict() for k, v in networks(images, train_split.labels).items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        storage.save_checkpoint(weights, path)
    return members(weights), test_split.images.float() / 255, test_split.labels


def clean_accuracy(member: Member, x, y) -> float:
    return 100.0 * float(survival(member.model, x, y, draws=16 if member.randomized else 1).mean())


