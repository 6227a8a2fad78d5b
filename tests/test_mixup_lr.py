import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainables.lr import LRSchedule, scaled_lr
from trainables.mixup import MixedBatch, mix, mixed_cross_entropy, sample_lambda


def test_alpha_zero_is_identity() -> None:
    rng = np.random.default_rng(0)
    assert sample_lambda(0.0, rng) == 1.0
    images, labels = torch.randn(8, 3, 4, 4), torch.arange(8)
    batch = mix(images, labels, 1.0, torch.randperm(8))
    assert torch.equal(batch.images, images) and torch.equal(batch.labels_b, labels) and batch.lam == 1.0


def test_mix_uses_the_same_lambda_for_images_and_labels() -> None:
    images, labels = torch.randn(6, 3, 4, 4), torch.arange(6)
    partner = torch.tensor([3, 4, 5, 0, 1, 2])
    batch = mix(images, labels, 0.3, partner)
    for i in range(6):
        j = int(partner[i])
        assert torch.allclose(batch.images[i], 0.3 * images[i] + 0.7 * images[j])
        assert batch.labels_a[i] == labels[i] and batch.labels_b[i] == labels[j]
    assert batch.lam == 0.3


def test_lambda_is_beta_distributed() -> None:
    rng = np.random.default_rng(0)
    draws = np.array([sample_lambda(0.2, rng) for _ in range(4000)])
    assert abs(draws.mean() - 0.5) < 0.03  # Beta(a, a) has mean 1/2
    assert abs(draws.var() - 1 / (4 * (2 * 0.2 + 1))) < 0.01  # and variance 1 / (4 (2a + 1))


def test_mixed_loss_equals_cross_entropy_on_mixed_one_hot() -> None:
    torch.manual_seed(0)
    logits = torch.randn(16, 10)
    y_a, y_b = torch.randint(0, 10, (16,)), torch.randint(0, 10, (16,))
    lam = 0.37
    target = lam * F.one_hot(y_a, 10).float() + (1 - lam) * F.one_hot(y_b, 10).float()
    expected = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    got = mixed_cross_entropy(logits, MixedBatch(torch.empty(0), y_a, y_b, lam))
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("rule,expected", [("none", 0.1), ("linear", 6.4), ("sqrt", 0.8)])
def test_lr_scaling_rules_at_8192(rule: str, expected: float) -> None:
    assert scaled_lr(0.1, 8192, 128, rule) == pytest.approx(expected)


def test_warmup_starts_low_and_reaches_peak_on_its_last_step() -> None:
    schedule = LRSchedule.from_epochs(
        peak_lr=6.4, steps_per_epoch=10, epochs=20, warmup_epochs=5, decay="constant", milestones=(), gamma=0.1
    )
    lrs = [schedule(s) for s in range(60)]
    assert lrs[0] == pytest.approx(6.4 / 50)
    assert all(a < b for a, b in zip(lrs[:50], lrs[1:50]))
    assert lrs[49] == pytest.approx(6.4) and lrs[48] < 6.4
    assert all(lr == pytest.approx(6.4) for lr in lrs[49:])


def test_step_and_cosine_decay() -> None:
    step = LRSchedule.from_epochs(
        peak_lr=0.1,
        steps_per_epoch=10,
        epochs=300,
        warmup_epochs=0,
        decay="step",
        milestones=(150, 225, 275),
        gamma=0.1,
    )
    assert step(1499) == pytest.approx(0.1) and step(1500) == pytest.approx(0.01)
    assert step(2250) == pytest.approx(0.001) and step(2999) == pytest.approx(0.0001)
    cosine = LRSchedule.from_epochs(
        peak_lr=0.2, steps_per_epoch=10, epochs=10, warmup_epochs=0, decay="cosine", milestones=(), gamma=0.1
    )
    assert cosine(0) == pytest.approx(0.2) and cosine(50) == pytest.approx(0.1) and cosine(100) == pytest.approx(0)
