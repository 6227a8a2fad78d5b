"""1-D interpolation between two trained trials (Li et al. 2018; the paper's figure 5)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from study.errors import MAX_BATCH, MAX_IMAGES, check, checked_elsewhere, one_of, ranged
from study.keys import all_grids, interpolable_keys, searched_keys
from study.measures.base import Job, Measure, TaskInputs, register
from study.measures.common import (
    landscape_rows,
    load_model_state,
    point_chunks,
    point_progress,
    points_cost,
    trial_on_device,
)
from trainables.trial import SWEEP_FIELDS

if TYPE_CHECKING:
    from study.config import StudyConfig


@dataclass(frozen=True)
class InterpolateConfig:
    between: str = "batch_size"
    # pairs of swept values: each must pair planned trials (validate, against the plan)
    pairs: tuple[tuple[Any, Any], ...] = checked_elsewhere(((128, 8192),), "interpolate.validate")
    range: tuple[float, float] = ranged((-0.5, 1.5), -100.0, 100.0)  # of alpha: 0 = trial A, 1 = trial B
    points: int = ranged(41, 2, 100_001)
    train_samples: int | None = ranged(10_000, 1, MAX_IMAGES)  # fixed class-balanced subset per point; null = all
    test_samples: int | None = ranged(None, 1, MAX_IMAGES)
    # BatchNorm statistics at each point: `interpolate` them as every other entry (Li et al.; negative
    # extrapolated variances are clamped to 0 and counted) or `recompute` them from bn_samples fixed
    # training images in batches of bn_batch (mode-connectivity practice; finite everywhere).
    bn: Literal["interpolate", "recompute"] = "interpolate"
    bn_samples: int = ranged(2048, 1, MAX_IMAGES)
    bn_batch: int = ranged(256, 2, MAX_BATCH)  # a variance needs two images


def validate(study: StudyConfig, config: InterpolateConfig, s: str) -> None:
    one_of(config.between, interpolable_keys(type(study.sweep)), f"{s}measure.interpolate.between")
    values = [v for grid in all_grids(study.sweep) for v in getattr(grid, config.between) or ()]
    for pair in config.pairs:
        check(pair[0] != pair[1], f"{s}measure.interpolate.pairs: [{pair[0]!r}, {pair[1]!r}] is one trial twice")
        for value in pair:
            check(
                value in values,
                f"{s}measure.interpolate.pairs: {value!r} is not among "
                f"sweep.{config.between} {list(values)}; pick pairs from the swept values",
            )
    check(config.points >= 2, f"{s}measure.interpolate.points: must be at least 2")
    check(
        config.bn_samples >= 1 and config.bn_batch >= 2,
        f"{s}measure.interpolate: bn_samples must be >= 1 and bn_batch >= 2 (a variance needs two images)",
    )
    check(config.range[0] < config.range[1], f"{s}measure.interpolate.range: must be [low, high]")


def interpolation_pairs(study: StudyConfig, trials: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(trial_a, trial_b) for each requested pair of `between` values, among trials equal in every other key."""
    spec = study.measure.interpolate
    if spec is None or not trials:
        return []
    return [pair for found in paired(study, spec, trials).values() for pair in found]


def paired(study: StudyConfig, spec: InterpolateConfig, records: list[dict[str, Any]]) -> dict[tuple, list]:
    """Each requested pair of `between` values -> the (trial_a, trial_b) it pairs: trials equal in every
    other swept key, except those a search tuned per group (each group's winner has its own learning rate:
    that is the point of the search)."""
    searched = searched_keys(study.search) if study.search is not None else []
    others = [k for k in SWEEP_FIELDS if k != spec.between and records and k in records[0] and k not in searched]
    groups: dict[str, dict[Any, str]] = {}
    for record in records:  # NaN (an unset key read back from Parquet) groups with NaN, as in a groupby
        groups.setdefault(repr([record[k] for k in others]), {})[record[spec.between]] = record["trial_id"]
    found: dict[tuple, list] = {tuple(pair): [] for pair in spec.pairs}
    for _, by_value in sorted(groups.items()):
        for a, b in spec.pairs:
            if a in by_value and b in by_value:
                found[(a, b)].append((by_value[a], by_value[b]))
    return found


def check_plan(study: StudyConfig, records: list[dict[str, Any]], config: InterpolateConfig, s: str) -> None:
    """Every pair must join two planned trials: values that are swept but never meet in one grid (a pair
    across two `also` grids, a value with itself) would measure nothing, silently."""
    for (a, b), found in paired(study, config, records).items():
        check(
            bool(found),
            f"{s}measure.interpolate.pairs: [{a!r}, {b!r}] pairs no two planned trials (none differ only in "
            f"{config.between}, from {a!r} to {b!r}); pick two values of one grid",
        )


def interpolation_settings(config: InterpolateConfig) -> dict[str, Any]:
    """An interp1d job's settings: the study's interpolate section but the pair selection."""
    return {k: v for k, v in asdict(config).items() if k not in ("between", "pairs")}


def plan(study: StudyConfig, trials: list[dict[str, Any]], config: InterpolateConfig) -> list[Job]:
    settings = interpolation_settings(config)
    return [Job("landscape", "interp1d", pair, settings, "interpolate") for pair in interpolation_pairs(study, trials)]


def run(job: Job, inputs: TaskInputs, points: list[tuple[float, float | None]]) -> list[dict[str, Any]]:
    """theta(a) = (1 - a) theta_A + a theta_B at each of `points`, BatchNorm statistics interpolated
    (negative variances clamped, counted) or recomputed."""
    from trainables.landscape import clamp_running_variances, interpolate, recompute_bn_statistics

    settings = job.settings
    trial = trial_on_device(inputs, job.trials[0], settings["train_samples"], settings["test_samples"])
    state_a, state_b = (
        {k: v.to(trial.device) for k, v in load_model_state(inputs.checkpoints[t]).items()} for t in job.trials
    )
    if settings["bn"] == "recompute":
        bn_images = bn_batches(trial, settings["bn_samples"], settings["bn_batch"])
    images = sum(len(split) for split in trial.splits.values()) + (
        settings["bn_samples"] if settings["bn"] == "recompute" else 0
    )
    rows = []
    for done, (x, y) in enumerate(points):
        point_progress(done, points, images)
        state, clamped = interpolate(state_a, state_b, x), 0
        if settings["bn"] == "recompute":
            trial.model.load_state_dict(state)
            recompute_bn_statistics(trial.model, bn_images)
            state, label = {k: v.clone() for k, v in trial.model.state_dict().items()}, "recomputed"
        else:
            state, clamped = clamp_running_variances(state)
            label = "interpolated"
        rows += landscape_rows(job, trial, x, y, state, label, clamped)
    return rows


def bn_batches(trial: Any, samples: int, batch: int) -> list[Any]:
    """Fixed, class-balanced training images (no augmentation) for recomputing BatchNorm statistics,
    from the dataset the task already loaded."""
    from study.measures.common import balanced

    images = balanced(trial.data.train, samples, trial.data.num_classes).to(trial.device).images
    normalize = trial.normalize
    return [normalize(images[i : i + batch]) for i in range(0, len(images) - batch + 1, batch)] or [normalize(images)]


register(
    Measure(
        "interpolate",
        InterpolateConfig,
        validate,
        plan,
        {"interp1d": run},
        parts=point_chunks,
        cost=points_cost,
        doc="loss and accuracy along the straight line between two trials that differ only in `between`",
        check_plan=check_plan,
    )
)
