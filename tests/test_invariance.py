"""Sharpness under a change of axes (Dinh et al. 2017): in a BatchNorm network, scaling the weights (and
bias) of every convolution that feeds a BatchNorm by c = 10 changes nothing the network computes. Which
measures see the same minimum, and which move, by the factor expected?

Known answers on a small BatchNorm CNN in float64 (eval-mode BatchNorm with eps 0, its running mean and
variance rescaled with the layer, so that the function is unchanged to rounding)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

from trainables.landscape import displaced, filter_normalized_direction
from trainables.sharpness import adaptive_sharpness, eps_sharpness, hessian_krylov

C = 10.0


def network() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 5, 3, padding=1),
        nn.BatchNorm2d(5),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    ).double()
    images = torch.randn(48, 3, 6, 6, dtype=torch.float64)
    labels = torch.randint(0, 3, (48,))
    model.train()
    with torch.no_grad():  # running statistics from the data, then a few steps to leave initialization
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None  # a cumulative average: the statistics of the data
        model(images)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 0.0  # eval mode only from here: the rescaling is then exact
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.eval()
    for _ in range(30):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return model, [(images[:24], labels[:24]), (images[24:], labels[24:])]


def rescaled(model: nn.Module, c: float) -> nn.Module:
    """Every conv that feeds a BatchNorm, times c, with the BN's running statistics: the same function."""
    out = copy.deepcopy(model)
    layers = list(out)
    with torch.no_grad():
        for conv, bn in zip(layers, layers[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                conv.weight.mul_(c)
                conv.bias.mul_(c)
                bn.running_mean.mul_(c)
                bn.running_var.mul_(c * c)
    return out


def loss_of(model: nn.Module):
    def loss(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(model(batch[0]), batch[1])

    return loss


def mean_loss(model: nn.Module, batches) -> float:
    with torch.no_grad():
        return sum(float(loss_of(model)(b)) * len(b[1]) for b in batches) / sum(len(b[1]) for b in batches)


def full_hessian(model: nn.Module, batches) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    buffers = dict(model.named_buffers())
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])

    def loss(vector: torch.Tensor) -> torch.Tensor:
        params = {n: v.view(s) for n, v, s in zip(names, vector.split(sizes), shapes)}
        return nn.functional.cross_entropy(functional_call(model, (params, buffers), (images,)), labels)

    return torch.autograd.functional.hessian(loss, flat)


def scaling(model: nn.Module, c: float) -> torch.Tensor:
    """D: the rescaling as a diagonal over the flat parameters (c on the convolutions', 1 elsewhere)."""
    parts = [
        torch.full((p.numel(),), c if name.startswith(("0.", "3.")) else 1.0, dtype=torch.float64)
        for name, p in model.named_parameters()
    ]
    return torch.cat(parts)


@pytest.fixture(scope="module")
def pair():
    model, batches = network()
    return model.eval(), rescaled(model, C).eval(), batches


def test_the_rescaled_network_computes_the_same_function(pair) -> None:
    model, other, batches = pair
    assert not torch.allclose(model[0].weight, other[0].weight)
    for images, _ in batches:
        with torch.no_grad():
            assert torch.allclose(model(images), other(images), rtol=1e-10, atol=1e-12)


def test_filter_normalized_slices_are_invariant(pair) -> None:
    """Each direction filter takes its weight filter's norm, so it scales by c with the layer: theta' +
    a d' is the rescaled theta + a d, and the loss along the slice is the same at every a."""
    model, other, batches = pair
    for net in (model, other):
        net.direction = filter_normalized_direction(net, torch.Generator().manual_seed(7))
    for a in (-1.0, -0.3, 0.5, 1.0):
        losses = []
        for net in (model, other):
            probe = copy.deepcopy(net)
            probe.load_state_dict(displaced(net.state_dict(), [net.direction], [a]))
            losses.append(mean_loss(probe.eval(), batches))
        assert losses[0] == pytest.approx(losses[1], rel=1e-9), a
    assert mean_loss(model, batches) != pytest.approx(losses[0], rel=1e-3)  # the slice does move the loss


def test_adaptive_sharpness_is_invariant_and_keskars_eps_sharpness_is_not(pair) -> None:
    model, other, batches = pair
    adaptive = [adaptive_sharpness(loss_of(net), batches, list(net.parameters()), 0.05).value for net in (model, other)]
    assert adaptive[0] > 0 and adaptive[0] == pytest.approx(adaptive[1], rel=1e-6)
    keskar = [eps_sharpness(loss_of(net), batches, list(net.parameters()), 5e-3).value for net in (model, other)]
    # |y| <= eps (|x| + 1): for the rescaled layers the box is no longer the rescaled box (the + 1 does
    # not scale), so the same function gets another value.
    assert abs(keskar[1] - keskar[0]) > 0.05 * keskar[0], keskar


def test_the_hessian_moves_by_the_expected_factor(pair) -> None:
    """H' = D^-1 H D^-1 (D = c on the rescaled layers): the rescaled layers' block of the trace falls by
    exactly 1/c^2, the whole trace and the top eigenvalue change accordingly, and our Lanczos estimator
    finds the eigenvalue that formula predicts."""
    model, other, batches = pair
    h, h_other = full_hessian(model, batches), full_hessian(other, batches)
    d = scaling(model, C)
    assert torch.allclose(h_other, h / d[:, None] / d[None, :], rtol=1e-6, atol=1e-9)
    block = d > 1
    assert float(h_other.diagonal()[block].sum()) == pytest.approx(float(h.diagonal()[block].sum()) / C**2, rel=1e-6)
    top, top_other = (float(torch.linalg.eigvalsh(m).abs().max()) for m in (h, h_other))
    assert abs(top_other - top) > 0.05 * top  # not invariant
    predicted = float(torch.linalg.eigvalsh(h / d[:, None] / d[None, :]).abs().max())
    found = hessian_krylov(loss_of(other), batches, list(other.parameters()), top_k=1, trace=True, min_steps=40)
    assert found.eigen.values[0] == pytest.approx(predicted, rel=1e-4)
    assert found.trace.value == pytest.approx(float(h_other.trace()), rel=0.05)


def test_the_interpolation_line_moves_when_one_end_is_rescaled(pair) -> None:
    """theta(a) = (1 - a) theta_A + a theta_B: rescaling a layer of A (the same function at a = 0) moves
    every interior point, so the line and its curvature are not invariant."""
    from trainables.landscape import interpolate

    model, other, batches = pair
    b, _ = network()
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.3 * torch.randn_like(p))
    moved = []
    for a in (0.25, 0.5, 0.75, 0.9):
        losses = []
        for a_end in (model, other):
            probe = copy.deepcopy(model)
            probe.load_state_dict(interpolate(a_end.state_dict(), b.state_dict(), a))
            losses.append(mean_loss(probe.eval(), batches))
        moved.append(abs(losses[1] - losses[0]) / losses[0])
    assert max(moved) > 0.02, moved
