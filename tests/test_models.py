"""The networks of appendix B.2 and the Classifier wrapper."""

import pytest
import torch
from torch import nn

from blf.errors import ConfigError
from blf.nn import heads, models
from conftest import option


def build(name, head="identity"):
    return models.build(option("model", name), heads.build(option("head", head)), (1, 28, 28), 10)


def layer_shapes(module, kind):
    return [tuple(m.weight.shape) for m in module.modules() if isinstance(m, kind)]


def test_2c2f_layers_match_appendix_b2():
    net = build("2c2f").network
    assert layer_shapes(net, nn.Conv2d) == [(10, 1, 5, 5), (20, 10, 5, 5)]
    assert layer_shapes(net, nn.Linear) == [(50, 320), (10, 50)]
    # Dropout 0.5 sits between the two fully connected layers.
    kinds = [type(m) for m in net.classifier]
    assert kinds == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert net.classifier[2].p == 0.5


def test_4c3f_layers_and_zero_initialised_last_layer():
    net = build("4c3f").network
    assert layer_shapes(net, nn.Conv2d) == [(32, 1, 3, 3), (32, 32, 3, 3), (64, 32, 3, 3), (64, 64, 3, 3)]
    assert layer_shapes(net, nn.Linear) == [(200, 1024), (200, 200), (10, 200)]
    last = net.classifier[-1]
    assert torch.count_nonzero(last.weight) == 0 and torch.count_nonzero(last.bias) == 0
    assert isinstance(net.classifier[2], nn.Dropout) and net.classifier[2].p == 0.5
    assert torch.count_nonzero(net.classifier[0].weight) > 0  # the others keep PyTorch's init


@pytest.mark.parametrize("name", ["2c2f", "4c3f"])
def test_forward_exposes_prelogits_and_logits(name):
    classifier = build(name, head="blf").eval()
    x = torch.rand(5, 1, 28, 28)
    z, logits = classifier.prelogits_and_logits(x)
    assert z.shape == logits.shape == (5, 10)
    assert torch.allclose(logits, heads.blf(z))
    assert torch.allclose(classifier(x), logits)


def test_with_head_shares_the_network():
    classifier = build("2c2f", head="blf").eval()
    swapped = classifier.with_head(heads.build(option("head", "tanh", gamma=1.0)))
    assert swapped.network is classifier.network
    x = torch.rand(2, 1, 28, 28)
    assert torch.allclose(swapped(x), torch.tanh(classifier.network(x)))


def test_frozen_sets_eval_and_restores():
    classifier = build("2c2f").train()
    with models.frozen(classifier):
        assert not classifier.training
        assert not any(p.requires_grad for p in classifier.parameters())
    assert classifier.training
    assert all(p.requires_grad for p in classifier.parameters())


def test_a_model_class_that_is_not_one_is_refused():
    with pytest.raises(ConfigError, match="model._target_='blf.nn.models.VGG' cannot be imported; allowed: a subclass of torch.nn"):
        models.build(option("model", "2c2f", _target_="blf.nn.models.VGG"), heads.Identity(), (1, 28, 28), 10)
    with pytest.raises(ConfigError, match="is the class of '4c3f', not of model.name='2c2f'; allowed: a class named '2c2f', or "
                                          "model.name='4c3f'"):
        models.build(option("model", "2c2f", _target_="blf.nn.models.FourConvThreeFC"), heads.Identity(), (1, 28, 28), 10)


def test_toy_widths_stay_nchw_and_real_ones_go_channels_last():
    """A ResNet-18 of width 4 in channels_last crashed torch 2.14.1's CPU backward on an AVX2 machine:
    networks with a convolution narrower than 8 channels stay NCHW."""
    from blf import assembly
    from conftest import compose_config

    def layout(width):
        cfg = compose_config(overrides=["dataset=cifar10", "model=resnet18", f"model.width={width}", "model.blocks=[1,1,1,1]"])
        classifier = assembly.build_classifier(cfg, (3, 32, 32), 10)
        weight = next(m.weight for m in classifier.modules() if isinstance(m, torch.nn.Conv2d))
        return weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()

    assert not layout(4)
    assert layout(8)


def test_auto_spreads_a_multiruns_jobs_over_the_visible_gpus(monkeypatch):
    """Faked: four visible GPUs. A joblib sweep's job k takes GPU k mod 4; a single run, or a machine
    with one GPU, takes the default CUDA device; no CUDA: the CPU."""
    from blf import assembly

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [str(assembly.device("auto", job)) for job in range(6)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3",
                                                                       "cuda:0", "cuda:1"]
    assert str(assembly.device("auto")) == "cuda" and str(assembly.device("cuda:2", 1)) == "cuda:2"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert str(assembly.device("auto", 3)) == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert str(assembly.device("auto", 3)) == "cpu"
    assert assembly.multirun_job() is None  # no Hydra multirun here
