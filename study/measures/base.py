"""What a measurement plug-in is: its settings, checks, jobs, runners and how the report names its values.

Torch-free and pandas-free at import: the study file's checks read the registry before anything heavy loads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import pandas as pd

    from study.config import StudyConfig

DIRECTION_SEED = 20180101  # the random directions of a trial depend only on this and the trial's seed


@dataclass(frozen=True)
class Job:
    """One measurement with its own output file (`table/key.parquet`)."""

    table: str  # the results table it writes: sharpness | landscape | spectrum | trajectory
    kind: str  # which of its measure's runners computes it: interp1d, hessian, hessian_density, ...
    trials: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    measure: str = ""  # the registered measure that planned it (not part of the key)
    name: str | None = None  # a fixed key, where files of an earlier version are named so

    @property
    def key(self) -> str:
        if self.name is not None:
            return self.name
        digest = hashlib.sha1(json.dumps([self.kind, self.trials, self.settings], sort_keys=True).encode())
        return f"{self.kind}-{'-'.join(self.trials)}-{digest.hexdigest()[:6]}"


@dataclass(frozen=True)
class TaskInputs:
    """What every runner may read besides its job: each trial's record (JSON) and last checkpoint, the
    folder of trajectory snapshots, and (for measures computed on the driver) the epochs table."""

    specs: dict[str, str]
    checkpoints: dict[str, str]
    snapshots: str = ""
    epochs: pd.DataFrame | None = None


@dataclass(frozen=True)
class Shown:
    """How the report names one value a measure writes to `sharpness/` (the rows carry it)."""

    title: str  # panel title
    unit: str  # y-axis title, with units
    flatter: str  # "lower" or "higher" where the value ranks flatness, "" where it does not (noise scale)

    def columns(self) -> dict[str, str]:
        return {"title": self.title, "unit": self.unit, "flatter": self.flatter}


def whole(job: Job, workers: int) -> list[Any]:
    """A job that runs as one task."""
    return [None]


Runner = Callable[[Job, TaskInputs, Any], list[dict[str, Any]]]


@dataclass(frozen=True)
class Measure:
    """One measurement: the `measure:` key `name` of a study file and everything that key does."""

    name: str
    settings: type  # the frozen dataclass its study-file section builds (`name: true` = its defaults)
    validate: Callable[[StudyConfig, Any, str], None]  # (study, its settings, "source: ") -> raises ConfigError
    plan: Callable[[StudyConfig, pd.DataFrame, Any], list[Job]]  # (study, measured trials, settings) -> jobs
    runs: dict[str, Runner]  # job kind -> runner(job, inputs, part) -> rows, in a Ray task (or on the driver)
    parts: Callable[[Job, int], list[Any]] = whole  # a job's parts over `workers` tasks (landscape points)
    # Checks that need the planned trials (their records as dicts): (study, records, settings, "source: ")
    check_plan: Callable[[StudyConfig, list[dict[str, Any]], Any, str], None] | None = None
    on_driver: bool = False  # computed from the store on the driver (cheap: no Ray task, no checkpoint)
    ready: Callable[[Job, TaskInputs], bool] | None = None  # inputs beyond the checkpoint exist (snapshots)
    doc: str = ""  # one line for `--help`-like listings and the README check


MEASURES: dict[str, Measure] = {}


def register(measure: Measure) -> Measure:
    if measure.name in MEASURES:
        raise ValueError(f"measure {measure.name!r} is registered twice")
    MEASURES[measure.name] = measure
    return measure


def runner_for(job: Job) -> Runner:
    """The runner of a job's kind in its measure; an unknown measure or kind raises, never a fallback."""
    if job.measure not in MEASURES:
        raise KeyError(f"job {job.key}: no measure {job.measure!r} is registered (study/measures/)")
    runs = MEASURES[job.measure].runs
    if job.kind not in runs:
        raise KeyError(f"job {job.key}: measure {job.measure!r} has no runner for kind {job.kind!r}")
    return runs[job.kind]


def run_job(job: Job, inputs: TaskInputs, part: Any) -> list[dict[str, Any]]:
    """One part of a job, as a Ray task runs it; every row says where it was computed (host, Ray node)."""
    where = here()
    return [{**row, **where} for row in runner_for(job)(job, inputs, part)]


def here() -> dict[str, str | None]:
    """This process's host name and Ray node id (None outside Ray)."""
    import socket

    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    return {"host": socket.gethostname(), "node_id": node}
