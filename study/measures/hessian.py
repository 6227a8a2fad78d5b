"""The Hessian of the training loss: top eigenvalues, trace (PyHessian's algorithms) and eigenvalue density."""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from study.errors import MAX_BATCH, MAX_IMAGES, check, ranged
from study.measures.base import Cost, Job, Measure, Shown, TaskInputs, progress, register, sample, trial_ids
from study.measures.common import training_loss

if TYPE_CHECKING:
    from collections.abc import Callable

    from study.config import StudyConfig


@dataclass(frozen=True)
class DensityConfig:
    """The Hessian eigenvalue density by stochastic Lanczos quadrature (PyHessian's `density`)."""

    # Lanczos steps per run (each one Hessian-vector product; memory: one vector each)
    iterations: int = ranged(90, 2, 10_000)
    runs: int = ranged(1, 1, 1000)  # random starting vectors, averaged
    bins: int = ranged(1000, 10, 1_000_000)  # eigenvalue grid points stored
    # Gaussian smoothing variance x max(1, spectrum span), as PyHessian
    sigma_squared: float = ranged(1e-5, 0.0, 1.0, low_open=True)


@dataclass(frozen=True)
class HessianConfig:
    top_k: int = ranged(1, 1, 1000)  # the k eigenvalues largest in magnitude (a negative one can be among them)
    trace: bool = True
    samples: int = ranged(5000, 1, MAX_IMAGES)  # fixed class-balanced training images the loss is measured on
    # random draws until standard error <= this x |trace| ...
    trace_rel_error: float = ranged(0.02, 0.0, 1.0, low_open=True, high_open=True)
    # ... or this many Hessian-vector products in all (then the row says it did not converge)
    trace_max_draws: int = ranged(1000, 2, 1_000_000)
    # hutchinson: the mean of v^T H v; hutchpp: Hutch++, the top of the spectrum (a basis of H S for
    # trace_sketch random columns S) traced exactly, Hutchinson on the rest (far fewer products where a
    # few eigenvalues dominate; trainables.sharpness.trace_estimate); krylov: one Lanczos run (at least
    # trace_sketch steps) gives the top_k eigenvalues and the trace of its space, Hutchinson on the rest:
    # the eigenvalues' products serve the trace too (trainables.sharpness.krylov_spectrum). Left out: krylov
    # (~65-75 products for a 2% error on a trained VGG9 where Hutchinson took 258-663); a store measured when
    # hutchinson was the default keeps those jobs and their values (Job.earlier)
    trace_method: Literal["hutchinson", "hutchpp", "krylov"] | None = None
    trace_sketch: int = ranged(20, 1, 1000)
    # images per forward pass, the same on every device (BN in eval mode: no effect but rounding; a CPU
    # computes each in pieces of 128, faster there: study/measures/common.py)
    batch: int = ranged(512, 1, MAX_BATCH)
    density: DensityConfig | None = None  # `density:` alone means the defaults


UNIT = "loss / weight^2"
# a layer rescaled by c (the same function) has its Hessian block moved to D^-1 H D^-1: that block by 1/c^2
HESSIAN_CHANGES = "changes: a layer rescaled by c moves its block of the Hessian by 1/c^2"


def eigenvalue_shown(i: int) -> Shown:
    title = "Hessian top eigenvalue" if i == 1 else f"Hessian eigenvalue {i}"
    return Shown(title, f"lambda_{i} ({UNIT})", "lower", HESSIAN_CHANGES)


TRACE = Shown("Hessian trace", f"trace ({UNIT})", "lower", HESSIAN_CHANGES)


def shown(value: str) -> Shown | None:
    """hessian_trace, hessian_eig1, hessian_eig2, ..."""
    eigenvalue = re.fullmatch(r"hessian_eig([1-9][0-9]*)", value)
    return TRACE if value == "hessian_trace" else eigenvalue_shown(int(eigenvalue.group(1))) if eigenvalue else None


def validate(study: StudyConfig, config: HessianConfig, s: str) -> None:
    check(config.top_k >= 1 and config.samples >= 1, f"{s}measure.hessian: top_k and samples must be >= 1")
    check(
        0 < config.trace_rel_error < 1 and config.trace_max_draws >= 2 and config.batch >= 1,
        f"{s}measure.hessian: trace_rel_error must lie in (0, 1), trace_max_draws >= 2, batch >= 1",
    )
    if config.density is not None:
        d = config.density
        check(
            d.iterations >= 2 and d.runs >= 1 and d.bins >= 10 and d.sigma_squared > 0,
            f"{s}measure.hessian.density: iterations >= 2, runs >= 1, bins >= 10 and sigma_squared > 0",
        )


DEFAULT_TRACE_METHOD = "krylov"


def hessian_settings(config: HessianConfig, method: str) -> dict[str, Any]:
    settings = {k: v for k, v in asdict(config).items() if k != "density"}
    if method == "hutchinson":  # as before these keys existed: the same job, the same file
        return {k: v for k, v in settings.items() if k not in ("trace_method", "trace_sketch")}
    return {**settings, "trace_method": method}


def plan(study: StudyConfig, trials: list[dict[str, Any]], config: HessianConfig) -> list[Job]:
    jobs = []
    # Left out, the method is the default, and a job measured under the earlier default (hutchinson) stands.
    earlier = (hessian_settings(config, "hutchinson"),) if config.trace_method is None else ()
    settings = hessian_settings(config, config.trace_method or DEFAULT_TRACE_METHOD)
    for trial_id in trial_ids(trials):
        jobs.append(Job("sharpness", "hessian", (trial_id,), settings, "hessian", earlier=earlier))
        if config.density is not None:
            density = {**asdict(config.density), "samples": config.samples, "batch": config.batch}
            jobs.append(Job("spectrum", "hessian_density", (trial_id,), density, "hessian"))
    return jobs


# Typical Hessian-vector products where the algorithms stop adaptively, for the cost estimate (seen on VGG9
# width 0.25 trained on CIFAR-10, study.bench_trace and the issue-25 mini study): power iteration to a
# 1e-3 relative change; Hutchinson to a 2% standard error; Hutch++'s residual draws past its sketch.
TYPICAL_POWER_ITERATIONS = 30
TYPICAL_HUTCHINSON_DRAWS = 500
TYPICAL_HUTCHPP_DRAWS = 40
TYPICAL_KRYLOV_STEPS, TYPICAL_KRYLOV_DRAWS = 20, 40


def cost(job: Job, part: Any, sizes: tuple[int | None, int | None]) -> Cost:
    settings = job.settings
    images = sample(settings["samples"], sizes[0])
    if job.kind == "hessian_density":
        return {"products": (settings["iterations"] * settings["runs"], images)}
    method = settings.get("trace_method", "hutchinson")
    if method == "krylov":  # one Lanczos run of at least trace_sketch steps serves both, then residual draws
        steps = max(settings["trace_sketch"], TYPICAL_KRYLOV_STEPS)
        residual = min(TYPICAL_KRYLOV_DRAWS, settings["trace_max_draws"]) if settings["trace"] else 0
        return {"products": (steps + residual, images)}
    products = settings["top_k"] * TYPICAL_POWER_ITERATIONS
    if settings["trace"]:
        if method == "hutchpp":
            traced = 2 * settings["trace_sketch"] + TYPICAL_HUTCHPP_DRAWS
        else:
            traced = TYPICAL_HUTCHINSON_DRAWS
        products += min(traced, settings["trace_max_draws"])
    return {"products": (products, images)}


def run_spectrum(job: Job, inputs: TaskInputs, part: Any) -> list[dict[str, Any]]:
    """Top-k eigenvalues by power iteration with deflation; the trace by Hutchinson's estimator (or
    Hutch++); or both from one Lanczos run (`trace_method: krylov`)."""
    from trainables.sharpness import top_eigenvalues

    f, settings = training_loss(job, inputs), job.settings
    if settings.get("trace_method") == "krylov":
        return krylov_rows(job, f, settings)
    # PyHessian's stopping rule: relative change below 1e-3, at most 100 iterations.
    expected = cost(job, part, (f.row["n_samples"], None))["products"][0]
    images = f.row["n_samples"]

    def said(index: int, iteration: int, value: float) -> None:
        done = index * TYPICAL_POWER_ITERATIONS + iteration
        progress(done, expected, "products", images, f"eigenvalue {index + 1}: {iteration} products, {value:.4g}")

    eig = top_eigenvalues(
        f.loss, f.batches, f.params, k=settings["top_k"], tolerance=1e-3, generator=f.generator, on_iteration=said
    )
    algorithm = "power iteration with deflation on Hessian-vector products; k-th largest in magnitude"
    rows = eigenvalue_rows(f, eig, algorithm)
    if settings["trace"]:
        rows.append(trace_row(f, settings, sum(eig.iterations), expected))
    return rows


def krylov_rows(job: Job, f: Any, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The top-k eigenvalues and the trace from one Lanczos run (trainables.sharpness.krylov_spectrum)."""
    from trainables.sharpness import hessian_krylov

    images, expected = f.row["n_samples"], cost(job, None, (f.row["n_samples"], None))["products"][0]
    found = hessian_krylov(
        f.loss,
        f.batches,
        f.params,
        top_k=settings["top_k"],
        trace=settings["trace"],
        min_steps=settings["trace_sketch"] if settings["trace"] else max(settings["top_k"] + 1, KRYLOV_MIN_STEPS_EIGEN),
        max_steps=KRYLOV_MAX_STEPS,
        tolerance=1e-3,
        rel_error=settings["trace_rel_error"],
        max_products=settings["trace_max_draws"],
        generator=f.generator,
        on_product=lambda n, phase: (
            progress(n, expected, "products", images, f"Lanczos {n} products") if phase == "lanczos" else None
        ),
        on_draw=trace_progress(f, settings["trace_rel_error"], 0, expected),
    )
    algorithm = (
        "Lanczos with full reorthogonalization from a Rademacher start: Ritz values, converged when the "
        "residual bound |beta s| <= 1e-3 x |value|; k-th largest in magnitude"
    )
    rows = eigenvalue_rows(f, found.eigen, algorithm, [{"residual_bound": bound} for bound in found.bounds])
    if found.trace is not None:
        trace_algorithm = (
            f"Krylov-deflated Hutchinson: the {found.steps}-step Lanczos space of the eigenvalues traced exactly "
            "(the sum of its diagonal, no further product), Hutchinson on the projected rest"
        )
        rows.append(trace_values(f, settings, found.trace, trace_algorithm, found.trace.products))
    return rows


KRYLOV_MAX_STEPS = 100  # as power iteration's cap (PyHessian's)
# Without the trace, the space need not be a sketch of trace_sketch vectors: the residual bound decides from
# this many steps on (the top Ritz values converge first; power iteration stopped after 6-30 products)
KRYLOV_MIN_STEPS_EIGEN = 10


def eigenvalue_rows(
    f: Any, eigen: Any, algorithm: str, extra: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """One `hessian_eig<i>` row per eigenvalue found, each recording its iterations, convergence and
    algorithm (and `extra[i]`, where the algorithm says more of it)."""
    extra = extra or [{} for _ in eigen.values]
    return [
        {
            **f.row,
            "measure": f"hessian_eig{i + 1}",
            "value": value,
            "settings": json.dumps({**f.settings, "iterations": it, "converged": ok, **more, "algorithm": algorithm}),
        }
        for i, (value, it, ok, more) in enumerate(zip(eigen.values, eigen.iterations, eigen.converged, extra))
    ]


def trace_progress(f: Any, target: float, before: int, expected: float | None) -> Callable[[Any], None]:
    """What a trace estimator tells after each draw (a TraceEstimate so far), as progress: products done,
    the standard error against its target, and the products still needed if it keeps falling as
    1/sqrt(draws); `before` products of the same job came first (its eigenvalues)."""

    def said(running: Any) -> None:
        if running.samples == 0:  # Hutch++'s sketch
            progress(
                before + running.products,
                expected,
                "products",
                f.row["n_samples"],
                f"trace sketch {running.products}/{2 * running.sketch} products",
            )
            return
        error = running.std_error / abs(running.value) if running.value and running.samples > 1 else math.inf
        more = running.samples * max(0.0, (error / target) ** 2 - 1) if math.isfinite(error) else math.nan
        done = before + running.products
        total = done + more if math.isfinite(more) else expected
        se = f"s.e. {error:.1%} -> {target:.0%}" if math.isfinite(error) else "s.e. ?"
        progress(done, total, "products", f.row["n_samples"], f"trace {running.products} products, {se}")

    return said


def trace_row(f: Any, settings: dict[str, Any], before: int = 0, expected: float | None = None) -> dict[str, Any]:
    """The trace's row; `before` products were spent on the eigenvalues of the same job (for progress)."""
    from trainables.sharpness import hessian_trace, hessian_trace_by

    method = settings.get("trace_method", "hutchinson")
    said = trace_progress(f, settings["trace_rel_error"], before, expected)

    if method == "hutchinson":
        trace = hessian_trace(
            f.loss,
            f.batches,
            f.params,
            rel_error=settings["trace_rel_error"],
            max_samples=settings["trace_max_draws"],
            generator=f.generator,
            on_draw=said,
        )
        algorithm, products = "Hutchinson, Rademacher vectors", trace.samples
    else:
        trace = hessian_trace_by(
            f.loss,
            f.batches,
            f.params,
            method=method,
            sketch=settings["trace_sketch"],
            rel_error=settings["trace_rel_error"],
            max_products=settings["trace_max_draws"],
            generator=f.generator,
            on_draw=said,
        )
        algorithm = f"Hutch++ (Meyer et al. 2021): rank-{trace.sketch} sketch traced exactly, Hutchinson on the rest"
        products = trace.products
    return trace_values(f, settings, trace, algorithm, products)


def trace_values(f: Any, settings: dict[str, Any], trace: Any, algorithm: str, products: int) -> dict[str, Any]:
    """The trace's row from its estimate, with its 95% interval; a line on stderr where it stopped short."""
    if not trace.converged:
        print(
            f"measure: {f.trial_id} Hessian trace stopped at {trace.samples} draws with standard error "
            f"{trace.std_error / abs(trace.value):.1%} of the value (asked {settings['trace_rel_error']:.1%}); "
            "raise measure.hessian.trace_max_draws",
            file=sys.stderr,
        )
    recorded = {
        **f.settings,
        "std_error": trace.std_error,
        "hutchinson_samples": trace.samples,
        "hessian_vector_products": products,
        "converged": trace.converged,
        "interval": "95% normal, mean +- 1.96 standard errors",
        "algorithm": algorithm,
    }
    return {
        **f.row,
        "measure": "hessian_trace",
        "value": trace.value,
        "ci_low": trace.value - 1.96 * trace.std_error,
        "ci_high": trace.value + 1.96 * trace.std_error,
        "settings": json.dumps(recorded),
    }


def run_density(job: Job, inputs: TaskInputs, part: Any) -> list[dict[str, Any]]:
    """The eigenvalue density on a grid (stochastic Lanczos quadrature), its nodes and weights recorded."""
    from trainables.sharpness import density_on_grid, hessian_spectrum

    f, settings = training_loss(job, inputs), job.settings
    products = settings["iterations"] * settings["runs"]
    progress(0, products, "products", f.row["n_samples"], f"density: {products} Lanczos products")
    quadrature = hessian_spectrum(
        f.loss, f.batches, f.params, iterations=settings["iterations"], runs=settings["runs"], generator=f.generator
    )
    grid, density = density_on_grid(quadrature, bins=settings["bins"], sigma_squared=settings["sigma_squared"])
    recorded = json.dumps(
        {
            **f.settings,
            "n_samples": f.row["n_samples"],
            "device": f.row["device"],
            "nodes": quadrature.nodes,
            "weights": quadrature.weights,
            "algorithm": "stochastic Lanczos quadrature (Ghorbani et al. 2019), full "
            "reorthogonalization, Rademacher starts, Gaussian smoothing",
        }
    )
    return [
        {"trial_id": f.trial_id, "eigenvalue": float(x), "density": float(y), "settings": recorded}
        for x, y in zip(grid, density)
    ]


register(
    Measure(
        "hessian",
        HessianConfig,
        validate,
        plan,
        {"hessian": run_spectrum, "hessian_density": run_density},
        cost=cost,
        doc="the training loss's top Hessian eigenvalues and trace, optionally its eigenvalue density",
        shown=shown,
    )
)
