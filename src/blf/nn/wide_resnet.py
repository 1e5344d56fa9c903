"""WideResNet-34-10 as in the TRADES code (Zhang et al. 2019), which the paper uses (appendix B):
pre-activation BasicBlocks, 5 per stage, widths 16 -> 160 -> 320 -> 640, dropout 0, 8x8
average pool, linear 640 -> 10.

Initialisation: the paper states PyTorch's default initialisation (`init=pytorch`, the default);
the TRADES code itself uses He-normal convolutions, unit batch-norm scales and zero linear
biases (`init=trades`). `depth` and `widen_factor` shrink it for tests.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from blf import config as C
from blf.nn.input_gradient import ImageConv2d


class PreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.equal = c_in == c_out
        self.shortcut = None if self.equal else nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(pre)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        # TRADES: the identity shortcut adds x; a projection shortcut takes the activated input.
        return out + (x if self.equal else self.shortcut(pre))


class WideResNet(nn.Module):
    image_size = (32, 32)

    def __init__(self, in_channels: int = 3, num_classes: int = 10, depth: int = 34, widen_factor: int = 10,
                 dropout: float = 0.0, init: str = "pytorch"):
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise C.ConfigError(f"model.depth={depth} is not a WideResNet depth; allowed: 6n + 4 with n >= 1 (10, 16, ..., 34)")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = ImageConv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        blocks, c_in = [], widths[0]
        for stage, c_out in enumerate(widths[1:]):
            for j in range(n):
                blocks.append(PreActBlock(c_in, c_out, (1 if stage == 0 else 2) if j == 0 else 1, dropout))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.fc = nn.Linear(c_in, num_classes)
        if C.choice("model.init", init, ("pytorch", "trades")) == "trades":
            self._trades_init()

    def _trades_init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    @classmethod
    def from_config(cls, cfg, image_shape, num_classes: int) -> WideResNet:
        return cls(image_shape[0], num_classes, depth=cfg.depth, widen_factor=cfg.widen_factor, dropout=cfg.dropout,
                   init=cfg.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.conv1(x))
        out = F.relu(self.bn(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))  # = the 8x8 average pool
