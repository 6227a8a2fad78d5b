import numpy as np
import pytest
import torch

from study.config import parse_study
from study.plan import plan_study
from trainables.augment import Augmentation, apply, cutmix, cutmix_box, cutout, sample_draws


def batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 32, 32, generator=generator) + 0.5, torch.arange(n)  # no pixel is 0


def test_none_is_the_identity() -> None:
    images, labels = batch()
    aug = Augmentation("none")
    draws = sample_draws(aug, 8, 1, 8, (32, 32), torch.Generator().manual_seed(0), np.random.default_rng(0))
    out = apply(aug, images, labels, draws, 0, slice(0, 8))
    assert torch.equal(out.images, images) and out.lam == 1.0 and torch.equal(out.labels_b, labels)


def test_cutmix_pastes_one_box_per_pair_and_lambda_is_the_kept_fraction() -> None:
    images, labels = batch()
    partner = torch.tensor([1, 2, 3, 4, 5, 6, 7, 0])
    box = cutmix_box(0.6, 32, 32, np.random.default_rng(3))
    out = cutmix(images, labels, box, partner)
    y1, y2, x1, x2 = box
    for i in range(8):
        changed = (out.images[i] != images[i]).any(dim=0)  # (H, W)
        rows, cols = torch.nonzero(changed, as_tuple=True)
        # Exactly one box changed, and it holds the partner's pixels.
        assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (y1, y2, x1, x2)
        assert changed.sum() == (y2 - y1) * (x2 - x1)
        assert torch.equal(out.images[i, :, y1:y2, x1:x2], images[partner[i], :, y1:y2, x1:x2])
    assert out.lam == 1 - (y2 - y1) * (x2 - x1) / 1024
    assert torch.equal(out.labels_b, labels[partner])


def test_cutmix_box_is_clipped_at_the_border_and_lambda_follows() -> None:
    boxes = [cutmix_box(0.3, 32, 32, np.random.default_rng(s)) for s in range(200)]
    assert all(0 <= y1 <= y2 <= 32 and 0 <= x1 <= x2 <= 32 for y1, y2, x1, x2 in boxes)
    assert any((y2 - y1) * (x2 - x1) < 0.7 * 1024 * 0.9 for y1, y2, x1, x2 in boxes)  # some were clipped


def test_cutout_zeroes_exactly_one_clipped_square_per_image() -> None:
    images, _ = batch(3)
    centers = torch.tensor([[16, 16], [0, 0], [31, 5]])
    out = cutout(images, centers, 8)
    expected = [(12, 20, 12, 20), (0, 4, 0, 4), (27, 32, 1, 9)]
    for i, (y1, y2, x1, x2) in enumerate(expected):
        zero = (out[i] == 0).all(dim=0)
        assert zero.sum() == (y2 - y1) * (x2 - x1)
        assert zero[y1:y2, x1:x2].all()
        keep = ~zero
        assert torch.equal(out[i][:, keep], images[i][:, keep])


def test_labels_mix_with_cutmix_lambda_in_the_loop_path() -> None:
    images, labels = batch()
    aug = Augmentation("cutmix", alpha=1.0)
    draws = sample_draws(aug, 8, 1, 8, (32, 32), torch.Generator().manual_seed(1), np.random.default_rng(1))
    out = apply(aug, images, labels, draws, 0, slice(0, 8))
    y1, y2, x1, x2 = draws.boxes[0]
    assert out.lam == 1 - (y2 - y1) * (x2 - x1) / 1024 and torch.equal(out.labels_b, labels[draws.partners[0]])


def test_old_mixup_alpha_key_and_new_axis_plan_identical_trials() -> None:
    old = plan_study(parse_study("name: s\nsweep: {batch_size: [128, 8192], mixup_alpha: [0.0, 1.0]}"))
    new = plan_study(
        parse_study("name: s\nsweep: {batch_size: [128, 8192], augmentation: [none, {name: mixup, alpha: 1.0}]}")
    )
    assert old == new
    assert [t.trial_id for t in old] == [t.trial_id for t in new]


def test_every_trial_records_its_augmentation_in_own_columns() -> None:
    study = parse_study(
        "name: s\nsweep: {batch_size: [128], augmentation: [none, mixup, "
        "{name: cutmix, alpha: 0.5}, {name: cutout, size: 12}]}"
    )
    trials = plan_study(study)
    assert [(t.augmentation, t.augmentation_alpha, t.cutout_size, t.mixup_alpha) for t in trials] == [
        ("none", 0.0, 0, 0.0),
        ("mixup", 1.0, 0, 1.0),
        ("cutmix", 0.5, 0, 0.0),
        ("cutout", 0.0, 12, 0.0),
    ]


@pytest.mark.slow
def test_a_study_sweeping_three_augmentations_shows_each(ray_session: str, tmp_path) -> None:
    from pathlib import Path

    import pandas as pd
    from conftest import smallest, tiny_study_yaml

    from study.sweep import run_study

    study = parse_study(
        smallest(tiny_study_yaml("augs", tmp_path)).replace(
            "sweep: {batch_size: [64, 128], mixup_alpha: [0.0, 1.0]}",
            "sweep: {batch_size: [128], augmentation: [none, {name: cutmix, alpha: 1.0}, {name: cutout, size: 8}]}",
        )
    )
    result = run_study(study)
    trials = pd.read_parquet(Path(result.results_dir) / "trials")
    assert sorted(trials["augmentation"]) == ["cutmix", "cutout", "none"] and set(trials["status"]) == {"completed"}
    page = Path(result.report).read_text()
    for label in ("no augmentation, no LR scaling", "cutmix a=1, no LR scaling", "cutout 8, no LR scaling"):
        assert label in page, label
