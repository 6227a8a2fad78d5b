"""Batch augmentations compared on equal terms: none, mixup, cutmix, cutout (a sweep axis).

All run batched on the training device after normalization, like crop/flip before them. Random
choices are drawn for the whole global batch from generators every worker shares, then each worker
takes its micro-batches' share, so results do not depend on the workers x accumulation split.
The label-mixing ones (mixup, cutmix) share mixup's loss.

- mixup (Zhang et al. 2018): lambda ~ Beta(alpha, alpha), images and labels mixed with one lambda.
- cutmix (Yun et al. 2019): a box of area fraction 1 - lambda, the same for every pair of the
  micro-batch, is pasted from the partner image; lambda is recomputed from the clipped box.
- cutout (DeVries & Taylor 2017): one square of side `size` per image, centered anywhere and clipped
  at the border, set to zero (after normalization: the mean colour).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from trainables.catalog import LABEL_MIXING, Augmentation
from trainables.mixup import MixedBatch, mix, sample_lambda


@dataclass(frozen=True)
class Draws:
    """The random choices of one global batch."""

    lams: list[float]  # per micro-batch
    partners: torch.Tensor | None  # (micro-batches, micro_batch) permutations
    boxes: list[tuple[int, int, int, int]]  # cutmix, per micro-batch: (y1, y2, x1, x2)
    centers: torch.Tensor | None  # cutout, per image of the global batch: (B, 2)


def cutmix_box(lam: float, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box of area about (1 - lam) H W with a uniform center, clipped at the border."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    return (max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height), max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width))


def sample_draws(
    aug: Augmentation,
    global_batch: int,
    micro_batches: int,
    micro_batch: int,
    image_size: tuple[int, int],
    generator: torch.Generator,
    rng: np.random.Generator,
) -> Draws:
    lams, partners, boxes, centers = [], None, [], None
    if aug.name in LABEL_MIXING:
        lams = [sample_lambda(aug.alpha, rng) for _ in range(micro_batches)]
        partners = torch.rand((micro_batches, micro_batch), generator=generator, device=generator.device).argsort(dim=1)
        if aug.name == "cutmix":
            boxes = [cutmix_box(lam, *image_size, rng) for lam in lams]
    elif aug.name == "cutout":
        high = torch.tensor(image_size, device=generator.device)
        centers = (torch.rand((global_batch, 2), generator=generator, device=generator.device) * high).long()
    return Draws(lams, partners, boxes, centers)


def cutmix(
    images: torch.Tensor, labels: torch.Tensor, box: tuple[int, int, int, int], partner: torch.Tensor
) -> MixedBatch:
    y1, y2, x1, x2 = box
    mixed = images.clone()
    mixed[:, :, y1:y2, x1:x2] = images[partner][:, :, y1:y2, x1:x2]
    # lambda is what is left of each image after clipping the box at the border.
    lam = 1.0 - (y2 - y1) * (x2 - x1) / (images.shape[2] * images.shape[3])
    return MixedBatch(mixed, labels, labels[partner], lam)


def cutout(images: torch.Tensor, centers: torch.Tensor, size: int) -> torch.Tensor:
    """Zero one square per image: rows [cy - size//2, cy + size//2) x the same for columns, clipped."""
    rows = torch.arange(images.shape[2], device=images.device)
    cols = torch.arange(images.shape[3], device=images.device)
    cy, cx = centers[:, 0:1].to(images.device), centers[:, 1:2].to(images.device)
    inside_rows = (rows >= cy - size // 2) & (rows < cy + size // 2)  # (B, H)
    inside_cols = (cols >= cx - size // 2) & (cols < cx + size // 2)  # (B, W)
    mask = inside_rows[:, None, :, None] & inside_cols[:, None, None, :]
    return images.masked_fill(mask, 0.0)


def apply(
    aug: Augmentation, images: torch.Tensor, labels: torch.Tensor, draws: Draws, micro_index: int, global_rows: slice
) -> MixedBatch:
    """Augment micro-batch `micro_index` of the global batch (its images are rows `global_rows` of it)."""
    if aug.name == "mixup":
        return mix(images, labels, draws.lams[micro_index], draws.partners[micro_index])
    if aug.name == "cutmix":
        return cutmix(images, labels, draws.boxes[micro_index], draws.partners[micro_index])
    if aug.name == "cutout":
        return MixedBatch(cutout(images, draws.centers[global_rows], aug.size), labels, labels, 1.0)
    return MixedBatch(images, labels, labels, 1.0)
