"""Any torchvision or timm classifier through the config (`model=torchvision`, `model=timm`):
built for the dataset, with the small-image stem, trained and evaluated by the apps."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from blf import load
from blf.errors import ConfigError
from blf.nn import heads, models
from blf.nn.zoo import Timm, Torchvision
from conftest import TINY, option, run_app, train

CIFAR = (3, 32, 32)
MNIST = (1, 28, 28)
# A tiny CIFAR run: a few synthetic images, one epoch, one cheap PGD budget.
TINY_CIFAR = ["dataset=cifar10", "dataset.synthetic_train=16", "dataset.synthetic_test=8", "eval.n=8",
              "trainer.batch_size=8", "trainer.epochs=1", "attack.pgd.eps=[0.0,0.03]", "attack.pgd.nb_iter=1",
              "eval.integrity.enabled=false", "analysis=[]"]


def build(library: str, image_shape=CIFAR, **values) -> models.Classifier:
    return models.build(option("model", library, **values), heads.BLF(1.0), image_shape, 10)


def feature_sides(classifier: models.Classifier, image_shape) -> list[int]:
    """The side of every 4-D activation, in order (where the stem cuts the image)."""
    sides = []
    hooks = [m.register_forward_hook(lambda m, i, o: sides.append(o.shape[-1]) if o.dim() == 4 else None)
             for m in classifier.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d))]
    classifier.eval()(torch.rand(2, *image_shape))
    for hook in hooks:
        hook.remove()
    return sides


def test_torchvision_resnet18_gets_the_small_image_stem_on_cifar():
    classifier = build("torchvision", arch="resnet18")
    stem = classifier.network.network.conv1
    assert (stem.kernel_size, stem.stride) == ((3, 3), (1, 1))
    assert isinstance(classifier.network.network.maxpool, nn.Identity)
    assert feature_sides(classifier, CIFAR)[0] == 32 and min(feature_sides(classifier, CIFAR)) == 4  # as the paper's RN18
    assert classifier(torch.rand(2, *CIFAR)).shape == (2, 10)
    # Without it, torchvision's ImageNet stem cuts 32x32 to 8x8 before the first block.
    plain = build("torchvision", arch="resnet18", small_stem=False)
    assert plain.network.network.conv1.stride == (2, 2) and feature_sides(plain, CIFAR)[1] == 8


def test_auto_keeps_the_library_stem_for_large_images():
    large = build("torchvision", (3, 96, 96), arch="resnet18")
    assert large.network.network.conv1.stride == (2, 2)


def test_a_deep_stem_loses_its_pool_and_mnist_gets_one_channel():
    classifier = build("timm", MNIST, arch="test_resnet")
    first = classifier.network.network.conv1[0]
    assert (first.in_channels, first.stride) == (1, (1, 1))
    assert isinstance(classifier.network.network.maxpool, nn.Identity)
    assert classifier(torch.rand(2, *MNIST)).shape == (2, 10)
    # torchvision models read 3 channels; MNIST's first convolution is rebuilt for 1.
    assert build("torchvision", MNIST, arch="mobilenet_v3_small")(torch.rand(2, *MNIST)).shape == (2, 10)


def test_a_patch_embedding_keeps_its_geometry():
    classifier = build("timm", arch="test_vit", kwargs={"img_size": 32})
    proj = classifier.network.network.patch_embed.proj
    assert proj.kernel_size == proj.stride == (16, 16)
    assert classifier(torch.rand(2, *CIFAR)).shape == (2, 10)


def test_bad_architectures_and_arguments_are_refused_with_what_is_allowed():
    with pytest.raises(ConfigError, match=r"model.arch='resnet181' is not a torchvision classification model; "
                                          r"allowed: one of the \d+ names .*closest: resnet18"):
        build("torchvision", arch="resnet181")
    with pytest.raises(ConfigError, match=r"model.arch='nope' is not a timm classification model"):
        build("timm", arch="nope")
    with pytest.raises(ConfigError, match=r"model.kwargs=\{'widht': 2\}: torchvision cannot build resnet18"):
        build("torchvision", arch="resnet18", kwargs={"widht": 2})
    with pytest.raises(ConfigError, match="model.small_stem='yes' is not an option; allowed: auto, true, false"):
        build("timm", arch="test_resnet", small_stem="yes")


def test_torchvision_resnet18_trains_and_evaluates_through_train_py(tmp_path):
    run_dir = tmp_path / "run"
    result = run_app("train.py", *TINY, *TINY_CIFAR, "model=torchvision", "model.arch=resnet18", "head=blf",
                     f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    robust = [r for r in rows if r["kind"] == "robustness"]
    assert {r["eps"] for r in robust} == {0.0, 0.03}
    assert {r["model"] for r in rows} == {"torchvision:resnet18"} and {r["head"] for r in rows} == {"blf"}
    assert isinstance(load(run_dir).network, Torchvision)


def test_a_timm_model_trains_evaluates_and_loads(tmp_path):
    outcome = train(tmp_path / "run", *TINY_CIFAR, "model=timm", "model.arch=test_resnet", "head=blf",
                    "analysis=[operator_norm]")
    kinds = {r["kind"] for r in outcome.rows}
    assert {"robustness", "worst_case", "operator_norm_summary"} <= kinds
    assert outcome.progress.epoch == 1
    model = load(outcome.run_dir)
    assert isinstance(model.network, Timm) and model.network.arch == "test_resnet"
