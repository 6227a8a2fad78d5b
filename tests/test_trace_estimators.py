"""Hutch++ against Hutchinson on operators of known trace: known answers on flat, power-law and
outlier-plus-bulk spectra and on a small network's exact Hessian, the coverage of their intervals over
repeated runs, and how many products each needs for a 2% standard error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_sharpness_landscape import least_squares

from trainables.sharpness import (
    KrylovSpectrum,
    hessian_krylov,
    hessian_trace,
    hessian_trace_by,
    krylov_spectrum,
    trace_estimate,
)

DIM = 300


def operator(spectrum: np.ndarray, seed: int = 0) -> torch.Tensor:
    """A symmetric matrix with these eigenvalues in a random orthonormal basis (trace = their sum)."""
    basis, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(spectrum), len(spectrum))))
    return torch.tensor(basis @ np.diag(spectrum) @ basis.T, dtype=torch.float64)


SPECTRA = {
    "flat": 1.0 + 0.1 * np.random.default_rng(1).standard_normal(DIM),
    "power law": 100.0 * np.arange(1, DIM + 1, dtype=float) ** -1.5,
    "outliers and bulk": np.concatenate(
        [[400.0, 250.0, 150.0, 90.0, 60.0], np.random.default_rng(2).uniform(0, 1, DIM - 5)]
    ),
}


def estimate(matrix: torch.Tensor, method: str, seed: int, rel_error: float = 0.02, **extra: int):
    if method == "krylov":
        return spectrum(matrix, seed, rel_error=rel_error, **extra).trace
    return trace_estimate(
        lambda v: matrix @ v,
        matrix.shape[0],
        method=method,
        rel_error=rel_error,
        max_products=20_000,
        generator=torch.Generator().manual_seed(seed),
        dtype=torch.float64,
        **extra,
    )


def spectrum(matrix: torch.Tensor, seed: int, **extra: float) -> KrylovSpectrum:
    return krylov_spectrum(
        lambda v: matrix @ v,
        matrix.shape[0],
        max_products=20_000,
        generator=torch.Generator().manual_seed(seed),
        dtype=torch.float64,
        **extra,
    )


@pytest.mark.parametrize("name", SPECTRA)
@pytest.mark.parametrize("method", ["hutchinson", "hutchpp", "krylov"])
def test_known_traces_are_found_within_their_standard_error(name: str, method: str) -> None:
    matrix, truth = operator(SPECTRA[name]), float(SPECTRA[name].sum())
    found = estimate(matrix, method, seed=3)
    assert found.converged and found.std_error <= 0.02 * abs(found.value)
    assert abs(found.value - truth) <= 4 * found.std_error + 1e-9, (found, truth)
    sketch = 1 if method == "krylov" else 2  # Lanczos: one product per basis vector, Hutch++ two
    assert found.method == method and found.products == found.samples + sketch * found.sketch


@pytest.mark.parametrize("budget", [10, 20, 21])
def test_a_krylov_trace_whose_budget_ends_before_two_residual_draws_has_no_interval(budget: int) -> None:
    """A product budget the Lanczos run (20 steps) uses up leaves the rest of the trace unmeasured: no
    interval (main reported the Krylov space's part with a standard error of 0). Two draws give one."""
    matrix = operator(SPECTRA[next(iter(SPECTRA))])
    found = krylov_spectrum(
        lambda v: matrix @ v,
        matrix.shape[0],
        max_products=budget,
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
    ).trace
    assert not found.converged and math.isnan(found.std_error)
    more = krylov_spectrum(
        lambda v: matrix @ v,
        matrix.shape[0],
        max_products=22,
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
    ).trace
    assert more.samples == 2 and more.std_error > 0


@pytest.mark.parametrize("name", SPECTRA)
def test_one_krylov_space_gives_the_top_eigenvalues_and_the_trace(name: str) -> None:
    """The top 3 eigenvalues (largest in magnitude) to the residual bound, from the Lanczos products that
    also serve the trace as its exactly-traced part: fewer products than Hutch++ alone, eigenvalues free."""
    matrix, values = operator(SPECTRA[name]), SPECTRA[name]
    found = spectrum(matrix, seed=3, top_k=3)
    top = sorted(values, key=abs, reverse=True)[:3]
    assert all(found.eigen.converged) and found.eigen.iterations == [found.steps] * 3
    for value, truth, bound in zip(found.eigen.values, top, found.bounds):
        assert abs(value - truth) <= max(bound, 1e-9 * abs(truth)) and bound <= 1e-3 * abs(truth)
    sketched = [estimate(matrix, "hutchpp", seed).products for seed in range(5)]
    assert found.trace.products < np.median(sketched), (found.trace.products, sketched)


@pytest.mark.parametrize("name", ["power law", "outliers and bulk"])
def test_hutchpp_needs_far_fewer_products_where_a_few_eigenvalues_dominate(name: str) -> None:
    matrix = operator(SPECTRA[name])
    plain = [estimate(matrix, "hutchinson", seed).products for seed in range(5)]
    sketched = [estimate(matrix, "hutchpp", seed).products for seed in range(5)]
    assert np.median(plain) > 3 * np.median(sketched), (plain, sketched)


@pytest.mark.parametrize("name", SPECTRA)
@pytest.mark.parametrize("method", ["hutchinson", "hutchpp", "krylov"])
def test_the_95_percent_intervals_cover_the_trace_about_95_percent_of_the_time(name: str, method: str) -> None:
    matrix, truth = operator(SPECTRA[name], seed=4), float(SPECTRA[name].sum())
    runs = [estimate(matrix, method, seed, rel_error=0.05) for seed in range(200)]
    covered = np.mean([abs(r.value - truth) <= 1.96 * r.std_error for r in runs])
    assert 0.89 <= covered <= 0.995, covered  # binomial sd of the rate over 200 runs: 1.5 points


def test_hutchpp_on_a_small_network_matches_its_exact_hessian_trace() -> None:
    model, batches, loss_fn, hessian = least_squares()
    params = list(model.parameters())
    found = hessian_trace_by(loss_fn, batches, params, sketch=5, generator=torch.Generator().manual_seed(5))
    truth = float(np.trace(hessian))
    assert found.converged and abs(found.value - truth) <= 4 * found.std_error + 1e-6 * abs(truth)
    plain = hessian_trace(loss_fn, batches, params, generator=torch.Generator().manual_seed(5))
    assert abs(plain.value - truth) <= 4 * plain.std_error  # the same answer as the Hutchinson path
    assert math.isfinite(found.value) and found.products <= 1000


def test_krylov_on_a_small_network_matches_its_exact_hessian() -> None:
    model, batches, loss_fn, hessian = least_squares()
    params = list(model.parameters())
    found = hessian_krylov(loss_fn, batches, params, top_k=2, min_steps=5, generator=torch.Generator().manual_seed(5))
    exact = np.linalg.eigvalsh(hessian)
    top = sorted(exact, key=abs, reverse=True)[:2]
    assert found.eigen.values == pytest.approx(top, rel=2e-3)
    truth = float(np.trace(hessian))
    assert found.trace.converged and abs(found.trace.value - truth) <= 4 * found.trace.std_error + 1e-5 * abs(truth)


# The job key main of 2026-12-07 wrote for trial "t" with every hessian setting left out: hutchinson was the
# default then (the name of the file such a store holds).
EARLIER_DEFAULT_KEY = "hessian-t-a4473b"


def test_a_changed_default_keeps_the_jobs_a_store_measured_under_the_earlier_one(tmp_path) -> None:
    """Left out, the trace is krylov's. A store whose hessian jobs were measured when hutchinson was the
    default keeps them (the same key, the method they recorded): nothing is measured twice, and study.measure
    finds nothing to do. A new store, or a method named in the study file, gets what it asks for."""
    import pandas as pd

    from analysis.store import ResultsStore
    from study.config import parse_study
    from study.measure import jobs_to_do
    from study.measures.base import as_stored
    from study.measures.hessian import HessianConfig, plan

    trials = [{"trial_id": "t"}]
    (default,) = plan(None, trials, HessianConfig())  # type: ignore[arg-type]
    assert default.settings["trace_method"] == "krylov" and default.key != EARLIER_DEFAULT_KEY
    (stored,) = as_stored([default], {"sharpness": {EARLIER_DEFAULT_KEY}})
    assert stored.key == EARLIER_DEFAULT_KEY and "trace_method" not in stored.settings  # hutchinson, as measured
    assert as_stored([default], {"sharpness": set()}) == [default]  # a new store: the new default
    (named,) = plan(None, trials, HessianConfig(trace_method="krylov"))  # type: ignore[arg-type]
    assert named.key == default.key and as_stored([named], {"sharpness": {EARLIER_DEFAULT_KEY}}) == [named]
    (hutchinson,) = plan(None, trials, HessianConfig(trace_method="hutchinson"))  # type: ignore[arg-type]
    assert hutchinson.key == EARLIER_DEFAULT_KEY  # named, it is the job it always was
    (sketched,) = plan(None, trials, HessianConfig(trace_method="hutchpp"))  # type: ignore[arg-type]
    assert sketched.settings["trace_method"] == "hutchpp" and sketched.key not in (default.key, EARLIER_DEFAULT_KEY)

    # Through the store: a finished trial whose hessian job was written under the earlier key: nothing to do.
    (tmp_path / "results" / "trials").mkdir(parents=True)
    row = {"trial_id": "t", "status": "completed", "spec": "{}", "checkpoint": ""}
    pd.DataFrame([row]).to_parquet(tmp_path / "results" / "trials" / "t.parquet")
    store = ResultsStore(str(tmp_path / "results"))
    store.write("sharpness", EARLIER_DEFAULT_KEY, [{"trial_id": "t", "measure": "hessian_trace", "value": 1.0}])
    jobs, todo = jobs_to_do(parse_study("name: s\nmeasure: {hessian: true}\n"), store)
    assert [j.key for j in jobs] == [EARLIER_DEFAULT_KEY] and todo == []
