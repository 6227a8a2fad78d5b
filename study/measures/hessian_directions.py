"""The loss along each trial's sharpest directions, its Hessian's top eigenvectors: 1-D along the first,
2-D along the first two; an alternative to filter-normalized random directions (the seed paper's
conclusion leaves the choice of axes open)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from study.errors import MAX_BATCH, MAX_IMAGES, check, ranged
from study.measures.base import Cost, Job, Measure, TaskInputs, progress, register, sample, trial_ids
from study.measures.common import (
    job_points,
    landscape_rows,
    load_model_state,
    point_progress,
    points_cost,
    training_loss,
    trial_on_device,
)

if TYPE_CHECKING:
    from study.config import StudyConfig

LANCZOS_STEPS = 30  # Lanczos steps for the top one or two eigenvectors (the hessian measure's min_steps 20 + margin)


@dataclass(frozen=True)
class HessianDirectionsConfig:
    dims: int = ranged(1, 1, 2)
    points: int = ranged(21, 2, 10_001)  # per axis
    # in parameter units along unit eigenvectors: the loss rises about lambda x^2 / 2
    range: tuple[float, float] = ranged((-0.5, 0.5), -100.0, 100.0)
    samples: int = ranged(1000, 1, MAX_IMAGES)  # training images whose loss's Hessian gives the directions
    batch: int = ranged(512, 1, MAX_BATCH)
    train_samples: int | None = ranged(10_000, 1, MAX_IMAGES)  # images each point is evaluated on
    test_samples: int | None = ranged(None, 1, MAX_IMAGES)


def validate(study: StudyConfig, config: HessianDirectionsConfig, s: str) -> None:
    check(config.range[0] < config.range[1], f"{s}measure.hessian_directions.range: must be [low, high]")


def plan(study: StudyConfig, trials: list[dict[str, Any]], config: HessianDirectionsConfig) -> list[Job]:
    kind = f"eigen{config.dims}d"
    return [Job("landscape", kind, (t,), asdict(config), "hessian_directions") for t in trial_ids(trials)]


def cost(job: Job, part: Any, sizes: tuple[int | None, int | None]) -> Cost:
    """The Lanczos products for the directions, then the points (one task: the directions once)."""
    return {
        "products": (LANCZOS_STEPS, sample(job.settings["samples"], sizes[0])),
        **points_cost(job, None, sizes),
    }


def run(job: Job, inputs: TaskInputs, part: Any) -> list[dict[str, Any]]:
    """theta + x v1 (+ y v2), v_i the unit top eigenvectors of the training loss's Hessian on `samples`
    images (BN in eval mode, as the hessian measure); each point evaluated with the trial's own BN
    statistics, as random_directions does."""
    from trainables.landscape import displaced
    from trainables.sharpness import hessian_krylov

    dims = 2 if job.kind == "eigen2d" else 1
    f = training_loss(job, inputs)
    images = f.row["n_samples"]
    found = hessian_krylov(
        f.loss,
        f.batches,
        f.params,
        top_k=dims,
        trace=False,
        min_steps=LANCZOS_STEPS,
        max_steps=LANCZOS_STEPS,
        generator=f.generator,
        ritz_vectors=True,
        on_product=lambda n, _: progress(n, LANCZOS_STEPS, "products", images, f"eigenvectors: {n} products"),
    )
    named = [(n, p) for n, p in f.trial.model.named_parameters() if p.requires_grad]
    directions = []
    for vector in found.vectors or []:
        pieces = vector.split([p.numel() for _, p in named])
        directions.append({n: piece.view(p.shape) for (n, p), piece in zip(named, pieces)})
    trial = trial_on_device(inputs, job.trials[0], job.settings["train_samples"], job.settings["test_samples"])
    state = {k: v.to(trial.device) for k, v in load_model_state(inputs.checkpoints[job.trials[0]]).items()}
    points = job_points(job)
    rows, evaluated = [], sum(len(split) for split in trial.splits.values())
    for done, (x, y) in enumerate(points):
        point_progress(done, points, evaluated)
        moved = displaced(state, [{k: v.to(trial.device) for k, v in d.items()} for d in directions], [x, y][:dims])
        rows += landscape_rows(job, trial, x, y, moved, None, 0)
    return rows


register(
    Measure(
        "hessian_directions",
        HessianDirectionsConfig,
        validate,
        plan,
        {"eigen1d": run, "eigen2d": run},
        cost=cost,
        doc="the training loss along each trial's top Hessian eigenvectors (1-D, or 2-D along the top two)",
    )
)
