
import numpy as np
import pytest
import torch
from torch import nn

from trainables.data import Normalizer, Split
from trainables.landscape import displaced, evaluate_state, filter_normalized_direction, interpolate
from trainables.loop import Runtime
from trainables.models import vgg9
from trainables.sharpness import eps_sharpness, hessian_trace, noise_scale, top_eigenvalues

CPU = Runtime(torch.device("cpu"))


def least_squares(n: int = 400, d: int = 12, seed: int = 0):
    """loss(w) = |X w - y|^2 / (2n): its Hessian is X^T X / n, known in closed form."""
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=generator, dtype=torch.float64) * torch.linspace(0.3, 3.0, d, dtype=torch.float64)
    y = torch.randn(n, generator=generator, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    batches = [(X[i:i + 100], y[i:i + 100]) for i in range(0, n, 100)]

    def loss_fn(batch):
        x, t = batch
        return 0.5 * (model(x).squeeze(1) - t).square().mean()

    hessian = (X.T @ X / n).numpy()
    return model, batches, loss_fn, hessian


def test_top_eigenvalues_match_numpy_within_one_percent() -> None:
    model, batches, loss_fn, hessian = least_squares()
    eig = top_eigenvalues(loss_fn, batches, list(model.parameters()), k=3, max_iterations=500, tolerance=1e-10,
                          generator=torch.Generator().manual_seed(1))
    expected = np.sort(np.linalg.eigvalsh(hessian))[::-1][:3]
    assert np.allclose(eig.values, expected, rtol=0.01), (eig.values, expected)


def test_hutchinson_trace_is_within_its_statistical_error() -> None:
    model, batches, loss_fn, hessian = least_squares()
    estimate = hessian_trace(loss_fn, batches, list(model.parameters()), samples=200,
                             generator=torch.Generator().manual_seed(2))
    assert abs(estimate.value - np.trace(hessian)) < 4 * estimate.std_error
    assert estimate.std_error > 0 and estimate.samples == 200


def test_filter_normalized_direction_matches_filter_norms_and_zeros_bias_bn() -> None:
    torch.manual_seed(0)
    model = vgg9(width=0.25)
    direction = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    for name, weight in model.named_parameters():
        d = direction[name]
        if weight.dim() <= 1:
            assert torch.count_nonzero(d) == 0, name  # biases, BN scale and shift
        else:
            assert torch.allclose(d.flatten(1).norm(dim=1), weight.detach().flatten(1).norm(dim=1), rtol=1e-5), name
    assert set(direction) == {n for n, _ in model.named_parameters()}  # BN running statistics are not moved


def small_split(n: int = 64) -> tuple[Split, Normalizer]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return Split(images, labels), Normalizer((0.5,) * 3, (0.25,) * 3, "cpu")


def trained_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = vgg9(width=0.25)
    model.train()
    with torch.no_grad():  # move the BN statistics away from their initial values
        model(torch.randn(32, 3, 32, 32))
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_interpolation_endpoints_reproduce_each_models_own_loss() -> None:
    split, normalize = small_split()
    a, b = trained_state(0), trained_state(1)
    model = vgg9(width=0.25)
    for alpha, own in ((0.0, a), (1.0, b)):
        reference = vgg9(width=0.25)
        reference.load_state_dict(own)
        assert evaluate_state(model, interpolate(a, b, alpha), split, normalize, CPU) == \
            evaluate_state(reference, own, split, normalize, CPU)
    middle = interpolate(a, b, 0.5)
    key = "features.1.running_mean"  # BN statistics are interpolated too
    assert torch.allclose(middle[key], (a[key] + b[key]) / 2)


def test_displaced_moves_only_along_the_direction() -> None:
    state = trained_state(0)
    model = vgg9(width=0.25)
    model.load_state_dict(state)
    direction = filter_normalized_direction(model, torch.Generator().manual_seed(3))
    moved = displaced(state, [direction], [0.5])
    name = "features.0.weight"
    assert torch.allclose(moved[name], state[name] + 0.5 * direction[name])
    assert torch.equal(moved["features.1.running_var"], state["features.1.running_var"])


def test_eps_sharpness_is_nonnegative_and_grows_with_eps() -> None:
    torch.manual_seed(0)
    X, y = torch.randn(200, 10), torch.randint(0, 3, (200,))
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3))
    batches = [(X[:100], y[:100]), (X[100:], y[100:])]
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]

    def loss_fn(batch):
        return nn.functional.cross_entropy(model(batch[0]), batch[1])

    values = [eps_sharpness(loss_fn, batches, params, eps) for eps in (1e-4, 1e-3, 1e-2, 1e-1)]
    assert all(v >= 0 for v in values) and values == sorted(values) and values[-1] > values[0] > 0
    assert all(torch.equal(p, q) for p, q in zip(params, before))  # the model is left as it was


def test_noise_scale_recovers_a_known_value_within_ten_percent() -> None:
    """Per-example gradients G + noise with known tr(Sigma): B_simple = tr(Sigma) / |G|^2."""
    rng = np.random.default_rng(0)
    dim = 50
    G = rng.normal(size=dim)
    sigma = rng.uniform(0.5, 2.0, size=dim)
    true_b = float((sigma ** 2).sum() / (G ** 2).sum())

    def mean_sq_norm(batch: int, draws: int = 4000) -> float:
        grads = G + rng.normal(size=(draws, batch, dim)).mean(axis=1) * sigma
        return float((grads ** 2).sum(axis=1).mean())

    estimate = noise_scale(8, mean_sq_norm(8), 64, mean_sq_norm(64))
    assert estimate["b_simple"] == pytest.approx(true_b, rel=0.10)
    assert estimate["trace_sigma"] == pytest.approx((sigma ** 2).sum(), rel=0.10)
