"""ResNet-18 for CIFAR-10 (He et al. 2016), the variant of kuangliu/pytorch-cifar the paper
builds on (appendix B): 3x3 stem with stride 1 and no max-pool, BasicBlocks [2, 2, 2, 2] of
widths 64-128-256-512, 4x4 average pool, linear 512 -> 10. PyTorch's default initialisation.

`width` and `blocks` shrink it for tests; the defaults are the paper's network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blf.nn.input_gradient import ImageConv2d


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    image_size = (32, 32)

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 64, blocks=(2, 2, 2, 2)):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = ImageConv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, c_in = [], width
        for i, (c_out, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            for j in range(n):
                layers.append(BasicBlock(c_in, c_out, stride if j == 0 else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(widths[-1], num_classes)

    @classmethod
    def from_config(cls, cfg, image_shape, num_classes: int) -> ResNet18:
        return cls(image_shape[0], num_classes, width=cfg.width, blocks=tuple(cfg.blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # = the 4x4 average pool on 32x32 inputs
        return self.linear(out)
