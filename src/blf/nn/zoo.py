"""Any torchvision or timm classifier as the network under a head (`model=torchvision` and
`model=timm`, with `model.arch=<name>`).

The library's classifier is built for the dataset's classes (its last layer outputs the
pre-logits z the head bounds) and, for images of at most SMALL_IMAGE pixels a side (MNIST,
CIFAR-10), gets the small-image stem CIFAR networks use (kuangliu/pytorch-cifar, the paper's
ResNet-18): its first convolution becomes 3x3 with stride 1 and the max-pool right after it is
dropped, so a 32x32 image is not cut to 8x8 before the first block. A first layer that is a
patch embedding (kernel = stride, as in ViT or ConvNeXt) keeps its geometry: give those models
their size through `model.kwargs` (timm: `img_size=32`, `patch_size=4`). A first convolution
that reads another number of channels than the dataset has (MNIST's 1) is replaced by one that
reads the dataset's.

Weights start from the library's own initialisation; `model.kwargs` goes to the library's
builder as it is (e.g. timm's `drop_rate`, or `pretrained=true` where weights can be
downloaded; ImageNet weights expect normalised inputs, and images here stay in [0, 1]).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn

from blf import config as C
from blf.nn.input_gradient import ImageConv2d

SMALL_IMAGE = 64  # `small_stem: auto` adapts the stem for images up to this side


def _first_convolution(network: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, module in network.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise C.ConfigError(f"{type(network).__name__} has no convolution to read the images; allowed: "
                        "a convolutional network, or small_stem=false with the dataset's channel count")


def _set(network: nn.Module, dotted: str, module: nn.Module) -> None:
    parent, _, leaf = dotted.rpartition(".")
    setattr(network.get_submodule(parent) if parent else network, leaf, module)


def adapt_stem(network: nn.Module, in_channels: int, small: bool) -> nn.Module:
    """Give `network` a first convolution that reads `in_channels` channels and, if `small`, the
    small-image stem (module docstring). Returns the network, changed in place."""
    name, first = _first_convolution(network)
    patch_embedding = first.kernel_size == first.stride and first.stride[0] > 1
    small = small and not patch_embedding and (first.stride[0] > 1 or first.kernel_size[0] > 3)
    if not small and first.in_channels == in_channels:
        return network
    if small:
        geometry = {"kernel_size": 3, "stride": 1, "padding": 1}
        # The stem's max-pool goes: the first one after the first convolution, unless a strided
        # convolution comes before it (then the network has no stem pool). Deep stems (timm's
        # `resnet*d`: three 3x3 convolutions, then the pool) lose theirs too.
        after = False
        for other, module in network.named_modules():
            if other == name:
                after = True
            elif after and isinstance(module, nn.Conv2d) and module.stride[0] > 1:
                break
            elif after and isinstance(module, nn.MaxPool2d):
                _set(network, other, nn.Identity())
                break
    else:
        geometry = {"kernel_size": first.kernel_size, "stride": first.stride, "padding": first.padding}
    _set(network, name, ImageConv2d(in_channels, first.out_channels, bias=first.bias is not None, **geometry))
    return network


@dataclass(frozen=True)
class Library:
    """Where a library's classifiers come from: its name, the call that lists them (for errors),
    the list itself, and the builder (arch, in_channels, num_classes, kwargs) -> module."""

    name: str
    listing: str
    models: Callable[[], list[str]]
    create: Callable[[str, int, int, dict], nn.Module]


def _torchvision_models() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _torchvision_create(arch: str, in_channels: int, num_classes: int, kwargs: dict) -> nn.Module:
    import torchvision

    # torchvision's models read 3 channels; adapt_stem rebuilds the first convolution for others.
    return torchvision.models.get_model(arch, num_classes=num_classes, **kwargs)


def _timm_models() -> list[str]:
    import timm

    return timm.list_models()


def _timm_create(arch: str, in_channels: int, num_classes: int, kwargs: dict) -> nn.Module:
    import timm

    return timm.create_model(arch, num_classes=num_classes, in_chans=in_channels, **kwargs)


TORCHVISION = Library("torchvision", "torchvision.models.list_models(module=torchvision.models)", _torchvision_models,
                      _torchvision_create)
TIMM = Library("timm", "timm.list_models()", _timm_models, _timm_create)


class ZooNetwork(nn.Module):
    """A library's classifier as a network: images in [0, 1] -> pre-logits (num_classes)."""

    library: Library  # per subclass
    image_size = None  # any: the library's models adapt to the images (adaptive pooling)

    def __init__(self, arch: str, in_channels: int = 3, num_classes: int = 10, small_stem: bool = True,
                 kwargs: Mapping | None = None):
        super().__init__()
        library = self.library
        known = library.models()
        if arch not in known:
            near = ", ".join(difflib.get_close_matches(str(arch), known, n=5)) or "none"
            raise C.ConfigError(f"model.arch={arch!r} is not a {library.name} classification model; allowed: one of the "
                                f"{len(known)} names {library.listing} lists (closest: {near})")
        self.arch = arch
        try:
            network = library.create(arch, in_channels, num_classes, dict(kwargs or {}))
        except (TypeError, ValueError, RuntimeError) as error:
            raise C.ConfigError(f"model.kwargs={dict(kwargs or {})!r}: {library.name} cannot build {arch} with them "
                                f"({str(error).splitlines()[0][:200]}); allowed: keyword arguments of its builder") from None
        self.network = adapt_stem(network, in_channels, small_stem)

    @classmethod
    def from_config(cls, cfg: DictConfig, image_shape, num_classes: int) -> ZooNetwork:
        small = cfg.small_stem
        if small == "auto":
            small = max(image_shape[1:]) <= SMALL_IMAGE
        elif not isinstance(small, bool):
            raise C.ConfigError(f"model.small_stem={small!r} is not an option; allowed: auto, true, false")
        return cls(cfg.arch, image_shape[0], num_classes, small, cfg.kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


class Torchvision(ZooNetwork):
    """Any classification model of torchvision.models (`torchvision.models.list_models`)."""

    name = "torchvision"
    library = TORCHVISION


class Timm(ZooNetwork):
    """Any model of timm (`timm.list_models()`), built with the dataset's channels and classes."""

    name = "timm"
    library = TIMM
