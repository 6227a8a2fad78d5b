"""Model FLOPs per image and device peaks, for model FLOP utilization (MFU)."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Dense bf16 tensor-core peaks in FLOP/s (vendor data sheets), matched by substring of the CUDA device
# name, most specific first. Unknown devices (and CPUs) have no MFU.
PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
    ("L4", 121e12),
    ("A10G", 70e12),
]


def forward_flops_per_image(model: nn.Module, image_size: int = 32) -> float:
    """FLOPs (2 x multiply-adds) of one image's forward pass in eval mode, counted by torch's
    FlopCounterMode (convolutions and matrix products, as MFU conventions count them)."""
    model = copy.deepcopy(model).eval()  # a copy: counting must not touch the trial's model
    device = next(model.parameters()).device
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size, device=device))
    return float(counter.get_total_flops())


def train_flops_per_image(model: nn.Module, image_size: int = 32) -> float:
    """FLOPs of one image's forward and backward pass in train mode, counted exactly: about 3x the
    forward (the first layer computes no input gradient). The numerator of MFU."""
    model = copy.deepcopy(model).train()  # the trial's BatchNorm statistics and gradients stay untouched
    device = next(model.parameters()).device
    images = torch.zeros(2, 3, image_size, image_size, device=device)  # BatchNorm needs 2 in train mode
    with FlopCounterMode(display=False) as counter:
        model(images).sum().backward()
    return counter.get_total_flops() / len(images)


def peak_flops(device_name: str) -> float | None:
    for key, peak in PEAK_BF16_FLOPS:
        if key in device_name:
            return peak
    return None


def mfu(images_per_s: float, train_flops: float, peak: float | None) -> float | None:
    """Model FLOP utilization of training: achieved FLOP/s (`train_flops` per image) over the device's peak."""
    return images_per_s * train_flops / peak if peak else None
