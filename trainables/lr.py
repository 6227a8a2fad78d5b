"""Learning-rate scaling rules (how the peak LR follows the batch size) and per-step schedules."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Callable

LR_SCALING: dict[str, Callable[[float], float]] = {
    "none": lambda ratio: 1.0,
    "linear": lambda ratio: ratio,  # Goyal et al. 2017
    "sqrt": math.sqrt,  # Krizhevsky 2014; Hoffer et al. 2017
}
DECAYS = ("step", "cosine", "constant")
BUDGETS = ("epochs", "steps")


def training_regime(
    epochs: int, milestones: tuple[int, ...], budget: str, batch_size: int, base_batch_size: int
) -> tuple[int, tuple[int, ...]]:
    """The epochs and step-decay milestones a trial trains for.

    budget 'epochs': as given, so a larger batch takes fewer optimizer steps. 'steps': Hoffer et al.'s
    (2017) regime adaptation, both multiplied by batch_size / base_batch_size (rounded, at least 1), so
    every batch size takes about the steps base_batch_size takes in `epochs` epochs.
    """
    if budget == "epochs":
        return epochs, tuple(milestones)
    if budget != "steps":
        raise ValueError(f"unknown budget {budget!r}; known: {BUDGETS}")
    ratio = batch_size / base_batch_size
    return max(1, round(epochs * ratio)), tuple(max(1, round(m * ratio)) for m in milestones)


def scaled_lr(base_lr: float, batch_size: int, base_batch_size: int, rule: str) -> float:
    """The peak LR at `batch_size`, given `base_lr` tuned at `base_batch_size`."""
    if rule not in LR_SCALING:
        raise KeyError(f"unknown lr_scaling {rule!r}; known: {sorted(LR_SCALING)}")
    return base_lr * LR_SCALING[rule](batch_size / base_batch_size)


@dataclass(frozen=True)
class LRSchedule:
    """Linear warmup to `peak_lr`, then step / cosine / constant decay; evaluated every optimizer step."""

    peak_lr: float
    total_steps: int
    warmup_steps: int = 0
    decay: str = "constant"
    milestone_steps: tuple[int, ...] = ()
    gamma: float = 0.1

    @classmethod
    def from_epochs(
        cls,
        *,
        peak_lr: float,
        steps_per_epoch: int,
        epochs: int,
        warmup_epochs: float,
        decay: str,
        milestones: tuple[int, ...],
        gamma: float,
    ) -> "LRSchedule":
        return cls(
            peak_lr=peak_lr,
            total_steps=epochs * steps_per_epoch,
            warmup_steps=int(round(warmup_epochs * steps_per_epoch)),
            decay=decay,
            milestone_steps=tuple(m * steps_per_epoch for m in milestones),
            gamma=gamma,
        )

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            # Step 0 takes peak/warmup_steps and step warmup_steps-1 reaches the peak.
            return self.peak_lr * (step + 1) / self.warmup_steps
        if self.decay == "step":
            return self.peak_lr * self.gamma ** bisect.bisect_right(self.milestone_steps, step)
        if self.decay == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
            return 0.5 * self.peak_lr * (1.0 + math.cos(math.pi * progress))
        if self.decay == "constant":
            return self.peak_lr
        raise ValueError(f"unknown decay {self.decay!r}; known: {DECAYS}")
