"""Input loss surfaces (appendix E, Table 5, Figs. 8-16).

For k data points x and two random sign vectors v1, v2 (entries in {-1, +1}, drawn once by a
seed, so every model sees the same points and directions), the cross-entropy
L_CE(x + e1 v1 + e2 v2) over a grid of (e1, e2) from -radius to +radius. The paper uses eight
CIFAR-10 training points, radius 16/255 and steps of 0.5/255; Table 5 reports the mean over
points of max - min loss. Inputs are not clipped to [0, 1] (the paper's formula has no clip;
`clip=true` clips).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from blf.data import Split
from blf.nn.models import Classifier, frozen
from blf.run.records import Kind


def directions(shape, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    v = torch.randint(0, 2, (2, *shape), generator=generator).float().mul_(2).sub_(1)
    return v[0], v[1]


def grid(radius: float, step: float) -> torch.Tensor:
    n = int(round(radius / step))
    return torch.arange(-n, n + 1, dtype=torch.float64) * step


@torch.no_grad()
def surface(classifier: Classifier, x: torch.Tensor, y: torch.Tensor, v1, v2, axis: torch.Tensor,
            clip: bool, batch_size: int) -> torch.Tensor:
    """Loss on the (e1, e2) grid for one example: a (len(axis), len(axis)) tensor, rows = e1."""
    e1, e2 = torch.meshgrid(axis, axis, indexing="ij")
    e1, e2 = e1.flatten().float(), e2.flatten().float()
    losses = []
    for start in range(0, e1.numel(), batch_size):
        a = e1[start : start + batch_size].to(x.device).view(-1, 1, 1, 1)
        b = e2[start : start + batch_size].to(x.device).view(-1, 1, 1, 1)
        inputs = x.unsqueeze(0) + a * v1 + b * v2
        if clip:
            inputs = inputs.clamp(0.0, 1.0)
        logits = classifier(inputs)
        losses.append(F.cross_entropy(logits, y.expand(len(inputs)), reduction="none"))
    return torch.cat(losses).view(len(axis), len(axis)).cpu()


def compute(classifier: Classifier, split: Split, *, points: int, radius: float, step: float, seed: int,
            clip: bool, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[dict]]:
    """(axis, chosen indices, surfaces [points, G, G], one row per point with max - min)."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(split), generator=generator)[:points].sort().values
    chosen = split.take(index.to(split.labels.device))
    v1, v2 = (v.to(device) for v in directions(split.images.shape[1:], seed + 1))
    axis = grid(radius, step)
    surfaces, rows = [], []
    with frozen(classifier):
        for i, (x, y) in enumerate(chosen.batches(1, device)):
            s = surface(classifier, x[0], y, v1, v2, axis, clip, batch_size)
            surfaces.append(s)
            rows.append({"kind": Kind.LOSS_SURFACE, "point": i, "example": int(index[i]), "label": int(y),
                         "loss_at_x": float(s[len(axis) // 2, len(axis) // 2]),
                         "max_minus_min": float(s.max() - s.min()),
                         "radius": radius, "step": step, "surface_seed": seed, "clip": clip})
    return axis, index, torch.stack(surfaces), rows
