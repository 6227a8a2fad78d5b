"""Sharpness of a minimum: Hessian eigenvalues and trace, epsilon-sharpness, gradient noise scale.

The objective is the training loss on a fixed sample, with BatchNorm in eval mode (as PyHessian
does), given as a list of batches and a function that returns one batch's mean loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[Batch], torch.Tensor]
Vector = list[torch.Tensor]


def _dot(a: Vector, b: Vector) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))  # type: ignore[return-value]


def _normalize(v: Vector) -> Vector:
    norm = torch.sqrt(_dot(v, v)).clamp_min(1e-12)
    return [x / norm for x in v]


def hessian_vector_product(loss_fn: LossFn, batches: Sequence[Batch], params: Vector, v: Vector) -> Vector:
    """H v for the sample-weighted mean loss over `batches`, by double backpropagation."""
    total = sum(len(b[1]) for b in batches)
    out = [torch.zeros_like(p) for p in params]
    for batch in batches:
        loss = loss_fn(batch) * (len(batch[1]) / total)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        hv = torch.autograd.grad(_dot(list(grads), v), params)
        for o, h in zip(out, hv):
            o += h.detach()
    return out


@dataclass(frozen=True)
class Eigen:
    values: list[float]
    iterations: list[int]


def top_eigenvalues(loss_fn: LossFn, batches: Sequence[Batch], params: Vector, k: int = 1, *,
                    max_iterations: int = 100, tolerance: float = 1e-4,
                    generator: torch.Generator | None = None) -> Eigen:
    """The k largest eigenvalues by power iteration on Hessian-vector products, deflating found ones."""
    found_values: list[float] = []
    found_vectors: list[Vector] = []
    iterations = []

    def orthogonal(v: Vector) -> Vector:  # deflation: stay out of the eigenvectors already found
        for u in found_vectors:
            projection = _dot(v, u)
            v = [x - projection * y for x, y in zip(v, u)]
        return _normalize(v)

    for _ in range(k):
        v = orthogonal([torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params])
        value = math.nan
        for iteration in range(1, max_iterations + 1):
            hv = hessian_vector_product(loss_fn, batches, params, v)
            new_value = float(_dot(hv, v))  # Rayleigh quotient of the unit vector v
            v = orthogonal(hv)
            converged = abs(new_value - value) <= tolerance * abs(new_value)
            value = new_value
            if converged:
                break
        found_values.append(value)
        found_vectors.append(v)
        iterations.append(iteration)
    return Eigen(found_values, iterations)


@dataclass(frozen=True)
class TraceEstimate:
    value: float
    std_error: float
    samples: int


def hessian_trace(loss_fn: LossFn, batches: Sequence[Batch], params: Vector, *, samples: int = 50,
                  generator: torch.Generator | None = None) -> TraceEstimate:
    """Hutchinson's estimator tr(H) = E[v^T H v] with Rademacher v; the mean and its standard error."""
    draws = []
    for _ in range(samples):
        v = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p.dtype).to(p.device) for p in params]
        draws.append(float(_dot(hessian_vector_product(loss_fn, batches, params, v), v)))
    mean = sum(draws) / len(draws)
    var = sum((d - mean) ** 2 for d in draws) / max(1, len(draws) - 1)
    return TraceEstimate(mean, math.sqrt(var / len(draws)), len(draws))


def full_loss(loss_fn: LossFn, batches: Sequence[Batch]) -> float:
    total = sum(len(b[1]) for b in batches)
    with torch.no_grad():
        return float(sum(loss_fn(b) * len(b[1]) for b in batches) / total)


def eps_sharpness(loss_fn: LossFn, batches: Sequence[Batch], params: Vector, eps: float, *,
                  steps: int = 10, step_fraction: float = 0.5) -> float:
    """Keskar et al. 2017: 100 (max_y f(x + y) - f(x)) / (1 + f(x)) over the box |y_i| <= eps (|x_i| + 1).

    The maximum is sought by projected sign-gradient ascent (the box's first-order maximizer is a
    corner); y = 0 is in the box, so the result is >= 0.
    """
    originals = [p.detach().clone() for p in params]
    bounds = [eps * (x.abs() + 1) for x in originals]
    f0 = full_loss(loss_fn, batches)
    best = f0
    offsets = [torch.zeros_like(x) for x in originals]
    try:
        for _ in range(steps):
            for p, x, y in zip(params, originals, offsets):
                p.data.copy_(x + y)
            total = sum(len(b[1]) for b in batches)
            grads = [torch.zeros_like(p) for p in params]
            value = 0.0
            for batch in batches:
                loss = loss_fn(batch) * (len(batch[1]) / total)
                for g, d in zip(grads, torch.autograd.grad(loss, params)):
                    g += d
                value += float(loss.detach())
            best = max(best, value)
            offsets = [torch.maximum(torch.minimum(y + step_fraction * b * g.sign(), b), -b)
                       for y, b, g in zip(offsets, bounds, grads)]
        for p, x, y in zip(params, originals, offsets):
            p.data.copy_(x + y)
        best = max(best, full_loss(loss_fn, batches))
    finally:
        for p, x in zip(params, originals):
            p.data.copy_(x)
    return 100.0 * (best - f0) / (1.0 + f0)


def noise_scale(small_batch: float, small_grad_sq: float, big_batch: float, big_grad_sq: float) -> dict[str, float]:
    """McCandlish et al. 2018 (appendix A): unbiased |G|^2 and tr(Sigma) from squared gradient norms
    at two batch sizes, and the simple noise scale B_simple = tr(Sigma) / |G|^2."""
    g_sq = (big_batch * big_grad_sq - small_batch * small_grad_sq) / (big_batch - small_batch)
    trace_sigma = (small_grad_sq - big_grad_sq) / (1.0 / small_batch - 1.0 / big_batch)
    return {"grad_sq": g_sq, "trace_sigma": trace_sigma,
            "b_simple": trace_sigma / g_sq if g_sq > 0 else math.nan}
