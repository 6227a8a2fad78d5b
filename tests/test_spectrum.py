"""Hessian eigenvalue density by stochastic Lanczos quadrature, against matrices of known spectrum."""

import numpy as np
import pytest
import torch
from torch import nn

from trainables.sharpness import density_on_grid, hessian_spectrum, spectral_quadrature

SPECTRUM = np.array([-0.5, 0.1, 0.1, 0.2, 1.0, 1.0, 1.0, 3.0, 7.5, 20.0])


def known_operator(seed: int = 0):
    """A random orthogonal basis around a known spectrum: H = Q diag(SPECTRUM) Q^T."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(SPECTRUM), len(SPECTRUM))))
    matrix = torch.tensor(q @ np.diag(SPECTRUM) @ q.T)
    return lambda v: [matrix @ v[0]], [torch.zeros(len(SPECTRUM), dtype=torch.float64)]


def test_lanczos_nodes_are_the_eigenvalues_when_the_krylov_space_is_full() -> None:
    matvec, like = known_operator()
    quadrature = spectral_quadrature(matvec, like, iterations=40, runs=3, generator=torch.Generator().manual_seed(0))
    distinct = np.unique(SPECTRUM)
    for nodes, weights in zip(quadrature.nodes, quadrature.weights):
        assert len(nodes) == len(distinct)  # stopped once the space was exhausted, no ghost copies
        assert np.allclose(np.sort(nodes), distinct, atol=1e-8)
        assert sum(weights) == pytest.approx(1.0, abs=1e-12)


def test_quadrature_moments_match_the_normalized_traces() -> None:
    """Averaged over runs, sum_j w_j node_j^k estimates tr(H^k) / n (exact per run for k < 2m)."""
    matvec, like = known_operator(1)
    quadrature = spectral_quadrature(matvec, like, iterations=4, runs=400, generator=torch.Generator().manual_seed(1))
    for k in (1, 2):
        estimate = np.mean([np.dot(w, np.asarray(n) ** k) for n, w in zip(quadrature.nodes, quadrature.weights)])
        assert estimate == pytest.approx(np.mean(SPECTRUM**k), rel=0.08), k


def test_density_integrates_to_one_and_puts_each_eigenvalues_mass_at_it() -> None:
    matvec, like = known_operator(2)
    quadrature = spectral_quadrature(matvec, like, iterations=10, runs=200, generator=torch.Generator().manual_seed(2))
    grid, density = density_on_grid(quadrature, bins=20000, sigma_squared=1e-5)
    step = grid[1] - grid[0]
    assert density.sum() * step == pytest.approx(1.0, rel=1e-3)
    for value in np.unique(SPECTRUM):  # mass within +-0.05 of each eigenvalue = its multiplicity / n
        near = np.abs(grid - value) < 0.05
        assert density[near].sum() * step == pytest.approx(np.mean(SPECTRUM == value), abs=0.05), value
    assert grid.min() < SPECTRUM.min() and grid.max() > SPECTRUM.max()


def test_hessian_spectrum_of_least_squares_is_its_closed_form() -> None:
    """loss = |X w - y|^2 / (2n) has Hessian X^T X / n; X is built so that this is diag(SPECTRUM >= 0)."""
    spectrum = np.abs(SPECTRUM)
    n, d = 200, len(spectrum)
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(n, d)))
    X = torch.tensor(np.sqrt(n) * q * np.sqrt(spectrum))
    y = torch.randn(n, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()

    def loss_fn(batch):
        return 0.5 * (model(batch[0]).squeeze(1) - batch[1]).square().mean()

    quadrature = hessian_spectrum(
        loss_fn,
        [(X[:120], y[:120]), (X[120:], y[120:])],
        list(model.parameters()),
        iterations=30,
        runs=2,
        generator=torch.Generator().manual_seed(3),
    )
    for nodes in quadrature.nodes:
        assert np.allclose(np.sort(nodes), np.unique(spectrum), atol=1e-7)


def test_the_stored_density_is_the_smoothed_density_not_an_aliased_sample() -> None:
    """A spectrum 10 wide (PyHessian's kernel: sigma = 0.01) at the default 1,000 bins was sampled every
    4 kernel widths: 0.38 from the smoothed density in L1. The stored curve, read as the figure draws it
    (straight lines between grid points), must be within 1% of the exact smoothed density."""
    from trainables.sharpness import SpectralQuadrature

    rng = np.random.default_rng(5)
    nodes = [list(np.sort(rng.uniform(-1.0, 9.0, size=30))) for _ in range(3)]
    weights = [list(w / w.sum()) for w in rng.uniform(0.1, 1.0, size=(3, 30))]
    quadrature = SpectralQuadrature(nodes, weights)
    grid, density = density_on_grid(quadrature, bins=1000, sigma_squared=1e-5)
    variance = 1e-5 * (max(map(max, nodes)) - min(map(min, nodes)))
    fine = np.linspace(grid[0], grid[-1], 400_000)
    exact = np.zeros_like(fine)
    for n, w in zip(nodes, weights):
        for node, weight in zip(n, w):
            exact += weight * np.exp(-((fine - node) ** 2) / (2 * variance)) / np.sqrt(2 * np.pi * variance)
    exact /= len(nodes)
    drawn = np.interp(fine, grid, density)
    l1 = float(np.abs(drawn - exact).sum() * (fine[1] - fine[0]))
    assert l1 < 0.01, l1
    assert drawn.max() == pytest.approx(exact.max(), rel=0.02)
    assert len(grid) > 1000  # the grid came from the kernel width, not the default count
