"""The precision policy (`trainer.amp`): float32, or bfloat16 autocast for speed on GPUs.

One policy covers training, the attacks crafted during training, and evaluation, so that a
model is attacked in the precision it runs in. With bf16 the evaluation also measures clean
accuracy in float32 and checks that the two agree (integrity.precision).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from blf import config as C

POLICIES = ("fp32", "bf16")


def policy(amp) -> str:
    return C.choice("trainer.amp", "fp32" if amp in (None, False, "none") else amp, POLICIES)


def autocast(device: torch.device, amp):
    if policy(amp) == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
