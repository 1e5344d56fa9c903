"""Networks of the paper (appendix B.2) and the Classifier that puts a head on top of them.

A network here maps images to pre-logits z; the head (heads.py) turns z into logits.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from omegaconf import DictConfig
from torch import nn

from blf import config as C
from blf.nn.heads import Head
from blf.nn.input_gradient import ImageConv2d
from blf.nn.resnet import ResNet18
from blf.nn.wide_resnet import WideResNet


class TwoConvTwoFC(nn.Module):
    """2C2F: conv5x5(10) -> maxpool2 -> ReLU -> conv5x5(20) -> maxpool2 -> ReLU -> FC 320x50 ->
    ReLU -> dropout 0.5 -> FC 50x10. PyTorch's default initialisation."""

    image_size = (28, 28)

    def __init__(self, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            ImageConv2d(in_channels, 10, kernel_size=5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(10, 20, kernel_size=5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(320, 50),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(50, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class FourConvThreeFC(nn.Module):
    """4C3F (the TRADES MNIST CNN): conv3x3(32) x2 -> maxpool2 -> conv3x3(64) x2 -> maxpool2 ->
    FC 1024x200 -> ReLU -> dropout 0.5 -> FC 200x200 -> ReLU -> FC 200x10.

    PyTorch's default initialisation except the last layer, whose weight and bias start at zero
    (appendix B.2).
    """

    image_size = (28, 28)

    def __init__(self, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            ImageConv2d(in_channels, 32, kernel_size=3),
            nn.ReLU(),
            nn.Conv2d(32, 32, kernel_size=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        last = nn.Linear(200, num_classes)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.classifier = nn.Sequential(
            nn.Linear(64 * 4 * 4, 200),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(200, 200),
            nn.ReLU(),
            last,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class Classifier(nn.Module):
    """network(x) = z (pre-logits), head(z) = logits; softmax(logits) is the prediction.

    `forward` returns logits, so attack libraries can call the classifier directly;
    `prelogits_and_logits` exposes both, for the norms of Fig. 1.
    """

    def __init__(self, network: nn.Module, head: Head):
        super().__init__()
        self.network = network
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.network(x))

    def prelogits_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.network(x)
        return z, self.head(z)

    def with_head(self, head: Head) -> Classifier:
        """The same network (shared parameters) under another head (section 5.2, Fig. 5)."""
        return Classifier(self.network, head)


def with_head(model: nn.Module, head: nn.Module) -> Classifier:
    """`head` on the outputs of any classifier: `model`'s outputs become the pre-logits z and
    `head(z)` the logits (e.g. `with_head(torchvision.models.resnet18(num_classes=10), BLF(1.0))`).
    A Classifier of this package keeps its network (shared parameters) and gets `head` in place
    of its own."""
    if isinstance(model, Classifier):
        return model.with_head(head)
    return Classifier(model, head)


# This package's networks by option name (build's wrong-image-size error lists those that fit).
NETWORKS = {
    "2c2f": TwoConvTwoFC,
    "4c3f": FourConvThreeFC,
    "resnet18": ResNet18,
    "wrn34_10": WideResNet,
}
for _option, _network in NETWORKS.items():
    # The option's name on the class: records say it, and config.target checks a config's
    # `model.name` against the class its `_target_` names.
    _network.name = _option


def build(cfg: DictConfig, head: Head, image_shape, num_classes: int) -> Classifier:
    """The network `cfg._target_` names (conf/model/<option>.yaml) for images of `image_shape`
    (C, H, W), under `head`."""
    kind = C.target("model", cfg, nn.Module)
    size = getattr(kind, "image_size", None)
    if size is not None and tuple(image_shape[1:]) != size:
        fitting = ", ".join(n for n, k in NETWORKS.items() if k.image_size == tuple(image_shape[1:]))
        raise C.ConfigError(
            f"model={cfg.name} takes {size[0]}x{size[1]} images, the dataset has "
            f"{image_shape[1]}x{image_shape[2]}; allowed models for it: {fitting}"
        )
    if hasattr(kind, "from_config"):
        network = kind.from_config(cfg, tuple(image_shape), num_classes)
    else:
        network = kind(in_channels=image_shape[0], num_classes=num_classes)
    return Classifier(network, head)


@contextmanager
def frozen(model: nn.Module):
    """Eval mode and no parameter gradients: how attacks see the model.

    Eval mode matters (dropout off, batch-norm statistics fixed); dropping parameter
    gradients saves the weight-gradient half of each backward pass. Both are restored. A program
    of torch.export (what blf.audit may be given) refuses `eval()`: it was exported in eval mode
    and is left as it is.
    """
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    try:
        model.eval()
    except NotImplementedError:
        was_training = None
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        if was_training is not None:
            model.train(was_training)
