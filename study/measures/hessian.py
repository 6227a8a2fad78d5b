"""The Hessian of the training loss: top eigenvalues, trace (PyHessian's algorithms) and eigenvalue density."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from study.errors import MAX_BATCH, MAX_IMAGES, check, ranged
from study.measures.base import Job, Measure, Shown, TaskInputs, register
from study.measures.common import training_loss

if TYPE_CHECKING:
    import pandas as pd

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
    # few eigenvalues dominate; trainables.sharpness.trace_estimate)
    trace_method: Literal["hutchinson", "hutchpp"] = "hutchinson"
    trace_sketch: int = ranged(20, 1, 1000)
    # images per forward pass, the same on every device (BN in eval mode: no effect but rounding)
    batch: int = ranged(512, 1, MAX_BATCH)
    density: DensityConfig | None = None  # `density:` alone means the defaults


UNIT = "loss / weight^2"


def eigenvalue_shown(i: int) -> Shown:
    return Shown("Hessian top eigenvalue" if i == 1 else f"Hessian eigenvalue {i}", f"lambda_{i} ({UNIT})", "lower")


TRACE = Shown("Hessian trace", f"trace ({UNIT})", "lower")


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


def plan(study: StudyConfig, trials: pd.DataFrame, config: HessianConfig) -> list[Job]:
    jobs = []
    for trial_id in trials["trial_id"]:
        settings = {k: v for k, v in asdict(config).items() if k != "density"}
        if config.trace_method == "hutchinson":  # as before these keys existed: the same job, the same file
            settings = {k: v for k, v in settings.items() if k not in ("trace_method", "trace_sketch")}
        jobs.append(Job("sharpness", "hessian", (trial_id,), settings, "hessian"))
        if config.density is not None:
            density = {**asdict(config.density), "samples": config.samples, "batch": config.batch}
            jobs.append(Job("spectrum", "hessian_density", (trial_id,), density, "hessian"))
    return jobs


def run_spectrum(job: Job, inputs: TaskInputs, part: Any) -> list[dict[str, Any]]:
    """Top-k eigenvalues by power iteration with deflation; the trace by Hutchinson's estimator."""
    from trainables.sharpness import top_eigenvalues

    f, settings = training_loss(job, inputs), job.settings
    # PyHessian's stopping rule: relative change below 1e-3, at most 100 iterations.
    eig = top_eigenvalues(f.loss, f.batches, f.params, k=settings["top_k"], tolerance=1e-3, generator=f.generator)
    algorithm = "power iteration with deflation on Hessian-vector products; k-th largest in magnitude"
    rows = [
        {
            **f.row,
            **eigenvalue_shown(i + 1).columns(),
            "measure": f"hessian_eig{i + 1}",
            "value": value,
            "settings": json.dumps({**f.settings, "iterations": it, "converged": ok, "algorithm": algorithm}),
        }
        for i, (value, it, ok) in enumerate(zip(eig.values, eig.iterations, eig.converged))
    ]
    if settings["trace"]:
        rows.append(trace_row(f, settings))
    return rows


def trace_row(f: Any, settings: dict[str, Any]) -> dict[str, Any]:
    from trainables.sharpness import hessian_trace, hessian_trace_by

    method = settings.get("trace_method", "hutchinson")
    if method == "hutchinson":
        trace = hessian_trace(
            f.loss,
            f.batches,
            f.params,
            rel_error=settings["trace_rel_error"],
            max_samples=settings["trace_max_draws"],
            generator=f.generator,
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
        )
        algorithm = f"Hutch++ (Meyer et al. 2021): rank-{trace.sketch} sketch traced exactly, Hutchinson on the rest"
        products = trace.products
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
        **TRACE.columns(),
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
        doc="the training loss's top Hessian eigenvalues and trace, optionally its eigenvalue density",
    )
)
