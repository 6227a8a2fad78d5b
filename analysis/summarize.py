"""Tables that answer the study's questions: final metrics, gaps, seed aggregates, steps to a target."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

GROUP = ["batch_size", "augmentation_label", "lr_scaling"]  # one curve per (augmentation, rule) along batch size


def with_labels(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials with an `augmentation_label` column, the key figures group by (the trial record writes
    it; a store from before it was recorded reads as 'unrecorded')."""
    if "augmentation_label" in trials:
        return trials
    return trials.assign(augmentation_label=pd.Series(["unrecorded"] * len(trials), index=trials.index, dtype=str))


def finite(frame: pd.DataFrame, column: str) -> pd.Series:
    """Which rows hold a finite number in `column`: NaN, None, +-inf and non-numbers are left out alike."""
    return pd.Series(np.isfinite(pd.to_numeric(frame[column], errors="coerce").astype(float)), index=frame.index)


def t_quantile(df: float, confidence: float = 0.95) -> float:
    """The two-sided Student-t quantile at `df` degrees of freedom, fractional ones included (Welch's)."""
    from scipy.stats import t  # imported here: a study file is checked without loading scipy

    return float(t.ppf(0.5 + confidence / 2, df))


def aggregate_over_seeds(frame: pd.DataFrame, value: str, by: list[str] | None = None) -> pd.DataFrame:
    """Mean, 95% t-interval and n of `value` over seeds (over every trial sharing the `by` keys)."""
    by = by or GROUP
    if "augmentation_label" in by:
        frame = with_labels(frame)
    rows = []
    for key, group in frame[finite(frame, value)].groupby(by, sort=True):
        values = group[value].to_numpy(dtype=float)
        n = len(values)
        mean = float(values.mean())
        half = t_quantile(n - 1) * float(values.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
        rows.append(
            {
                **dict(zip(by, key if isinstance(key, tuple) else (key,))),
                "mean": mean,
                "ci_low": mean - half,
                "ci_high": mean + half,
                "n": n,
            }
        )
    return pd.DataFrame(rows, columns=[*by, "mean", "ci_low", "ci_high", "n"])


def steps_to_target(trials: pd.DataFrame, epochs: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per trial: the first epoch (and optimizer step) at which test accuracy reached `target`
    (Shallue et al. 2018's steps-to-result); trials that never did are left out."""
    rows = []
    readable = epochs.dropna(subset=["test_acc"]) if "test_acc" in epochs else epochs.iloc[0:0]  # none read: none
    for trial_id, curve in readable.groupby("trial_id"):
        hit = curve[curve["test_acc"] >= target].sort_values("epoch")
        if hit.empty:
            continue
        rows.append(
            {
                "trial_id": trial_id,
                "epochs_to_target": int(hit["epoch"].iloc[0]),
                "steps_to_target": int(hit["step"].iloc[0]),
            }
        )
    reached = pd.DataFrame(rows, columns=["trial_id", "epochs_to_target", "steps_to_target"])
    return with_labels(trials)[["trial_id", *GROUP, "seed"]].merge(reached, on="trial_id")


def default_target(trials: pd.DataFrame) -> float:
    """A target every configuration can be compared on: 95% of the worst best-per-batch accuracy."""
    best = trials.groupby("batch_size")["best_test_acc"].max().dropna()
    return float(np.floor(0.95 * best.min() * 100) / 100) if len(best) else math.nan


def sharpness_table(trials: pd.DataFrame, sharpness: pd.DataFrame) -> pd.DataFrame:
    """One row per trial and measure, with the trial's conditions."""
    extra = [c for c in ("model", "label_within_model") if c in trials]  # for the by-model view
    return sharpness.merge(with_labels(trials)[["trial_id", *GROUP, *extra, "seed", "status"]], on="trial_id")


def stored_config(trials: pd.DataFrame) -> dict:
    """The resolved study file stored with every trial row (the newest row's); {} without one."""
    configs = trials["config"].dropna() if "config" in trials else pd.Series(dtype=object)
    return json.loads(configs.iloc[-1]) if len(configs) else {}


def search_objective(trials: pd.DataFrame) -> tuple[str, float | None]:
    """(objective, target) of the study's search, read from the study file stored with every trial row."""
    search = stored_config(trials).get("search")
    if not search:
        return "best_test_acc", None
    return search.get("objective", "best_test_acc"), search.get("target")


def best_per_group(trials: pd.DataFrame, epochs: pd.DataFrame | None = None) -> dict[str, pd.Series]:
    """A search's winners: group -> its best sample among those that ran to the end (samples stopped early
    or diverged compete only when none did). Best: the highest best_test_acc, or with the steps_to_target
    objective the fewest steps to the target (ties and samples that never reached it: best_test_acc)."""
    if "phase" not in trials:
        return {}
    samples = trials[trials["phase"] == "sample"]
    objective, target = search_objective(samples)
    if objective == "steps_to_target" and epochs is not None and target is not None and len(samples):
        reached = steps_to_target(samples, epochs, target)[["trial_id", "steps_to_target"]]
        samples = samples.merge(reached, on="trial_id", how="left")
    winners = {}
    for group, rows in samples.groupby("search_group", sort=True):
        scored = rows[np.isfinite(rows["best_test_acc"].astype(float))]
        finished = scored[scored["status"] == "completed"]
        pool = finished if len(finished) else scored
        if not len(pool):
            continue
        # Fewest steps first (NaN: never reached, last), then the highest accuracy.
        keys = [pool["best_test_acc"].astype(float).rank(ascending=False, method="first")]
        if "steps_to_target" in pool:
            keys.insert(0, pool["steps_to_target"].astype(float).rank(method="min", na_option="bottom"))
        order = pd.concat(keys, axis=1).apply(tuple, axis=1).sort_values()
        winners[str(group)] = pool.loc[order.index[0]]
    return winners
