"""Read a study's results store (local path or URI) into DataFrames; a study still running is fine."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from analysis.store import ResultsStore  # pandas + pyarrow only: no torch, no ray

TABLES = ("trials", "epochs", "sharpness", "landscape", "spectrum", "trajectory", "measure_errors")


@dataclass(frozen=True)
class StudyResults:
    root: str
    trials: pd.DataFrame
    epochs: pd.DataFrame
    sharpness: pd.DataFrame
    landscape: pd.DataFrame
    spectrum: pd.DataFrame
    trajectory: pd.DataFrame
    measure_errors: pd.DataFrame
    # trials column -> (role, shown) as the trial record defines them (analysis.store.ResultsStore.roles)
    trial_roles: dict[str, tuple[str, bool]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # files skipped: path -> why

    @property
    def study(self) -> str:
        return str(self.trials["study"].iloc[0]) if len(self.trials) else "(no trials yet)"


def load_results(results_dir: str) -> StudyResults:
    """Every table of the store; a missing table comes back empty with its columns."""
    store = ResultsStore(results_dir)
    tables = {name: store.read(name) for name in TABLES}
    # Trials still training have epoch rows but no trial row yet: keep their epochs visible.
    return StudyResults(store.root, **tables, trial_roles=store.roles("trials"), unreadable=dict(store.unreadable))
