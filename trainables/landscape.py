"""Loss landscapes (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets").

- 1-D interpolation between two solutions over every floating-point state entry, BatchNorm
  running statistics included (Li et al.'s `states` mode).
- Filter-normalized random directions: each filter of a Gaussian direction is rescaled to the norm
  of the same filter of the weights; biases and BatchNorm parameters are zero in the direction
  (Li et al.'s `biasbn` mode). 1-D slices theta + a d and 2-D surfaces theta + a d1 + b d2.
Every point is evaluated in eval mode, without augmentation.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from trainables.data import Normalizer, Split
from trainables.loop import Runtime, evaluate

State = dict[str, torch.Tensor]


def interpolate(state_a: State, state_b: State, alpha: float) -> State:
    """(1 - alpha) theta_A + alpha theta_B for floating-point entries; integer entries (counters) from A."""
    return {k: torch.lerp(a, state_b[k], alpha) if a.is_floating_point() else a.clone() for k, a in state_a.items()}


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> State:
    """A random direction over the parameters, each filter scaled to its weight filter's norm."""
    direction: State = {}
    for name, weight in model.named_parameters():
        if weight.dim() <= 1:  # biases and BatchNorm scale/shift: not perturbed
            direction[name] = torch.zeros_like(weight)
            continue
        d = torch.randn(weight.shape, generator=generator, dtype=weight.dtype, device=generator.device).to(weight.device)
        # A "filter" is one slice along the output dimension (a conv filter, or a row of a linear layer).
        d_norm = d.flatten(1).norm(dim=1).clamp_min(1e-12)
        w_norm = weight.detach().flatten(1).norm(dim=1)
        direction[name] = d * (w_norm / d_norm).view(-1, *([1] * (weight.dim() - 1)))
    return direction


def displaced(state: State, directions: list[State], coefficients: Iterable[float]) -> State:
    """theta + sum_i c_i d_i over the entries the directions cover; other entries (BN statistics) as they are."""
    out = dict(state)
    for direction, c in zip(directions, coefficients):
        for name, d in direction.items():
            out[name] = out[name] + c * d.to(out[name].device)
    return out


def evaluate_state(model: nn.Module, state: State, split: Split, normalize: Normalizer, runtime: Runtime,
                   batch_size: int = 1024) -> tuple[float, float]:
    """(loss, accuracy) of `state` on `split`, in eval mode."""
    model.load_state_dict(state)
    return evaluate(model, split, normalize, runtime, batch_size)
