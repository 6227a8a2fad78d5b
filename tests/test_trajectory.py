"""Optimization-trajectory PCA (Li et al. 2018, section 7) against a trajectory built from known directions."""

import numpy as np
import pytest
import torch

from trainables.landscape import direction_entries, trajectory_pca
from trainables.models import vgg9


def unit_direction(model, generator) -> dict[str, torch.Tensor]:
    entries = direction_entries(model)
    raw = {k: torch.randn(dict(model.named_parameters())[k].shape, generator=generator) for k in entries}
    norm = torch.sqrt(sum((v**2).sum() for v in raw.values()))
    return {k: v / norm for k, v in raw.items()}


def test_a_trajectory_along_two_known_directions_is_recovered() -> None:
    torch.manual_seed(0)
    model = vgg9(width=0.25)
    final = {k: v.clone() for k, v in model.state_dict().items()}
    entries = direction_entries(model)
    generator = torch.Generator().manual_seed(1)
    e1, e2 = unit_direction(model, generator), unit_direction(model, generator)
    dot = sum((e1[k] * e2[k]).sum() for k in entries)
    e2 = {k: e2[k] - dot * e1[k] for k in entries}  # exactly orthogonal
    norm = torch.sqrt(sum((v**2).sum() for v in e2.values()))
    e2 = {k: v / norm for k, v in e2.items()}
    # Centred coefficients with no covariance between them: the principal axes are e1 and e2 themselves.
    a = np.array([-6.0, -2.0, 2.0, 6.0]) + 0.5
    b = np.array([1.0, -1.0, -1.0, 1.0]) - 0.25
    snapshots = [{k: final[k] + (a[i] * e1[k] + b[i] * e2[k] if k in e1 else 0) for k in final} for i in range(4)]
    pca = trajectory_pca(snapshots, final, entries)
    cosines = [
        float(sum((d[k].double() * e[k].double()).sum() for k in entries)) for d, e in zip(pca.directions, (e1, e2))
    ]
    assert np.allclose(np.abs(cosines), 1.0, atol=1e-5), cosines
    variance_a, variance_b = ((a - a.mean()) ** 2).sum(), ((b - b.mean()) ** 2).sum()
    assert pca.explained == pytest.approx(
        [variance_a / (variance_a + variance_b), variance_b / (variance_a + variance_b)], rel=1e-5
    )
    signs = np.sign(cosines)
    coordinates = np.array(pca.coordinates) * signs  # uncentred: the final solution is the origin
    assert np.allclose(coordinates, np.column_stack([a, b]), atol=1e-4)


def test_a_trajectory_on_one_line_is_refused() -> None:
    model = vgg9(width=0.25)
    final = {k: v.clone() for k, v in model.state_dict().items()}
    entries = direction_entries(model)
    e1 = unit_direction(model, torch.Generator().manual_seed(0))
    snapshots = [{k: final[k] + (t * e1[k] if k in e1 else 0) for k in final} for t in (1.0, 2.0, 3.0)]
    with pytest.raises(ValueError, match="two directions"):
        trajectory_pca(snapshots, final, entries)


@pytest.mark.parametrize("uri", [False, True])
def test_snapshots_round_trip_through_local_paths_and_uris(tmp_path, uri: bool) -> None:
    from trainables.checkpoint import list_snapshots, load_snapshot, save_snapshot

    folder = f"file://{tmp_path}/trajectory/t0" if uri else str(tmp_path / "trajectory" / "t0")
    assert list_snapshots(folder) == {}  # nothing yet: empty, not an error
    weights = {"w": torch.arange(6.0).view(2, 3), "n": torch.tensor(3)}
    for epoch in (10, 2, 5):
        save_snapshot({k: v + epoch for k, v in weights.items()}, folder, epoch)
    found = list_snapshots(folder)
    assert list(found) == [2, 5, 10] and all(p.startswith("file://") == uri for p in found.values())
    assert torch.equal(load_snapshot(found[5])["w"], weights["w"] + 5)
    assert not [p for p in (tmp_path / "trajectory" / "t0").iterdir() if p.name.startswith(".")]  # no partials left
