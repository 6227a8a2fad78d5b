"""Optimization trajectories (Li et al. 2018, section 7): the weights' path on its PCA plane, over the loss."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from study.errors import MAX_EPOCHS, MAX_IMAGES, check, ranged
from study.measures.base import Cost, Job, Measure, TaskInputs, progress, register, sample, trial_ids
from study.measures.common import checkpoint_files, load_model_state, trial_on_device

if TYPE_CHECKING:
    from study.config import StudyConfig

SNAPSHOTS_NEEDED = 4  # a plane through the final weights needs three more points


@dataclass(frozen=True)
class TrajectoryConfig:
    """Optimization trajectories (Li et al. 2018, section 7): PCA of the weights' path over training,
    projected on its first two components, over the loss contours of that plane."""

    # keep the weights every N epochs and the last (Ray's checkpoints keep only 2)
    every_epochs: int = ranged(5, 1, MAX_EPOCHS)
    points: int = ranged(21, 2, 1001)  # contour grid points per axis
    margin: float = ranged(0.2, 0.0, 10.0)  # the grid extends the trajectory's span by this fraction on each side
    train_samples: int | None = ranged(2000, 1, MAX_IMAGES)  # fixed class-balanced images per grid point; null = all


def trajectory_epochs(epochs: int, every: int) -> list[int]:
    """The epochs whose weights a trajectory keeps: every `every`-th and the last."""
    return sorted({e for e in range(every, epochs + 1, every)} | {epochs})


def validate(study: StudyConfig, config: TrajectoryConfig, s: str) -> None:
    check(
        config.every_epochs >= 1 and config.points >= 2 and config.margin >= 0,
        f"{s}measure.trajectory: every_epochs >= 1, points >= 2 and margin >= 0",
    )
    snapshots = len(trajectory_epochs(study.schedule.epochs, config.every_epochs))
    check(
        snapshots >= SNAPSHOTS_NEEDED,
        f"{s}measure.trajectory.every_epochs: {config.every_epochs} keeps {snapshots} snapshots of "
        f"{study.schedule.epochs} epochs; a trajectory plane needs 4 (3 plus the final): lower every_epochs",
    )


def plan(study: StudyConfig, trials: list[dict[str, Any]], config: TrajectoryConfig) -> list[Job]:
    return [Job("trajectory", "trajectory2d", (t,), asdict(config), "trajectory") for t in trial_ids(trials)]


def ready(job: Job, inputs: TaskInputs) -> bool:
    """Whether the trial kept enough snapshots (it was trained with measure.trajectory set)."""
    import sys

    from analysis.store import join

    found = len(checkpoint_files().list_snapshots(join(inputs.snapshots, job.trials[0])))
    if found < SNAPSHOTS_NEEDED:
        print(
            f"measure: {job.trials[0]}: {found} trajectory snapshots (the plane needs 4); trajectory skipped - "
            "it was trained without measure.trajectory, or with too few epochs",
            file=sys.stderr,
        )
    return found >= SNAPSHOTS_NEEDED


def cost(job: Job, part: Any, sizes: tuple[int | None, int | None]) -> Cost:
    """The surface's grid points and the snapshots' own losses, each on the fixed training images."""
    settings = job.settings
    return {"points": (settings["points"] ** 2 + SNAPSHOTS_NEEDED, sample(settings["train_samples"], sizes[0]))}


def run(job: Job, inputs: TaskInputs, part: Any) -> list[dict[str, Any]]:
    """One trial's trajectory on its PCA plane: the path (each snapshot's coordinates and loss) and the
    loss surface of that plane around the final weights."""
    import torch

    from analysis.store import join
    from trainables.landscape import direction_entries, displaced, trajectory_pca

    files = checkpoint_files()
    list_snapshots, load_snapshot = files.list_snapshots, files.load_snapshot

    trial_id, settings = job.trials[0], job.settings
    folder = join(inputs.snapshots, trial_id)
    found = list_snapshots(folder)
    if len(found) < SNAPSHOTS_NEEDED:
        raise RuntimeError(
            f"{trial_id}: {len(found)} trajectory snapshots in {folder}; the plane needs 4 "
            "(train with measure.trajectory set from the start)"
        )
    trial = trial_on_device(inputs, trial_id, settings["train_samples"], 0)
    device = trial.device
    final = {k: v.to(device) for k, v in load_model_state(inputs.checkpoints[trial_id]).items()}
    snapshots = {epoch: load_snapshot(path) for epoch, path in found.items()}
    path_epochs = [e for e in snapshots if not all(torch.equal(snapshots[e][k], final[k].cpu()) for k in final)]
    pca = trajectory_pca(
        [{k: v.to(device) for k, v in snapshots[e].items()} for e in path_epochs],
        final,
        direction_entries(trial.model),
    )
    base = {
        "trial_id": trial_id,
        "explained_x": pca.explained[0],
        "explained_y": pca.explained[1],
        "split": "train",
        "settings": json.dumps(
            {
                **settings,
                "snapshots": sorted(snapshots),
                "algorithm": "PCA of theta_i - theta_final over conv and linear weights (Li et al. 2018)",
            }
        ),
    }
    coordinates = dict(zip(path_epochs, pca.coordinates))
    rows = []
    for epoch in sorted(snapshots):
        x, y = coordinates.get(epoch, (0.0, 0.0))
        loss, acc = evaluate(trial, {k: v.to(device) for k, v in snapshots[epoch].items()})
        rows.append({**base, "kind": "path", "epoch": epoch, "x": x, "y": y, "loss": loss, "acc": acc})
    grid, images = settings["points"] ** 2, len(trial.splits["train"])
    for j, y in enumerate(grid_axis([c[1] for c in pca.coordinates], settings)):
        for i, x in enumerate(grid_axis([c[0] for c in pca.coordinates], settings)):
            done = j * settings["points"] + i
            progress(done, grid, "points", images, f"surface {done}/{grid} points")
            loss, acc = evaluate(trial, displaced(final, pca.directions, [x, y]))
            rows.append({**base, "kind": "surface", "epoch": None, "x": x, "y": y, "loss": loss, "acc": acc})
    return rows


def grid_axis(coordinates: list[float], settings: dict[str, Any]) -> list[float]:
    """One axis of the surface: the path's span (the final weights at 0 included), widened by the margin."""
    import numpy as np

    values = [*coordinates, 0.0]
    span = max(values) - min(values)
    low, high = min(values) - settings["margin"] * span, max(values) + settings["margin"] * span
    return np.linspace(low, high, settings["points"]).tolist()


def evaluate(trial: Any, state: dict[str, Any]) -> tuple[float, float]:
    from trainables.landscape import evaluate_state
    from trainables.loop import Runtime

    return evaluate_state(trial.model, state, trial.splits["train"], trial.normalize, Runtime(trial.device))


register(
    Measure(
        "trajectory",
        TrajectoryConfig,
        validate,
        plan,
        {"trajectory2d": run},
        ready=ready,
        cost=cost,
        doc="each trial's optimization path on its PCA plane, over that plane's loss surface",
    )
)
