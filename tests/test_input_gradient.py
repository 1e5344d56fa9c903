"""The fast input gradient of the image-reading convolution equals PyTorch's."""

import pytest
import torch
from torch import nn

from blf.nn.input_gradient import ImageConv2d, fast_input_gradients


@pytest.mark.parametrize("c_in, c_out, kernel, padding, channels_last", [
    (1, 10, 5, 0, False), (1, 32, 3, 0, True), (3, 64, 3, 1, True), (3, 16, 3, 1, False), (2, 4, (3, 5), (1, 2), False),
])
def test_gradients_match_pytorch(c_in, c_out, kernel, padding, channels_last):
    torch.manual_seed(0)
    fast = ImageConv2d(c_in, c_out, kernel, padding=padding).double()
    reference = nn.Conv2d(c_in, c_out, kernel, padding=padding).double()
    reference.load_state_dict(fast.state_dict())
    x = torch.rand(4, c_in, 12, 11, dtype=torch.float64)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    grads = []
    for module, enabled in ((fast, True), (reference, False)):
        xi = x.clone().requires_grad_(True)
        with fast_input_gradients(enabled):
            out = module(xi)
        weights = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
        (out * weights).sum().backward()
        grads.append((out.detach(), xi.grad, module.weight.grad, module.bias.grad))
    for mine, theirs in zip(*grads):
        assert torch.allclose(mine, theirs, atol=1e-10)


def test_fast_path_is_taken_only_when_asked():
    conv = ImageConv2d(1, 2, 3)
    x = torch.rand(2, 1, 6, 6, requires_grad=True)
    assert conv(x).grad_fn.name() != "_ImageConvBackward"
    with fast_input_gradients():
        assert "ImageConv" in conv(x).grad_fn.name()
        assert conv(x.detach()).grad_fn is None or "ImageConv" not in conv(x.detach()).grad_fn.name()


def test_weight_gradients_without_input_gradients():
    torch.manual_seed(0)
    fast, reference = ImageConv2d(1, 3, 3), nn.Conv2d(1, 3, 3)
    reference.load_state_dict(fast.state_dict())
    x = torch.rand(5, 1, 8, 8)
    with fast_input_gradients():
        fast(x.requires_grad_(False)).square().sum().backward()
    reference(x).square().sum().backward()
    assert torch.allclose(fast.weight.grad, reference.weight.grad, atol=1e-5)
    assert torch.allclose(fast.bias.grad, reference.bias.grad, atol=1e-5)
