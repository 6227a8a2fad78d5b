"""Hyperparameters searched per group of trials (Shallue et al. 2018; Goyal et al. 2017), then the winners.

A study with a `search:` section runs in two phases. Samples: in every group (a point of the sweep grid,
seed aside: one group per batch size x augmentation x ...) `samples` points of the search space, drawn
from a generator seeded by (search.seed, group), so a resumed study draws exactly the same points and no
searcher state needs saving; optionally stopped early by ASHA, each group against its own samples only.
Finals: the best sample of each group (by best test accuracy) re-run with every `final_seeds` seed as
ordinary trials; only those feed the measurements and the main figures.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from study.config import DistributionConfig, SearchConfig, StudyConfig, searched_keys
from trainables.trial import TrialRun

if TYPE_CHECKING:  # pandas only where results are read: planning the samples (--dry-run) stays light
    import pandas as pd


def group_rng(search: SearchConfig, group: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{search.seed}|{group}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def draw(dist: DistributionConfig, rng: np.random.Generator) -> float:
    """One value of a distribution (loguniform: uniform in log space)."""
    if dist.loguniform is not None:
        low, high = dist.loguniform
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    if dist.uniform is not None:
        return float(rng.uniform(*dist.uniform))
    assert dist.choice is not None
    return float(dist.choice[int(rng.integers(len(dist.choice)))])


def draw_samples(search: SearchConfig, group: str) -> list[dict[str, float]]:
    """The group's `samples` points: {searched key: value}, the same on every call."""
    rng = group_rng(search, group)
    keys = searched_keys(search)
    return [{key: draw(getattr(search.space, key), rng) for key in keys} for _ in range(search.samples)]


def final_points(
    study: StudyConfig, trials: pd.DataFrame, epochs: pd.DataFrame | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """(group, the winner's values of the searched keys) per group that has a winner."""
    assert study.search is not None
    keys = searched_keys(study.search)
    from analysis.summarize import best_per_group

    return [(group, {k: float(row[k]) for k in keys}) for group, row in best_per_group(trials, epochs).items()]


def make_grouped_asha(study: StudyConfig) -> Any:
    """Ray Tune's ASHA, one per group: a large-batch sample is compared only with its own group's samples
    (across groups, early accuracy differs by design). Samples that reach the last epoch end on their own."""
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    assert study.search is not None and study.search.asha is not None
    asha = study.search.asha

    class GroupedASHA(FIFOScheduler):
        def __init__(self) -> None:
            super().__init__()
            self.groups: dict[str, AsyncHyperBandScheduler] = {}
            self.of_trial: dict[str, AsyncHyperBandScheduler] = {}

        def _for(self, trial: Any) -> AsyncHyperBandScheduler:
            if trial.trial_id not in self.of_trial:
                group = TrialRun.from_dict(trial.config["trial"]).spec.search_group
                if group not in self.groups:
                    self.groups[group] = AsyncHyperBandScheduler(
                        time_attr="epoch",
                        metric="test_acc",
                        mode="max",
                        max_t=study.schedule.epochs,
                        grace_period=min(asha.grace_period, study.schedule.epochs),
                        reduction_factor=asha.reduction_factor,
                        stop_last_trials=False,  # a sample at its last epoch finishes and writes its row
                    )
                self.of_trial[trial.trial_id] = self.groups[group]
            return self.of_trial[trial.trial_id]

        def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
            self._for(trial).on_trial_add(tune_controller, trial)

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            # ASHA's top rung can sit at the last epoch: a sample that trained to the end finishes (and
            # writes its own row) rather than being stopped after the fact.
            if result.get("kind") != "epoch" or result["epoch"] >= study.schedule.epochs:
                return FIFOScheduler.CONTINUE
            return self._for(trial).on_trial_result(tune_controller, trial, result)

        def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
            self._for(trial).on_trial_complete(tune_controller, trial, result or {})

        def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
            self._for(trial).on_trial_remove(tune_controller, trial)

    return GroupedASHA()
