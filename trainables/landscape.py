"""Loss landscapes (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets").

- 1-D interpolation between two solutions over every floating-point state entry, BatchNorm
  running statistics included (Li et al.'s `states` mode).
- Filter-normalized random directions: each filter of a Gaussian direction is rescaled to the norm
  of the same filter of the weights; biases and BatchNorm parameters are zero in the direction
  (Li et al.'s `biasbn` mode). 1-D slices theta + a d and 2-D surfaces theta + a d1 + b d2.
Every point is evaluated in eval mode, without augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from trainables.data import Normalizer, Split
from trainables.loop import Runtime, evaluate

State = dict[str, torch.Tensor]


def interpolate(state_a: State, state_b: State, alpha: float) -> State:
    """(1 - alpha) theta_A + alpha theta_B for floating-point entries; integer entries (counters) from A."""
    return {k: torch.lerp(a, state_b[k], alpha) if a.is_floating_point() else a.clone() for k, a in state_a.items()}


def clamp_running_variances(state: State) -> tuple[State, int]:
    """`state` with negative BatchNorm running variances set to 0, and how many entries were negative.

    Extrapolating (a < 0 or a > 1) can push a variance below zero, which makes BatchNorm take the
    square root of a negative number: every loss NaN. A zero variance normalizes by sqrt(eps) instead.
    """
    out, clamped = dict(state), 0
    for name, value in state.items():
        if name.endswith("running_var"):
            negative = int((value < 0).sum())
            if negative:
                out[name], clamped = value.clamp_min(0.0), clamped + negative
    return out, clamped


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Replace every BatchNorm's running statistics with their average over `batches` (train-mode passes).

    As mode-connectivity work does (Garipov et al. 2018; torch.optim.swa_utils.update_bn): a point
    between or beyond two solutions gets the statistics of its own activations, so its loss means
    something everywhere. The mean is exact over the batches; the variance is the mean of the
    per-batch (unbiased) variances, so it depends on the batch size, which the settings record.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average instead of an exponential one
    was_training = model.training
    model.train()
    for images in batches:
        model(images)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> State:
    """A random direction over the parameters, each filter scaled to its weight filter's norm."""
    direction: State = {}
    for name, weight in model.named_parameters():
        if weight.dim() <= 1:  # biases and BatchNorm scale/shift: not perturbed
            direction[name] = torch.zeros_like(weight)
            continue
        d = torch.randn(weight.shape, generator=generator, dtype=weight.dtype, device=generator.device).to(
            weight.device
        )
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


def evaluate_state(
    model: nn.Module, state: State, split: Split, normalize: Normalizer, runtime: Runtime, batch_size: int | None = None
) -> tuple[float, float]:
    """(loss, accuracy) of `state` on `split`, in eval mode."""
    model.load_state_dict(state)
    return evaluate(model, split, normalize, runtime, batch_size)


def direction_entries(model: nn.Module) -> list[str]:
    """The state entries a direction moves: weights of convolutions and linear layers (Li et al.'s
    `biasbn` mode leaves biases and BatchNorm parameters out, as `filter_normalized_direction` does)."""
    return [name for name, weight in model.named_parameters() if weight.dim() > 1]


@dataclass(frozen=True)
class TrajectoryPCA:
    """The plane of an optimization trajectory (Li et al. 2018, section 7)."""

    directions: list[State]  # two orthonormal directions over `direction_entries`
    explained: list[float]  # fraction of the trajectory's variance along each
    coordinates: list[tuple[float, float]]  # each snapshot's (theta_i - theta_final) projected on the plane


def trajectory_pca(snapshots: list[State], final: State, entries: list[str]) -> TrajectoryPCA:
    """PCA of the trajectory's displacements theta_i - theta_final over `entries`.

    As Li et al.: the two principal directions of the (centred) matrix of displacements; each
    snapshot's coordinates are its displacement's projections (uncentred, so the final solution sits
    at the origin). The n x n Gram matrix gives the same directions as an SVD of the n x P matrix
    without its P x P work.
    """
    # float32 rows (n x P: 60 VGG9 snapshots are 670 MB); products accumulated in float64, row by row.
    rows = torch.stack([torch.cat([(s[k] - final[k]).reshape(-1).float() for k in entries]) for s in snapshots])
    centred = rows - rows.mean(dim=0)
    gram = torch.zeros(len(rows), len(rows), dtype=torch.float64)
    for i in range(len(rows)):
        for j in range(i + 1):
            gram[i, j] = gram[j, i] = centred[i].double() @ centred[j].double()
    values, vectors = torch.linalg.eigh(gram)
    order = torch.argsort(values, descending=True)[:2]
    total = float(values.clamp_min(0).sum())
    if len(snapshots) < 3 or total <= 0 or float(values[order[1]]) <= 1e-12 * total:
        raise ValueError(f"a trajectory plane needs 3 or more snapshots spanning two directions; got {len(snapshots)}")
    flat_directions = [
        sum(float(vectors[j, i]) * centred[j].double() for j in range(len(rows))) / torch.sqrt(values[i]) for i in order
    ]
    coordinates = [(float(r.double() @ flat_directions[0]), float(r.double() @ flat_directions[1])) for r in rows]
    directions = []
    for flat in flat_directions:
        direction, offset = {}, 0
        for k in entries:
            n = final[k].numel()
            direction[k] = flat[offset : offset + n].view(final[k].shape).to(final[k].dtype)
            offset += n
        directions.append(direction)
    return TrajectoryPCA(directions, [float(values[i]) / total for i in order], coordinates)
