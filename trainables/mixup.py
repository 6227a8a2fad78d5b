"""Mixup (Zhang et al. 2018): convex combinations of image pairs and of their labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class MixedBatch:
    images: torch.Tensor
    labels_a: torch.Tensor
    labels_b: torch.Tensor
    lam: float  # weight of labels_a


def sample_lambda(alpha: float, rng: np.random.Generator) -> float:
    """lambda ~ Beta(alpha, alpha); alpha = 0 means no mixup (lambda = 1)."""
    return float(rng.beta(alpha, alpha)) if alpha > 0 else 1.0


def mix(images: torch.Tensor, labels: torch.Tensor, lam: float, partner: torch.Tensor) -> MixedBatch:
    """Mix each image with images[partner] using the same lambda as the labels; lam = 1 is the identity."""
    if lam >= 1.0:
        return MixedBatch(images, labels, labels, 1.0)
    mixed = images * lam + images[partner] * (1.0 - lam)
    return MixedBatch(mixed, labels, labels[partner], lam)


def mixed_cross_entropy(logits: torch.Tensor, batch: MixedBatch, label_smoothing: float = 0.0) -> torch.Tensor:
    """lam * CE(y_a) + (1 - lam) * CE(y_b): equal to CE against the mixed one-hot target (each target
    smoothed by `label_smoothing` first, so the mixed target is smoothed too)."""
    loss = F.cross_entropy(logits, batch.labels_a, label_smoothing=label_smoothing)
    if batch.lam >= 1.0:
        return loss
    other = F.cross_entropy(logits, batch.labels_b, label_smoothing=label_smoothing)
    return batch.lam * loss + (1.0 - batch.lam) * other
