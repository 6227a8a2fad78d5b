"""Adaptive sharpness (Kwon et al. 2021, ASAM): the largest loss rise in a box that scales with each
weight, so that it survives rescaling a layer whose output a BatchNorm normalizes (Dinh et al. 2017)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from study.errors import MAX_BATCH, MAX_IMAGES, ranged
from study.measures.base import Job, Measure, Shown, TaskInputs, named, no_checks, register, trial_ids
from study.measures.eps_sharpness import box_rows
from study.measures.eps_sharpness import cost as steps_cost

if TYPE_CHECKING:
    from study.config import StudyConfig


@dataclass(frozen=True)
class AdaptiveSharpnessConfig:
    rho: float = ranged(0.01, 0.0, 1.0, low_open=True)  # the box's half-width, a fraction of each weight
    samples: int = ranged(5000, 1, MAX_IMAGES)
    method: Literal["sign_ascent", "lbfgsb"] = "sign_ascent"
    max_steps: int = ranged(100, 1, 100_000)  # loss-and-gradient evaluations at most
    batch: int = ranged(512, 1, MAX_BATCH)


SHOWN = Shown(
    "adaptive sharpness",
    "max f(x + y) - f(x), |y_i| <= rho |x_i|  (loss)",
    "lower",
    "invariant: the box scales with each weight, so a rescaled layer maps it onto itself",
)


def plan(study: StudyConfig, trials: list[dict[str, Any]], config: AdaptiveSharpnessConfig) -> list[Job]:
    return [
        Job("sharpness", "adaptive_sharpness", (t,), asdict(config), "adaptive_sharpness") for t in trial_ids(trials)
    ]


def run(job: Job, inputs: TaskInputs, part: Any) -> list[dict[str, Any]]:
    from trainables.sharpness import adaptive_sharpness

    return box_rows(job, inputs, adaptive_sharpness, job.settings["rho"])


register(
    Measure(
        "adaptive_sharpness",
        AdaptiveSharpnessConfig,
        no_checks,
        plan,
        {"adaptive_sharpness": run},
        cost=steps_cost,
        doc="Kwon et al.'s adaptive sharpness of the training loss (invariant to rescaling a layer before BN)",
        shown=named("adaptive_sharpness", SHOWN),
    )
)
