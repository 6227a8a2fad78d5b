"""End-to-end: a tiny study with every measure, on a real local Ray."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, chromium_flags, smallest, tiny_study_yaml

from study.config import parse_study
from study.sweep import run_study

pytestmark = pytest.mark.slow
MEASURE = """measure:
  interpolate: {between: batch_size, pairs: [[64, 128]], points: 5, train_samples: 128, bn: recompute,
                bn_samples: 64, bn_batch: 32}
  random_directions: {dims: 1, points: 3, train_samples: 64, test_samples: 64}
  hessian: {top_k: 1, samples: 64, trace_max_draws: 30, density: {iterations: 8, bins: 200}}
  eps_sharpness: {eps: 1.0e-3, samples: 64, max_steps: 10}
  noise_scale: {probe_pairs: 3, probe_batch: 32}
  adaptive_sharpness: {rho: 0.01, samples: 64, max_steps: 10}
  hessian_directions: {dims: 1, points: 5, range: [-0.01, 0.01], samples: 64, train_samples: 64, test_samples: 64}
"""


def along_top_eigenvector(trials: pd.DataFrame, trial_id: str, xs: list[float]) -> tuple[float, list[float]]:
    """v.Hv of the top Hessian eigenvector v that hessian_directions finds for `trial_id` (its settings
    in MEASURE), and the training loss at theta + x v for each x, on the same images in eval mode."""
    import torch

    from study.measures.base import Job, TaskInputs
    from study.measures.common import training_loss
    from study.measures.hessian_directions import LANCZOS_STEPS
    from trainables.sharpness import hessian_krylov, hessian_vector_product

    row = trials.set_index("trial_id").loc[trial_id]
    inputs = TaskInputs({trial_id: row["spec"]}, {trial_id: row["checkpoint"]})
    f = training_loss(Job("landscape", "eigen1d", (trial_id,), {"samples": 64, "batch": 512}), inputs)
    found = hessian_krylov(
        f.loss,
        f.batches,
        f.params,
        top_k=1,
        trace=False,
        min_steps=LANCZOS_STEPS,
        max_steps=LANCZOS_STEPS,
        generator=f.generator,
        ritz_vectors=True,
    )
    v = [piece.view(p.shape) for piece, p in zip(found.vectors[0].split([p.numel() for p in f.params]), f.params)]
    curvature = sum(float((a * b).sum()) for a, b in zip(hessian_vector_product(f.loss, f.batches, f.params, v), v))
    origin = [p.detach().clone() for p in f.params]
    losses = []
    with torch.no_grad():
        for x in xs:
            for p, p0, d in zip(f.params, origin, v):
                p.copy_(p0 + x * d)
            total = sum(len(labels) for _, labels in f.batches)
            losses.append(sum(float(f.loss((images, labels))) * len(labels) for images, labels in f.batches) / total)
    return curvature, losses


def test_measurements_cover_every_trial_and_pair(ray_session: str, tmp_path: Path) -> None:
    # Two trials (batch 64 and 128, no mixup): every measure on each, and the pair between them.
    study = parse_study(smallest(tiny_study_yaml("measured", tmp_path)).replace("[0.0, 1.0]", "[0.0]") + MEASURE)
    result = run_study(study)
    results = Path(result.results_dir)
    trials = pd.read_parquet(results / "trials")
    sharpness = pd.read_parquet(results / "sharpness")
    landscape = pd.read_parquet(results / "landscape")
    completed = set(trials.loc[trials["status"] == "completed", "trial_id"])
    assert len(completed) == 2
    # What ran where: every trial and every measurement row names its host and Ray node.
    import socket

    import ray

    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    for table in (trials, sharpness, landscape, pd.read_parquet(results / "spectrum")):
        assert set(table["host"]) == {socket.gethostname()} and set(table["node_id"]) <= nodes
    for measure in ("hessian_eig1", "hessian_trace", "eps_sharpness", "noise_scale", "adaptive_sharpness"):
        assert set(sharpness.loc[sharpness["measure"] == measure, "trial_id"]) == completed, measure
    assert (sharpness.loc[sharpness["measure"] == "eps_sharpness", "value"] >= 0).all()
    assert (sharpness.loc[sharpness["measure"] == "noise_scale", "value"] > 0).all()
    noise = sharpness[sharpness["measure"] == "noise_scale"]
    assert (noise["ci_low"] <= noise["value"]).all() and (noise["value"] <= noise["ci_high"]).all()
    for settings in noise["settings"].map(json.loads):
        assert settings["population"] > 0 and settings["sampling"] == "without replacement"
        assert settings["units"] >= 3 and settings["confidence"] == 0.95
    trace = sharpness[sharpness["measure"] == "hessian_trace"]
    assert (trace["ci_low"] < trace["value"]).all()
    for measure, row in sharpness.set_index("measure").iterrows():
        settings = json.loads(row["settings"])
        if measure != "noise_scale":  # every value names its algorithm and the batch it was computed in
            assert settings["batch"] == 512 and settings["algorithm"], measure
    steps = [json.loads(s)["steps"] for s in sharpness.loc[sharpness["measure"] == "eps_sharpness", "settings"]]
    assert all(1 <= s <= 10 for s in steps)
    spectrum = pd.read_parquet(results / "spectrum")
    assert set(spectrum["trial_id"]) == completed
    for _, density in spectrum.groupby("trial_id"):
        density = density.sort_values("eigenvalue")
        x, y = density["eigenvalue"].to_numpy(), density["density"].to_numpy()
        area = float(((y[1:] + y[:-1]) / 2 * np.diff(x)).sum())
        assert len(density) >= 200 and area == pytest.approx(1.0, rel=1e-6)  # bins: at least, or 4 per kernel width
    # One interpolation curve, batch 64 to 128, on train and test.
    interp = landscape[landscape["kind"] == "interp1d"]
    pairs = interp.groupby(["trial_a", "trial_b"])
    assert pairs.ngroups == 1
    for (a, b), curve in pairs:
        assert list(trials.set_index("trial_id").loc[[a, b], "batch_size"]) == [64, 128]
        assert sorted(curve["split"].unique()) == ["test", "train"]
        assert sorted(curve.loc[curve["split"] == "train", "x"]) == pytest.approx([-0.5, 0.0, 0.5, 1.0, 1.5])
        # At x = 0 the interpolation is trial A itself: its train loss is finite and accuracy a fraction.
        assert curve["acc"].between(0, 1).all() and curve["loss"].notna().all()
        # Recomputed BatchNorm statistics: every point finite, extrapolated ones included.
        assert (curve["bn"] == "recomputed").all() and np.isfinite(curve["loss"]).all()
    assert landscape[landscape["kind"] == "random1d"].groupby("trial_a").size().to_dict() == {t: 6 for t in completed}
    assert (sharpness.loc[sharpness["measure"] == "adaptive_sharpness", "value"] >= 0).all()
    # The eigen1d curve is the loss along the hessian measure's top eigenvector (unit length): recomputed
    # here from the checkpoint, the axis's curvature v.Hv is hessian_eig1 and every point's loss is the
    # training loss at theta + x v. (Its second difference need not be lambda_1: ReLU and max-pool kinks
    # between the points add curvature that Hessian-vector products do not see; 10% here at width 0.125.)
    eigen = landscape[(landscape["kind"] == "eigen1d") & (landscape["split"] == "train")]
    top = sharpness[sharpness["measure"] == "hessian_eig1"].set_index("trial_id")["value"]
    assert set(eigen["trial_a"]) == completed
    for trial_id, curve in eigen.groupby("trial_a"):
        curve = curve.sort_values("x")
        curvature, losses = along_top_eigenvector(trials, trial_id, curve["x"].tolist())
        assert curvature == pytest.approx(top[trial_id], rel=1e-3), (curvature, top[trial_id])
        assert curve["loss"].to_numpy() == pytest.approx(losses, rel=1e-4, abs=1e-6)

    # The report shows every figure this data supports.
    report = Path(result.report)
    assert report == results.parent / "report.html" and report.exists()
    page = report.read_text()
    for section in (
        "accuracy_gap_vs_batch",
        "learning_curves",
        "interpolation_1",
        "sharpness_vs_batch",
        "hessian_density",
        "random_directions_1",
        "hessian_directions_1",
        "steps_to_target",
        "trials_table",
    ):
        assert f'id="{section}"' in page, section
    assert page.count("<li>") == 1 and "Optimization trajectories: not measured" in page  # the one not asked for
    assert page.count("<script") >= 8 and "<script src=" not in page  # plotly.js inlined, nothing fetched
    check_renders_offline(report, tmp_path)

    # Re-running measures only what is missing: nothing, here.
    rerun = subprocess.run(
        [sys.executable, "-m", "study.measure", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "RAY_ADDRESS": ray_session},
    )
    assert rerun.returncode == 0, rerun.stderr
    said = rerun.stdout
    assert "measure: nothing to do: all" in said and "measurements of the completed trials written" in said


def test_measure_cli_rejects_a_folder_that_is_not_a_store(tmp_path: Path) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "study.measure", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert process.returncode == 2 and "is not a results store" in process.stderr
    assert process.stderr.strip().count("\n") == 0


def check_renders_offline(report: Path, tmp_path: Path) -> None:
    """Headless Chromium opens the report from disk, with networking off, and plotly draws every figure."""
    flags = chromium_flags(tmp_path)
    dom = subprocess.run([*flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120).stdout
    sections = dom.count("<section")
    assert sections >= 8 and dom.count('class="main-svg"') >= sections, "plotly did not render every figure"
    shot = tmp_path / "report.png"
    subprocess.run(
        [*flags, "--window-size=1300,2400", f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120
    )
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # not a blank page: axes, lines and text were drawn


def test_trajectory_snapshots_are_kept_and_projected(ray_session: str, tmp_path: Path) -> None:
    """One 5-epoch trial keeps 5 weight snapshots; its path lies on its PCA plane, the final at the origin."""
    text = (
        tiny_study_yaml("trajectory", tmp_path)
        .replace("epochs: 2", "epochs: 5")
        .replace("batch_size: [64, 128], mixup_alpha: [0.0, 1.0]", "batch_size: [64], mixup_alpha: [0.0]")
    )
    study = parse_study(text + "measure:\n  trajectory: {every_epochs: 1, points: 3, train_samples: 128}\n")
    result = run_study(study)
    results = Path(result.results_dir)
    trial_id = pd.read_parquet(results / "trials")["trial_id"].iloc[0]
    snapshots = sorted(p.name for p in (results.parent / "trajectory" / trial_id).iterdir())
    assert snapshots == [f"epoch-{e:04d}.pt" for e in range(1, 6)]
    trajectory = pd.read_parquet(results / "trajectory")
    path = trajectory[trajectory["kind"] == "path"].sort_values("epoch")
    assert path["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert path.iloc[-1][["x", "y"]].tolist() == [0.0, 0.0]  # the final solution is the origin
    assert np.isfinite(path["loss"]).all() and path["loss"].iloc[-1] < path["loss"].iloc[0]
    surface = trajectory[trajectory["kind"] == "surface"]
    assert len(surface) == 9 and np.isfinite(surface["loss"]).all()
    explained = trajectory[["explained_x", "explained_y"]].iloc[0]
    assert explained["explained_x"] >= explained["explained_y"] > 0 and explained.sum() <= 1 + 1e-9
    assert 'id="trajectory_1"' in Path(result.report).read_text()
