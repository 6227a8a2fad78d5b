"""The gradient noise scale B_simple (McCandlish et al. 2018), from gradient norms recorded while training."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from study.errors import MAX_BATCH, MAX_EPOCHS, check, ranged
from study.measures.base import DIRECTION_SEED, Job, Measure, Shown, TaskInputs, named, register, trial_ids

if TYPE_CHECKING:
    from study.config import StudyConfig


@dataclass(frozen=True)
class NoiseScaleConfig:
    """The gradient noise scale B_simple (McCandlish et al. 2018), recorded while training."""

    # one-worker trials: pairs of probe batches per epoch (multi-worker ones need none)
    probe_pairs: int = ranged(4, 1, 10_000)
    # the probes' small batch (capped by the micro-batch); the big one is twice it
    probe_batch: int = ranged(512, 1, MAX_BATCH)
    last_epochs: int = ranged(5, 1, MAX_EPOCHS)  # the trial's value pools the units of its last epochs
    # of the bootstrap interval over units (probe pairs, blocks of steps)
    confidence: float = ranged(0.95, 0.0, 1.0, low_open=True, high_open=True)


# Not a flatness measure: the batch size beyond which larger batches stop paying (the critical batch).
SHOWN = Shown(
    "gradient noise scale B_simple",
    "B_simple (examples)",
    "",
    "changes: a rescaled layer's gradients shrink by 1/c, its share of tr(Sigma) and |G|^2 by 1/c^2",
)


def validate(study: StudyConfig, config: NoiseScaleConfig, s: str) -> None:
    check(
        config.probe_pairs >= 1 and config.probe_batch >= 1 and config.last_epochs >= 1,
        f"{s}measure.noise_scale: probe_pairs, probe_batch and last_epochs must be >= 1",
    )
    check(0 < config.confidence < 1, f"{s}measure.noise_scale.confidence: must lie in (0, 1), such as 0.95")


def plan(study: StudyConfig, trials: list[dict[str, Any]], config: NoiseScaleConfig) -> list[Job]:
    settings = {"last_epochs": config.last_epochs, "confidence": config.confidence}
    # Only trials that recorded gradients at two batch sizes: several workers, or one with probes (a trial
    # trained before measure.noise_scale was added has none, and no job could ever write its value).
    recorded = [t for t in trials if t.get("workers", 1) > 1 or (t.get("noise_probes") or 0) > 0]
    # Named as the first versions named them, so a resumed study never writes a trial's value twice.
    return [
        Job("sharpness", "noise_scale", (t,), settings, "noise_scale", name=f"noise_scale-{t}")
        for t in trial_ids(recorded)
    ]


def run(job: Job, inputs: TaskInputs, part: Any) -> list[dict[str, Any]]:
    """B_simple of one trial from the units (probe pairs or blocks of steps) of its last epochs: a ratio
    of averages over all units, finite-population corrected for batches drawn without replacement from
    the training set, with a bootstrap interval over the units. No rows where nothing was recorded."""
    import pandas as pd

    from trainables.sharpness import noise_scale_interval

    epochs, trial_id = inputs.epochs, job.trials[0]
    assert epochs is not None, "the noise scale is computed on the driver, from the epochs table"
    rows = epochs[(epochs["trial_id"] == trial_id) & epochs["noise_small_grad_sq"].notna()]
    rows = rows.sort_values("epoch").tail(job.settings["last_epochs"])
    if rows.empty:
        return []
    units = []
    for _, row in rows.iterrows():
        recorded = row.get("noise_units")
        if isinstance(recorded, str):
            units += json.loads(recorded)
        else:  # epochs written before units were kept: the epoch's means are one unit
            units.append([row["noise_small_grad_sq"], row["noise_big_grad_sq"], 1.0])
    population = rows["noise_population"].iloc[-1] if "noise_population" in rows else None
    population = None if population is None or pd.isna(population) else int(population)
    small, big = float(rows["noise_small_batch"].iloc[-1]), float(rows["noise_big_batch"].iloc[-1])
    estimate = noise_scale_interval(
        units, small, big, population, confidence=job.settings["confidence"], seed=DIRECTION_SEED
    )
    settings = {
        "epochs": rows["epoch"].tolist(),
        "small_batch": small,
        "big_batch": big,
        "population": population,
        "sampling": "without replacement" if population else "with replacement (not recorded)",
        "algorithm": "two-batch-size estimator, ratio of averages, percentile bootstrap over units",
        **estimate,
    }
    return [
        {
            "trial_id": trial_id,
            "measure": "noise_scale",
            "value": estimate["b_simple"],
            "n_samples": estimate["units"],
            "ci_low": estimate["ci_low"],
            "ci_high": estimate["ci_high"],
            "settings": json.dumps(settings),
            "device": None,
        }
    ]


register(
    Measure(
        "noise_scale",
        NoiseScaleConfig,
        validate,
        plan,
        {"noise_scale": run},
        on_driver=True,
        shown=named("noise_scale", SHOWN),
        doc="the gradient noise scale B_simple of each trial's last epochs, with a bootstrap interval",
    )
)
