"""A faster input gradient for the convolution that reads the image, for attacks on the CPU.

Attacks differentiate the loss with respect to the image. On the CPU, oneDNN computes the
input gradient of a convolution with few input channels (MNIST's 1, CIFAR's 3) slowly: for
2C2F's first layer it takes ~7x as long as the forward pass and half of a PGD step. The same
gradient (a transposed convolution) is computed here as one matrix product followed by
kernel-size many shifted additions, ~3x faster.

The fast path is taken only inside `fast_input_gradients()` (our attacks enter it), only on
the CPU in float32, and only for stride 1, dilation 1, one group and zero padding; otherwise, and for the
weight and bias gradients, PyTorch's own kernels run. Results equal PyTorch's up to float
rounding (tests compare them).
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

_ENABLED = contextvars.ContextVar("fast_input_gradients", default=False)


@contextmanager
def fast_input_gradients(enabled: bool = True):
    token = _ENABLED.set(enabled)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def conv2d_input_grad(grad_out: torch.Tensor, weight: torch.Tensor, input_shape, padding: tuple[int, int]) -> torch.Tensor:
    """d(conv2d(x, weight, padding))/dx applied to grad_out, for stride 1 and one group."""
    n, c_out, h_out, w_out = grad_out.shape
    _, c_in, k_h, k_w = weight.shape
    taps = weight.reshape(c_out, c_in * k_h * k_w).t()
    # cols[(c_in, i, j), n, p] = sum_o weight[o, c_in, i, j] * grad_out[n, o, p], as one large
    # matrix product (a batch of small ones is several times slower on the CPU).
    if grad_out.is_contiguous(memory_format=torch.channels_last):
        flat = grad_out.permute(1, 0, 2, 3).reshape(c_out, n * h_out * w_out)
        cols = (taps @ flat).view(c_in, k_h, k_w, n, h_out, w_out).permute(3, 0, 1, 2, 4, 5)
    else:
        cols = torch.matmul(taps, grad_out.reshape(n, c_out, h_out * w_out)).view(n, c_in, k_h, k_w, h_out, w_out)
    p_h, p_w = padding
    grad = grad_out.new_zeros(n, c_in, input_shape[2] + 2 * p_h, input_shape[3] + 2 * p_w)
    for i in range(k_h):
        for j in range(k_w):
            grad[:, :, i : i + h_out, j : j + w_out] += cols[:, :, i, j]
    return grad[:, :, p_h : p_h + input_shape[2], p_w : p_w + input_shape[3]]


class _ImageConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = conv2d_input_grad(grad_out, weight, x.shape, ctx.padding).to(memory_format=torch.contiguous_format)
        if ctx.needs_input_grad[1] or (ctx.has_bias and ctx.needs_input_grad[2]):
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad_out, x, weight, [weight.shape[0]] if ctx.has_bias else None,
                [1, 1], list(ctx.padding), [1, 1], False, [0, 0], 1,
                [False, ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]],
            )
        return grad_x, grad_w, grad_b, None


class ImageConv2d(nn.Conv2d):
    """nn.Conv2d for the first layer of a network; identical unless an attack asks for the
    image's gradient on the CPU (see the module docstring)."""

    def _fast(self, x: torch.Tensor) -> bool:
        return (
            _ENABLED.get()
            and x.requires_grad
            and x.device.type == "cpu"
            and not torch.is_autocast_enabled("cpu")  # its kernels are float32
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.groups == 1
            and self.padding_mode == "zeros"
            and isinstance(self.padding, tuple)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast(x):
            return _ImageConv.apply(x, self.weight, self.bias, self.padding)
        return super().forward(x)
