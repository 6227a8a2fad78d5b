"""Sharpness of a minimum: Hessian eigenvalues and trace, epsilon-sharpness, gradient noise scale.

The objective is the training loss on a fixed sample, with BatchNorm in eval mode (as PyHessian
does), given as a list of batches and a function that returns one batch's mean loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
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
    values: list[float]  # largest in magnitude first: power iteration finds |lambda| max
    iterations: list[int]
    converged: list[bool]


def top_eigenvalues(
    loss_fn: LossFn,
    batches: Sequence[Batch],
    params: Vector,
    k: int = 1,
    *,
    max_iterations: int = 100,
    tolerance: float = 1e-4,
    generator: torch.Generator | None = None,
    on_iteration: Callable[[int, int, float], None] | None = None,
) -> Eigen:
    """The k eigenvalues largest in magnitude, by power iteration on Hessian-vector products with
    deflation. A negative eigenvalue larger in magnitude than the positive ones is among them.
    `on_iteration(eigenvalue index, iterations so far, current value)` is told after every product."""
    found_values: list[float] = []
    found_vectors: list[Vector] = []
    iterations, converged_flags = [], []

    def orthogonal(v: Vector) -> Vector:  # deflation: stay out of the eigenvectors already found
        for u in found_vectors:
            projection = _dot(v, u)
            v = [x - projection * y for x, y in zip(v, u)]
        return _normalize(v)

    for _ in range(k):
        v = orthogonal([torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params])
        value = math.nan
        converged, used = False, 0
        while used < max_iterations and not converged:
            used += 1
            hv = hessian_vector_product(loss_fn, batches, params, v)
            new_value = float(_dot(hv, v))  # Rayleigh quotient of the unit vector v
            v = orthogonal(hv)
            converged = abs(new_value - value) <= tolerance * abs(new_value)
            value = new_value
            if on_iteration is not None:
                on_iteration(len(found_values), used, value)
        found_values.append(value)
        found_vectors.append(v)
        iterations.append(used)
        converged_flags.append(converged)
    return Eigen(found_values, iterations, converged_flags)


@dataclass(frozen=True)
class TraceEstimate:
    value: float
    std_error: float
    samples: int  # random draws of the stochastic part (Hutchinson: all of them)
    converged: bool  # the standard error reached the asked fraction of |value| before the cap
    products: int = 0  # Hessian-vector products spent, sketch included
    method: str = "hutchinson"
    sketch: int = 0  # Hutch++: the rank of the exactly-traced subspace


def hessian_trace(
    loss_fn: LossFn,
    batches: Sequence[Batch],
    params: Vector,
    *,
    rel_error: float = 0.02,
    min_samples: int = 10,
    max_samples: int = 1000,
    generator: torch.Generator | None = None,
    on_draw: Callable[[TraceEstimate], None] | None = None,
) -> TraceEstimate:
    """Hutchinson's estimator tr(H) = E[v^T H v] with Rademacher v: the mean and its standard error
    (`on_draw` is told the running estimate after every draw).

    Draws until the standard error is at most `rel_error` x |mean| (after `min_samples`, so that the
    standard error itself is estimated from enough draws) or `max_samples` draws are spent. A fixed
    30 draws gave ~10% standard error on VGG9: too noisy to compare trials.
    """
    draws: list[float] = []
    mean = std_error = math.nan
    while len(draws) < max_samples:
        v = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p.dtype).to(p.device) for p in params]
        draws.append(float(_dot(hessian_vector_product(loss_fn, batches, params, v), v)))
        mean = sum(draws) / len(draws)
        var = sum((d - mean) ** 2 for d in draws) / max(1, len(draws) - 1)
        std_error = math.sqrt(var / len(draws))
        if on_draw is not None:
            on_draw(TraceEstimate(mean, std_error, len(draws), False, len(draws)))
        if len(draws) >= min_samples and std_error <= rel_error * abs(mean):
            return TraceEstimate(mean, std_error, len(draws), True)
    return TraceEstimate(mean, std_error, len(draws), False)


TRACE_METHODS = ("hutchinson", "hutchpp")  # trace_estimate; "krylov": krylov_spectrum


def trace_estimate(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    *,
    method: str = "hutchpp",
    sketch: int = 20,
    rel_error: float = 0.02,
    min_samples: int = 10,
    max_products: int = 1000,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    on_draw: Callable[[TraceEstimate], None] | None = None,
) -> TraceEstimate:
    """tr(A) of a symmetric operator given by `matvec` on flat vectors of length `dim`.

    hutchinson: the mean of v^T A v over Rademacher v, with its standard error.
    hutchpp: Hutch++ (Meyer, Musco, Musco and Woodruff 2021), adaptive in its last part: Q, an orthonormal
    basis of A S for `sketch` Rademacher columns S, takes the top of the spectrum, whose trace tr(Q^T A Q)
    is computed exactly (2 x sketch products); the rest, tr((I - QQ^T) A (I - QQ^T)), by Hutchinson on
    projected Rademacher vectors, drawn until the standard error is at most `rel_error` x |estimate|.
    Given Q the residual draws are independent and unbiased, so the standard error of their mean is the
    estimate's (Q's part has none): an honest interval, checked for coverage in the tests. Where a few
    eigenvalues dominate (neural-network Hessians) the residual's variance is a small part of
    Hutchinson's, and far fewer products reach the same error.

    Both stop after `min_samples` draws at the earliest (so that the standard error itself rests on
    enough of them) and when `max_products` products are spent (then `converged` is False). `on_draw` is
    told the running estimate after every residual draw.
    """
    if method not in TRACE_METHODS:
        raise ValueError(f"trace method {method!r}: use one of {', '.join(TRACE_METHODS)}")

    def rademacher(count: int) -> torch.Tensor:
        return (torch.randint(0, 2, (count, dim), generator=generator) * 2 - 1).to(dtype=dtype, device=device)

    exact, products = 0.0, 0
    basis = torch.zeros(0, dim, dtype=dtype, device=device)
    rank = min(sketch, dim, max(0, (max_products - min_samples) // 2)) if method == "hutchpp" else 0
    if rank > 0:

        def sketched(v: torch.Tensor) -> torch.Tensor:
            nonlocal products
            products += 1
            if on_draw is not None:
                on_draw(TraceEstimate(math.nan, math.nan, 0, False, products, method, rank))
            return matvec(v)

        images = torch.stack([sketched(s) for s in rademacher(rank)])
        basis = torch.linalg.qr(images.T.double(), mode="reduced").Q.T.to(dtype)  # (rank, dim), orthonormal rows
        exact = float(sum(torch.dot(q, sketched(q)).double() for q in basis))
    draws: list[float] = []
    mean = std_error = math.nan
    while products < max_products:
        v = rademacher(1)[0]
        if rank > 0:
            v = v - basis.T @ (basis @ v)  # the part of v outside the traced subspace
        draws.append(float(torch.dot(v, matvec(v))))
        products += 1
        mean = sum(draws) / len(draws)
        var = sum((d - mean) ** 2 for d in draws) / max(1, len(draws) - 1)
        std_error = math.sqrt(var / len(draws))
        if on_draw is not None:
            on_draw(TraceEstimate(exact + mean, std_error, len(draws), False, products, method, rank))
        if len(draws) >= min_samples and std_error <= rel_error * abs(exact + mean):
            return TraceEstimate(exact + mean, std_error, len(draws), True, products, method, rank)
    return TraceEstimate(exact + mean, std_error, len(draws), False, products, method, rank)


@dataclass(frozen=True)
class KrylovSpectrum:
    """What one Lanczos run gives: the top eigenvalues (Ritz values) and the trace, from the same products."""

    eigen: Eigen
    trace: TraceEstimate | None  # None when the trace was not asked for
    steps: int  # Lanczos steps (one product each), shared by both
    bounds: list[float]  # each eigenvalue's residual bound |beta_m s_mi| >= its distance to the spectrum
    vectors: list[torch.Tensor] | None = None  # the Ritz vectors (unit, flat), where asked for


def krylov_spectrum(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    *,
    top_k: int = 1,
    trace: bool = True,
    min_steps: int = 20,
    max_steps: int = 100,
    tolerance: float = 1e-3,
    rel_error: float = 0.02,
    min_samples: int = 10,
    max_products: int = 1000,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    on_product: Callable[[int, str], None] | None = None,
    on_draw: Callable[[TraceEstimate], None] | None = None,
    ritz_vectors: bool = False,
) -> KrylovSpectrum:
    """The `top_k` eigenvalues largest in magnitude and the trace of a symmetric operator, sharing one
    Krylov space: Lanczos with full reorthogonalization from a Rademacher start, until every top-k Ritz
    value's residual bound |beta_m s_mi| is at most `tolerance` x |value| (after `min_steps`, so that
    the space also holds the top of the spectrum; at most `max_steps`). Its basis Q then serves the trace
    as Hutch++'s sketch does: tr(Q^T A Q) is the sum of the Lanczos diagonal, known without another
    product, and Hutchinson on (I - QQ^T) v, with Rademacher v drawn independently of the start, traces
    the rest until its standard error is at most `rel_error` x |estimate|. Given Q those draws are i.i.d.
    and unbiased, so their standard error is the estimate's (coverage is tested). Power iteration plus
    Hutch++ spends products on the eigenvalues and again on a sketch; here the eigenvalues' products are
    the sketch. `on_product(products, phase)` is told after every product, `on_draw(the trace so far)`
    after every residual draw as well. `ritz_vectors`: also the top-k Ritz vectors Q s_i (unit length; the sign
    that makes the largest-magnitude entry positive, so that a direction is the same on every run)."""
    products = 0

    def product(v: torch.Tensor, phase: str) -> torch.Tensor:
        nonlocal products
        products += 1
        out = matvec(v)
        if on_product is not None:
            on_product(products, phase)
        return out

    start = (torch.randint(0, 2, (dim,), generator=generator) * 2 - 1).to(dtype=dtype, device=device)
    rows = [start / torch.linalg.vector_norm(start)]
    diagonal: list[float] = []
    off_diagonal: list[float] = []
    steps_cap = min(max_steps, dim)
    while True:
        q = rows[-1]
        w = product(q, "lanczos")
        diagonal.append(float(torch.dot(w, q)))
        basis = torch.stack(rows)
        for _ in range(2):  # full reorthogonalization, twice: one pass leaves errors of the size it removes
            w = w - basis.T @ (basis @ w)
        beta = float(torch.linalg.vector_norm(w))
        tridiagonal = np.diag(diagonal) + np.diag(off_diagonal, 1) + np.diag(off_diagonal, -1)
        values, vectors = np.linalg.eigh(tridiagonal)
        order = np.argsort(-np.abs(values))[:top_k]
        bounds = [beta * abs(float(vectors[-1, i])) for i in order]
        exhausted = beta < 1e-10 * max(1.0, float(np.abs(values).max()))  # an invariant subspace: exact
        converged = [b <= tolerance * abs(float(values[i])) for b, i in zip(bounds, order)]
        steps = len(diagonal)
        if (
            exhausted
            or steps >= steps_cap
            or (steps >= min(min_steps, steps_cap) and steps >= top_k and all(converged))
        ):
            break
        off_diagonal.append(beta)
        rows.append(w / beta)
    eigen = Eigen(
        [float(values[i]) for i in order],
        [steps] * len(order),
        [exhausted or c for c in converged],
    )
    basis = torch.stack(rows)
    ritz = None
    if ritz_vectors:
        ritz = []
        for i in order:
            v = basis.T @ torch.as_tensor(vectors[:, i], dtype=basis.dtype, device=basis.device)
            v = v / torch.linalg.vector_norm(v)
            ritz.append(v if float(v[int(torch.argmax(v.abs()))]) > 0 else -v)
    if not trace:
        return KrylovSpectrum(eigen, None, steps, bounds, ritz)
    exact = float(sum(diagonal))
    draws: list[float] = []
    mean = std_error = 0.0
    complete = exhausted and steps == dim
    while not complete and products < max_products:
        v = (torch.randint(0, 2, (dim,), generator=generator) * 2 - 1).to(dtype=dtype, device=device)
        v = v - basis.T @ (basis @ v)
        draws.append(float(torch.dot(v, product(v, "residual"))))
        mean = sum(draws) / len(draws)
        var = sum((d - mean) ** 2 for d in draws) / max(1, len(draws) - 1)
        std_error = math.sqrt(var / len(draws))
        if on_draw is not None:
            on_draw(TraceEstimate(exact + mean, std_error, len(draws), False, products, "krylov", steps))
        if len(draws) >= min_samples and std_error <= rel_error * abs(exact + mean):
            complete = True
    reached = complete or (len(draws) >= min_samples and std_error <= rel_error * abs(exact + mean))
    if not complete and len(draws) < 2:  # the budget ended in the Lanczos run: the rest of the trace is unknown
        std_error = math.nan  # no interval, rather than one of width 0 around the Krylov space's part alone
    estimate = TraceEstimate(exact + mean, std_error, len(draws), reached, products, "krylov", steps)
    return KrylovSpectrum(eigen, estimate, steps, bounds, ritz)


def flat_hessian(
    loss_fn: LossFn, batches: Sequence[Batch], params: Vector
) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """(v -> H v on flat vectors, their length): the Hessian of the loss as the flat estimators take it."""
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]

    def matvec(flat: torch.Tensor) -> torch.Tensor:
        pieces = [x.reshape(shape) for x, shape in zip(torch.split(flat, sizes), shapes)]
        return torch.cat([h.reshape(-1) for h in hessian_vector_product(loss_fn, batches, params, pieces)])

    return matvec, sum(sizes)


def hessian_krylov(loss_fn: LossFn, batches: Sequence[Batch], params: Vector, **settings: Any) -> KrylovSpectrum:
    """`krylov_spectrum` of the loss's Hessian: its top eigenvalues and trace from one Lanczos run."""
    matvec, dim = flat_hessian(loss_fn, batches, params)
    return krylov_spectrum(matvec, dim, dtype=params[0].dtype, device=params[0].device, **settings)


def hessian_trace_by(
    loss_fn: LossFn,
    batches: Sequence[Batch],
    params: Vector,
    *,
    method: str = "hutchpp",
    sketch: int = 20,
    rel_error: float = 0.02,
    min_samples: int = 10,
    max_products: int = 1000,
    generator: torch.Generator | None = None,
    on_draw: Callable[[TraceEstimate], None] | None = None,
) -> TraceEstimate:
    """tr(H) of the loss by `trace_estimate` (Hutch++ or Hutchinson) on Hessian-vector products."""
    matvec, dim = flat_hessian(loss_fn, batches, params)
    first = params[0]
    return trace_estimate(
        matvec,
        dim,
        method=method,
        sketch=sketch,
        rel_error=rel_error,
        min_samples=min_samples,
        max_products=max_products,
        generator=generator,
        dtype=first.dtype,
        device=first.device,
        on_draw=on_draw,
    )


@dataclass(frozen=True)
class EpsSharpness:
    value: float  # 100 (max f - f(x)) / (1 + f(x))
    loss: float  # f(x)
    max_loss: float
    steps: int  # loss-and-gradient evaluations used by the maximization
    converged: bool
    method: str
    # sign ascent: the gain a linear model at the best point still promises within the box, relative to
    # max f - f(x) (0 at a first-order local maximum; `converged` means it is at most GAP_TOLERANCE)
    gap: float | None = None


GAP_TOLERANCE = 0.01


def _loss_and_grad(loss_fn: LossFn, batches: Sequence[Batch], params: Vector) -> tuple[float, Vector]:
    total = sum(len(b[1]) for b in batches)
    grads = [torch.zeros_like(p) for p in params]
    value = 0.0
    for batch in batches:
        loss = loss_fn(batch) * (len(batch[1]) / total)
        for g, d in zip(grads, torch.autograd.grad(loss, params)):
            g += d
        value += float(loss.detach())
    return value, grads


def eps_sharpness(
    loss_fn: LossFn,
    batches: Sequence[Batch],
    params: Vector,
    eps: float,
    *,
    method: str = "sign_ascent",
    max_steps: int = 100,
    tolerance: float = 1e-4,
    on_step: Callable[[int], None] | None = None,
) -> EpsSharpness:
    """Keskar et al. 2017: 100 (max_y f(x + y) - f(x)) / (1 + f(x)) over the box |y_i| <= eps (|x_i| + 1).

    `sign_ascent`: projected sign-gradient ascent (the box's first-order maximizer is a corner), with
    a step that starts at half the box and halves whenever a step fails to improve the best point
    (from which it restarts). It stops when the best point is a first-order local maximum: the gain
    the linear model there still promises inside the box, sum_i (|g_i| b_i - g_i y_i), is at most
    GAP_TOLERANCE (1%) of the sharpness found, and an accepted step raised it by less than a relative
    `tolerance` or the step fell below 1/1024 of the box; `converged` says whether that held, so a run
    cut off by `max_steps` says so. (Stopping on a small gain alone reported "converged" 2.9% below
    L-BFGS-B at eps 5e-3; a fixed 10 steps stopped 14% low.) `lbfgsb`: Keskar et al.'s own L-BFGS-B on
    the box (scipy). y = 0 is in the box, so the value is >= 0. Params are restored.
    `on_step(evaluations so far)` is told after every loss-and-gradient evaluation.
    """
    f0, best, steps, converged, gap = box_maximum(
        loss_fn, batches, params, lambda x: eps * (x.abs() + 1), method, max_steps, tolerance, on_step
    )
    return EpsSharpness(100.0 * (best - f0) / (1.0 + f0), f0, best, steps, converged, method, gap)


def adaptive_sharpness(
    loss_fn: LossFn,
    batches: Sequence[Batch],
    params: Vector,
    rho: float,
    *,
    method: str = "sign_ascent",
    max_steps: int = 100,
    tolerance: float = 1e-4,
    on_step: Callable[[int], None] | None = None,
) -> EpsSharpness:
    """Adaptive sharpness (Kwon et al. 2021, ASAM), its l-infinity form with eta = 0:
    max f(x + y) - f(x) over |y_i| <= rho |x_i|. The box scales with each weight, so rescaling a layer
    whose output a BatchNorm normalizes (x -> c x, the same function) maps the box onto itself and leaves
    the value unchanged: it survives the change of axes that moves Hessian eigenvalues by 1/c^2
    (Dinh et al. 2017). Keskar's box eps (|x_i| + 1) does not (the +1). Maximized as eps_sharpness."""
    f0, best, steps, converged, gap = box_maximum(
        loss_fn, batches, params, lambda x: rho * x.abs(), method, max_steps, tolerance, on_step
    )
    return EpsSharpness(best - f0, f0, best, steps, converged, method, gap)


def box_maximum(
    loss_fn: LossFn,
    batches: Sequence[Batch],
    params: Vector,
    half_width: Callable[[torch.Tensor], torch.Tensor],
    method: str,
    max_steps: int,
    tolerance: float,
    on_step: Callable[[int], None] | None,
) -> tuple[float, float, int, bool, float | None]:
    """(f(x), max f over the box |y| <= half_width(x), evaluations, converged, first-order gap) by
    `method` (sign_ascent or lbfgsb, as eps_sharpness says); params are restored."""
    originals = [p.detach().clone() for p in params]
    bounds = [half_width(x) for x in originals]
    evaluations = 0

    def at(offsets: Vector) -> tuple[float, Vector]:
        nonlocal evaluations
        for p, x, y in zip(params, originals, offsets):
            p.data.copy_(x + y)
        result = _loss_and_grad(loss_fn, batches, params)
        evaluations += 1
        if on_step is not None:
            on_step(evaluations)
        return result

    try:
        if method == "lbfgsb":
            return (*_lbfgsb(at, originals, bounds, max_steps), None)
        if method == "sign_ascent":
            return _sign_ascent(at, originals, bounds, max_steps, tolerance)
        raise ValueError(f"unknown eps-sharpness method {method!r}; use sign_ascent or lbfgsb")
    finally:
        for p, x in zip(params, originals):
            p.data.copy_(x)


def first_order_gap(offsets: Vector, bounds: Vector, grads: Vector) -> float:
    """max over the box |y| <= b of the linear model's gain g . (y' - y) at y: sum_i |g_i| b_i - g_i y_i,
    >= 0, and 0 exactly where y is a first-order (KKT) maximum of the box."""
    return sum(float((g.abs() * b - g * y).sum()) for y, b, g in zip(offsets, bounds, grads))


def _sign_ascent(
    at: Callable[[Vector], tuple[float, Vector]], originals: Vector, bounds: Vector, max_steps: int, tolerance: float
) -> tuple[float, float, int, bool, float]:
    best_offsets = [torch.zeros_like(x) for x in originals]
    f0, grads = at(best_offsets)
    best, fraction, steps, stopped = f0, 0.5, 1, False

    def gap() -> float:
        return first_order_gap(best_offsets, bounds, grads) / max(best - f0, 1e-30)

    while steps < max_steps:
        offsets = [torch.clamp(y + fraction * b * g.sign(), -b, b) for y, b, g in zip(best_offsets, bounds, grads)]
        value, new_grads = at(offsets)
        steps += 1
        if value > best:
            gain, best = value - best, value
            best_offsets, grads = offsets, new_grads
            if gain <= tolerance * (best - f0) and gap() <= GAP_TOLERANCE:
                stopped = True
                break
        else:  # overshot: a shorter step from the best point so far
            fraction /= 2
            if fraction < 1 / 1024:  # no step the box resolves improves: a maximum if first order agrees
                stopped = True
                break
    return f0, best, steps, stopped and gap() <= GAP_TOLERANCE, gap()


def _lbfgsb(
    at: Callable[[Vector], tuple[float, Vector]], originals: Vector, bounds: Vector, max_steps: int
) -> tuple[float, float, int, bool]:
    from scipy.optimize import Bounds, minimize

    shapes = [x.shape for x in originals]
    sizes = [x.numel() for x in originals]
    scale = torch.cat([b.reshape(-1) for b in bounds]).double().cpu().numpy()

    def loss_and_grad(z: np.ndarray) -> tuple[float, np.ndarray]:
        pieces = torch.from_numpy(z * scale).split(sizes)
        value, grads = at([p.view(s).to(x.device, x.dtype) for p, s, x in zip(pieces, shapes, originals)])
        return value, torch.cat([g.reshape(-1) for g in grads]).double().cpu().numpy() * scale

    # Optimized in units of the box (y = scale * z, |z_i| <= 1), and with the objective scaled so that
    # its gradient at z = 0 is of order 1 per coordinate: L-BFGS-B's first model step is -gradient
    # (identity Hessian), which near a minimum would otherwise be ~1e-7 of the box and end the
    # search at once. Neither rescaling moves the maximizer.
    z0 = np.zeros_like(scale)
    f0, g0 = loss_and_grad(z0)
    factor = 1.0 / max(float(np.abs(g0).mean()), 1e-30)

    # max_steps counts every loss-and-gradient evaluation, f(x) at the start included; scipy's maxfun is
    # checked between iterations (it overran by one), so the budget is kept here, with the best point seen.
    evaluations, best = 1, f0

    def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal evaluations, best
        if evaluations >= max_steps:
            raise _BudgetSpent
        value, grad = loss_and_grad(z)
        evaluations, best = evaluations + 1, max(best, value)
        return -factor * value, -factor * grad

    try:
        result = minimize(
            objective,
            z0,
            jac=True,
            method="L-BFGS-B",
            bounds=Bounds(-np.ones_like(scale), np.ones_like(scale)),
            options={"maxiter": max_steps, "maxfun": max_steps, "gtol": 1e-12, "ftol": 1e-10},
        )
        converged = bool(result.success)
    except _BudgetSpent:
        converged = False
    return f0, best, evaluations, converged


class _BudgetSpent(Exception):
    """L-BFGS-B asked for an evaluation past max_steps."""


def batch_noise_factor(batch: float, population: int | None) -> float:
    """c(B) in E|g_B|^2 = |G|^2 + c(B) tr(Sigma), Sigma the per-example gradient covariance (divisor N).

    Drawn with replacement (or from an unbounded stream), c = 1/B. Drawn without replacement from N
    examples, as an epoch's permutation and the probe batches are, the variance of a mean of B shrinks
    by the finite-population correction (N - B) / (N - 1): c = (N - B) / (B (N - 1)), zero at B = N.
    """
    if population is None:
        return 1.0 / batch
    if not 1 <= batch <= population or population < 2:
        raise ValueError(f"batch {batch} must lie in [1, {population}] (the population it is drawn from)")
    return (population - batch) / (batch * (population - 1))


def noise_scale(
    small_batch: float, small_grad_sq: float, big_batch: float, big_grad_sq: float, population: int | None = None
) -> dict[str, float]:
    """McCandlish et al. 2018 (appendix A): |G|^2 and tr(Sigma) from mean squared gradient norms at two
    batch sizes, and the simple noise scale B_simple = tr(Sigma) / |G|^2.

    Unbiased for |G|^2 and tr(Sigma) when the batches are drawn as `population` says: None = with
    replacement, N = without replacement from N examples (then the 1/B of the paper becomes
    `batch_noise_factor`; ignoring it inflates B_simple, 3.7x at B = 512 of N = 2,000).
    """
    c_small = batch_noise_factor(small_batch, population)
    c_big = batch_noise_factor(big_batch, population)
    trace_sigma = (small_grad_sq - big_grad_sq) / (c_small - c_big)
    g_sq = big_grad_sq - c_big * trace_sigma
    return {"grad_sq": g_sq, "trace_sigma": trace_sigma, "b_simple": trace_sigma / g_sq if g_sq > 0 else math.nan}


def pooled_grad_sq(units: Sequence[Sequence[float]]) -> tuple[float, float]:
    """The weighted means of (small-batch |g|^2, big-batch |g|^2) over (small, big, weight) units."""
    array = np.asarray(units, dtype=np.float64).reshape(-1, 3)
    total = array[:, 2].sum()
    return float((array[:, 0] * array[:, 2]).sum() / total), float((array[:, 1] * array[:, 2]).sum() / total)


def noise_scale_interval(
    units: Sequence[Sequence[float]],
    small_batch: float,
    big_batch: float,
    population: int | None = None,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """B_simple from many measurement units, with a percentile-bootstrap confidence interval.

    Each unit is (mean small-batch |g|^2, mean big-batch |g|^2, weight): one probe pair (weight 1) or
    a block of training steps (weight = its number of steps). The estimate is a ratio of averages
    (|G|^2 and tr(Sigma) from the weighted means of all units, then their ratio), never an average of
    per-unit ratios, which is biased and undefined whenever one unit's |G|^2 estimate is <= 0.
    A resample whose |G|^2 estimate is <= 0 means "noise dominates": its B_simple is +inf, so an
    interval that includes such resamples has an infinite upper end, said rather than hidden.
    """
    array = np.asarray(units, dtype=np.float64).reshape(-1, 3)
    small, big, weight = array[:, 0], array[:, 1], array[:, 2]
    small_sq, big_sq = pooled_grad_sq(units)
    estimate = noise_scale(small_batch, small_sq, big_batch, big_sq, population)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(array), size=(resamples, len(array)))
    w = weight[picks]
    small_means, big_means = (small[picks] * w).sum(1) / w.sum(1), (big[picks] * w).sum(1) / w.sum(1)
    c_small = batch_noise_factor(small_batch, population)
    c_big = batch_noise_factor(big_batch, population)
    trace = (small_means - big_means) / (c_small - c_big)
    g_sq = big_means - c_big * trace
    with np.errstate(divide="ignore", invalid="ignore"):
        b_simple = np.where(g_sq > 0, trace / g_sq, np.inf)
    tail = (1.0 - confidence) / 2
    low, high = math.nan, math.nan  # one unit has no spread to resample
    if len(array) > 1:  # quantiles that are samples: no interpolation between a finite value and +inf
        low, high = np.quantile(b_simple, [tail, 1.0 - tail], method="inverted_cdf")
    return {
        **estimate,
        "ci_low": float(low),
        "ci_high": float(high),
        "confidence": confidence,
        "units": len(array),
        "resamples": resamples,
        "nonpositive_resamples": float((g_sq <= 0).mean()),
    }


@dataclass(frozen=True)
class SpectralQuadrature:
    """Stochastic Lanczos quadrature: per run, Gauss nodes (Ritz values) and their weights (sum 1)."""

    nodes: list[list[float]]
    weights: list[list[float]]


def lanczos(matvec: Callable[[Vector], Vector], start: Vector, iterations: int) -> tuple[list[float], list[float]]:
    """The tridiagonal (diagonal, off-diagonal) of `iterations` Lanczos steps from `start`.

    Full reorthogonalization against every earlier vector (as PyHessian does): without it, rounding
    makes Ritz values repeat and the quadrature weights wrong. Stops early when the Krylov space is
    exhausted (a zero residual), e.g. after n steps on an n x n matrix.
    """
    basis: list[Vector] = [_normalize(start)]
    diagonal: list[float] = []
    off_diagonal: list[float] = []
    for _ in range(iterations):
        v = basis[-1]
        w = matvec(v)
        alpha = _dot(w, v)
        diagonal.append(float(alpha))
        for u in basis:  # two passes of Gram-Schmidt: one leaves rounding errors of the size it removes
            w = [x - _dot(w, u) * y for x, y in zip(w, u)]
        for u in basis:
            w = [x - _dot(w, u) * y for x, y in zip(w, u)]
        beta = float(torch.sqrt(_dot(w, w)))
        if len(diagonal) == iterations or beta < 1e-10 * max(1.0, abs(diagonal[-1])):
            break
        off_diagonal.append(beta)
        basis.append([x / beta for x in w])
    return diagonal, off_diagonal


def spectral_quadrature(
    matvec: Callable[[Vector], Vector],
    like: Vector,
    *,
    iterations: int = 90,
    runs: int = 1,
    generator: torch.Generator | None = None,
) -> SpectralQuadrature:
    """Stochastic Lanczos quadrature of a symmetric operator's spectral density (Ghorbani et al. 2019).

    Each run starts Lanczos from a Rademacher vector; the eigenvalues of its tridiagonal matrix are
    the nodes and the squared first components of their eigenvectors the weights. Averaged over runs,
    sum_j w_j f(node_j) estimates tr(f(H)) / n, exactly for polynomials f of degree < 2 x iterations.
    """
    nodes, weights = [], []
    for _ in range(runs):
        start = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p.dtype).to(p.device) for p in like]
        diagonal, off_diagonal = lanczos(matvec, start, iterations)
        tridiagonal = np.diag(diagonal) + np.diag(off_diagonal, 1) + np.diag(off_diagonal, -1)
        values, vectors = np.linalg.eigh(tridiagonal)
        nodes.append(values.tolist())
        weights.append((vectors[0] ** 2).tolist())
    return SpectralQuadrature(nodes, weights)


def hessian_spectrum(
    loss_fn: LossFn,
    batches: Sequence[Batch],
    params: Vector,
    *,
    iterations: int = 90,
    runs: int = 1,
    generator: torch.Generator | None = None,
) -> SpectralQuadrature:
    """The Hessian eigenvalue density's quadrature (PyHessian's `density`)."""
    return spectral_quadrature(
        lambda v: hessian_vector_product(loss_fn, batches, params, v),
        params,
        iterations=iterations,
        runs=runs,
        generator=generator,
    )


GRID_POINTS_PER_SIGMA = 4  # grid points per kernel width: the sampled curve is within ~1% (L1) of the density
MAX_GRID_POINTS = 200_000


def density_on_grid(
    quadrature: SpectralQuadrature, *, bins: int = 1000, sigma_squared: float = 1e-5
) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalue grid, density): each node smoothed by a Gaussian, averaged over runs, integral 1.

    PyHessian's kernel: variance `sigma_squared` x max(1, span of the nodes), so densities of
    different solutions compare. Unlike PyHessian (a fixed 0.01 margin), the grid reaches 5 kernel
    widths past the extreme nodes, so no node loses part of its mass off the grid. It has at least
    `bins` points and at least GRID_POINTS_PER_SIGMA per kernel width (at most MAX_GRID_POINTS): a fixed
    1,000 points over a spectrum 10 wide are 4 kernel widths apart, and the stored curve was 0.38 from
    the density in L1, its peaks off by up to 1.8x.
    """
    all_nodes = np.concatenate([np.asarray(n) for n in quadrature.nodes])
    variance = sigma_squared * max(1.0, float(all_nodes.max() - all_nodes.min()))
    sigma = float(np.sqrt(variance))
    low, high = float(all_nodes.min()) - 5 * sigma, float(all_nodes.max()) + 5 * sigma
    points = min(MAX_GRID_POINTS, max(bins, math.ceil((high - low) / sigma * GRID_POINTS_PER_SIGMA) + 1))
    grid = np.linspace(low, high, points)
    density = np.zeros(points)
    for nodes, weights in zip(quadrature.nodes, quadrature.weights):
        for start in range(0, points, 10_000):  # pieces: points x nodes floats at once stay small
            piece = grid[start : start + 10_000]
            kernel = np.exp(-((piece[:, None] - np.asarray(nodes)[None, :]) ** 2) / (2 * variance))
            density[start : start + 10_000] += kernel @ np.asarray(weights) / np.sqrt(2 * np.pi * variance)
    density /= len(quadrature.nodes)
    area = float(((density[1:] + density[:-1]) / 2 * np.diff(grid)).sum())  # trapezoid rule
    return grid, density / area
