"""L-infinity operator norms of the layers (section 5.4, Table 3; Gouk et al. 2018).

A convolution with weight W[out, in, kh, kw] acts on an image as a linear map whose
L-infinity operator norm is the largest absolute row sum: max over `out` of the sum over
(in, kh, kw) of |W|. For a linear layer W[out, in] it is max over `out` of sum over `in` of
|W|. The paper reports the mean over the convolutions of RN18; we record every layer.
"""

from __future__ import annotations

import torch
from torch import nn

from blf.run.records import Kind


def linf_operator_norm(weight: torch.Tensor) -> float:
    return float(weight.detach().abs().flatten(1).sum(dim=1).max())


def layer_norms(model: nn.Module) -> list[dict]:
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            kind = "conv" if isinstance(module, nn.Conv2d) else "linear"
            rows.append({"kind": Kind.OPERATOR_NORM, "layer": name, "layer_type": kind, "operator_norm": linf_operator_norm(module.weight)})
    return rows


def summary(rows: list[dict]) -> dict:
    """Mean norm over convolutions (Table 3) and over linear layers."""
    def mean(kind):
        values = [r["operator_norm"] for r in rows if r["layer_type"] == kind]
        return sum(values) / len(values) if values else None

    return {"kind": Kind.OPERATOR_NORM_SUMMARY, "mean_conv": mean("conv"), "mean_linear": mean("linear"),
            "n_conv": sum(r["layer_type"] == "conv" for r in rows), "n_linear": sum(r["layer_type"] == "linear" for r in rows)}
