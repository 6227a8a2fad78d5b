"""Ghost batch normalization (Hoffer et al. 2017): known answers against plain BatchNorm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.models import GhostBatchNorm2d, build_model, use_ghost_batch_norm


def twin_models(ghost_batch: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    plain = build_model("vgg9", width=0.25)
    ghost = build_model("vgg9", width=0.25)
    ghost.load_state_dict(plain.state_dict())
    use_ghost_batch_norm(ghost, ghost_batch)
    return plain, ghost


def test_a_ghost_batch_as_large_as_the_batch_is_plain_batchnorm_bit_for_bit() -> None:
    plain, ghost = twin_models(ghost_batch=16)
    assert list(plain.state_dict()) == list(ghost.state_dict())  # checkpoints and measurements see BatchNorm
    assert sum(isinstance(m, GhostBatchNorm2d) for m in ghost.modules()) == 7
    x = torch.randn(16, 3, 32, 32)
    out_plain, out_ghost = plain(x), ghost(x)
    assert torch.equal(out_plain, out_ghost)
    out_plain.square().sum().backward()
    out_ghost.square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), ghost.parameters()):
        assert torch.equal(a.grad, b.grad), name
    for (name, a), b in zip(plain.state_dict().items(), ghost.state_dict().values()):
        assert torch.equal(a, b), name


def test_each_ghost_batch_is_normalized_by_its_own_statistics() -> None:
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(3, momentum=0.1)
    ghost = nn.Sequential(nn.BatchNorm2d(3, momentum=0.1))
    ghost.load_state_dict({"0." + k: v for k, v in bn.state_dict().items()})
    use_ghost_batch_norm(ghost, 4)
    # Three ghost batches with very different means: each is centred on its own.
    x = torch.cat([torch.randn(4, 3, 5, 5) + shift for shift in (-3.0, 0.0, 5.0)])
    out = ghost(x)
    for i in range(3):
        chunk = x[4 * i : 4 * i + 4]
        mean = chunk.mean(dim=(0, 2, 3), keepdim=True)
        var = chunk.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        expected = (chunk - mean) / torch.sqrt(var + bn.eps)  # weight 1, bias 0
        assert torch.allclose(out[4 * i : 4 * i + 4], expected, atol=1e-5)
        assert out[4 * i : 4 * i + 4].mean(dim=(0, 2, 3)).abs().max() < 1e-5
    # Running statistics: one momentum update per ghost batch, in order (Algorithm 1):
    # mu = 0.9^3 mu_0 + 0.9^2 0.1 mu_1 + 0.9 0.1 mu_2 + 0.1 mu_3, with mu_0 = 0; variances unbiased per batch.
    means = [x[4 * i : 4 * i + 4].mean(dim=(0, 2, 3)) for i in range(3)]
    variances = [x[4 * i : 4 * i + 4].var(dim=(0, 2, 3), unbiased=True) for i in range(3)]
    expected_mean = 0.9**2 * 0.1 * means[0] + 0.9 * 0.1 * means[1] + 0.1 * means[2]
    expected_var = 0.9**3 * 1.0 + 0.9**2 * 0.1 * variances[0] + 0.9 * 0.1 * variances[1] + 0.1 * variances[2]
    assert torch.allclose(ghost[0].running_mean, expected_mean, atol=1e-6)
    assert torch.allclose(ghost[0].running_var, expected_var, atol=1e-5)
    # Plain BatchNorm over the whole batch would have centred on the overall mean instead.
    assert bn(x)[:4].mean() < -1.0


def test_evaluation_uses_the_running_statistics_like_batchnorm() -> None:
    plain, ghost = twin_models(ghost_batch=4)
    plain.eval(), ghost.eval()
    x = torch.randn(10, 3, 32, 32)
    assert torch.equal(plain(x), ghost(x))


def test_a_ghost_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        build_model("resnet20", width=0.25, ghost_batch=0)
