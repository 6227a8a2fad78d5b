"""Model FLOPs per image and device peaks, for model FLOP utilization (MFU)."""

from __future__ import annotations

import torch
from torch import nn

# Dense bf16 tensor-core peaks in FLOP/s (vendor data sheets), matched by substring of the CUDA device
# name, most specific first. Unknown devices (and CPUs) have no MFU.
PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L4", 121e12), ("A10G", 70e12),
]
TRAIN_FLOPS_PER_FORWARD = 3  # forward + backward (about twice the forward)


def forward_flops_per_image(model: nn.Module, image_size: int = 32) -> float:
    """FLOPs (2 x multiply-adds) of convolutions and linear layers for one image, counted by hooks."""
    total = 0.0

    def conv(module: nn.Conv2d, _: tuple, out: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += 2.0 * kernel * out.shape[1] * out.shape[2] * out.shape[3]

    def linear(module: nn.Linear, _: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += 2.0 * module.in_features * module.out_features

    hooks = [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear) for m in model.modules() if isinstance(m, nn.Linear)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return total


def peak_flops(device_name: str) -> float | None:
    for key, peak in PEAK_BF16_FLOPS:
        if key in device_name:
            return peak
    return None


def mfu(images_per_s: float, flops_per_image: float, peak: float | None) -> float | None:
    """Model FLOP utilization of training: achieved model FLOP/s over the device's peak."""
    return images_per_s * TRAIN_FLOPS_PER_FORWARD * flops_per_image / peak if peak else None
