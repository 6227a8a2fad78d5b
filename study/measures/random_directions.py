"""Filter-normalized random-direction slices (1-D) and surfaces (2-D) around each trial (Li et al. 2018)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from study.errors import MAX_IMAGES, check, ranged
from study.measures.base import DIRECTION_SEED, Job, Measure, TaskInputs, register, trial_ids
from study.measures.common import (
    landscape_rows,
    load_model_state,
    point_chunks,
    point_progress,
    points_cost,
    trial_on_device,
)

if TYPE_CHECKING:
    from study.config import StudyConfig


@dataclass(frozen=True)
class RandomDirectionsConfig:
    dims: int = ranged(1, 1, 2)
    points: int = ranged(41, 2, 10_001)  # per axis
    range: tuple[float, float] = ranged((-1.0, 1.0), -100.0, 100.0)  # in filter-normalized units
    train_samples: int | None = ranged(10_000, 1, MAX_IMAGES)
    test_samples: int | None = ranged(None, 1, MAX_IMAGES)


def validate(study: StudyConfig, config: RandomDirectionsConfig, s: str) -> None:
    check(config.dims in (1, 2), f"{s}measure.random_directions.dims: must be 1 or 2")
    check(config.points >= 2, f"{s}measure.random_directions.points: must be at least 2")
    check(config.range[0] < config.range[1], f"{s}measure.random_directions.range: must be [low, high]")


def plan(study: StudyConfig, trials: list[dict[str, Any]], config: RandomDirectionsConfig) -> list[Job]:
    kind = f"random{config.dims}d"
    return [Job("landscape", kind, (t,), asdict(config), "random_directions") for t in trial_ids(trials)]


def run(job: Job, inputs: TaskInputs, points: list[tuple[float, float | None]]) -> list[dict[str, Any]]:
    """The loss at theta + x d1 (+ y d2) at each of `points`; the trial's own BatchNorm statistics."""
    import torch

    from trainables.landscape import displaced, filter_normalized_direction

    trial = trial_on_device(inputs, job.trials[0], job.settings["train_samples"], job.settings["test_samples"])
    state = {k: v.to(trial.device) for k, v in load_model_state(inputs.checkpoints[job.trials[0]]).items()}
    trial.model.load_state_dict(state)
    generator = torch.Generator().manual_seed(DIRECTION_SEED + trial.spec.seed)
    directions = [
        filter_normalized_direction(trial.model, generator) for _ in range(2 if job.kind == "random2d" else 1)
    ]
    rows, images = [], sum(len(split) for split in trial.splits.values())
    for done, (x, y) in enumerate(points):
        point_progress(done, points, images)
        rows += landscape_rows(job, trial, x, y, displaced(state, directions, [x] if y is None else [x, y]), None, 0)
    return rows


register(
    Measure(
        "random_directions",
        RandomDirectionsConfig,
        validate,
        plan,
        {"random1d": run, "random2d": run},
        parts=point_chunks,
        cost=points_cost,
        doc="filter-normalized random-direction slices (dims 1) or surfaces (dims 2) around each trial",
    )
)
