"""Epsilon-sharpness (Keskar et al. 2017): the largest loss rise in a box around the solution."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

from study.errors import MAX_BATCH, MAX_IMAGES, check, ranged
from study.measures.base import Cost, Job, Measure, Shown, TaskInputs, named, progress, register, sample, trial_ids
from study.measures.common import training_loss

if TYPE_CHECKING:
    from study.config import StudyConfig


@dataclass(frozen=True)
class EpsSharpnessConfig:
    eps: float = ranged(1.0e-3, 0.0, 1.0, low_open=True)  # the box's half-width, relative to each weight
    samples: int = ranged(5000, 1, MAX_IMAGES)
    method: Literal["sign_ascent", "lbfgsb"] = "sign_ascent"  # lbfgsb: Keskar et al.'s own
    # loss-and-gradient evaluations at most; sign_ascent stops at a 1e-4 relative gain
    max_steps: int = ranged(100, 1, 100_000)
    batch: int = ranged(512, 1, MAX_BATCH)


SHOWN = Shown(
    "epsilon-sharpness",
    "100 (max f - f) / (1 + f)  (%)",
    "lower",
    "changes: the box eps (|x| + 1) does not scale with a rescaled layer's weights (the + 1)",
)


def validate(study: StudyConfig, config: EpsSharpnessConfig, s: str) -> None:
    check(config.max_steps >= 1 and config.batch >= 1, f"{s}measure.eps_sharpness: max_steps and batch must be >= 1")
    check(config.eps > 0 and config.samples >= 1, f"{s}measure.eps_sharpness: eps must be > 0 and samples >= 1")


def plan(study: StudyConfig, trials: list[dict[str, Any]], config: EpsSharpnessConfig) -> list[Job]:
    return [Job("sharpness", "eps_sharpness", (t,), asdict(config), "eps_sharpness") for t in trial_ids(trials)]


def cost(job: Job, part: Any, sizes: tuple[int | None, int | None]) -> Cost:
    """At most max_steps loss-and-gradient evaluations (sign ascent often stops sooner)."""
    return {"steps": (job.settings["max_steps"], sample(job.settings["samples"], sizes[0]))}


def run(job: Job, inputs: TaskInputs, part: Any) -> list[dict[str, Any]]:
    from trainables.sharpness import eps_sharpness

    return box_rows(job, inputs, eps_sharpness, job.settings["eps"])


def box_rows(job: Job, inputs: TaskInputs, compute: Callable[..., Any], size: float) -> list[dict[str, Any]]:
    """The row of a box-maximum sharpness (`compute`: trainables.sharpness.eps_sharpness or
    adaptive_sharpness, of box size `size`) of the job's trial, with how its maximization ended."""
    f, settings = training_loss(job, inputs), job.settings
    result = compute(
        f.loss,
        f.batches,
        f.params,
        size,
        method=settings["method"],
        max_steps=settings["max_steps"],
        on_step=lambda steps: progress(
            steps,
            settings["max_steps"],
            "steps",
            f.row["n_samples"],
            f"{steps} steps (at most {settings['max_steps']})",
        ),
    )
    recorded = {
        **f.settings,
        "algorithm": result.method,
        "steps": result.steps,
        "converged": result.converged,
        "first_order_gap": result.gap,
        "loss": result.loss,
        "max_loss": result.max_loss,
    }
    return [{**f.row, "value": result.value, "settings": json.dumps(recorded)}]


register(
    Measure(
        "eps_sharpness",
        EpsSharpnessConfig,
        validate,
        plan,
        {"eps_sharpness": run},
        cost=cost,
        doc="Keskar et al.'s epsilon-sharpness of the training loss",
        shown=named("eps_sharpness", SHOWN),
    )
)
