"""What a measurement plug-in is: its settings, checks, jobs, runners and how the report names its values.

Torch-free and pandas-free at import: the study file's checks read the registry before anything heavy loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Collection, Mapping
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
    measure: str = ""  # the registered measure that planned it, filled in by plan_measure_jobs (not part of the key)
    name: str | None = None  # a fixed key, where files of an earlier version are named so
    # Its settings under a default that has since changed (not part of the key): a store that holds the job
    # measured so keeps it, with the method it recorded, instead of measuring the trial again (`as_stored`)
    earlier: tuple[dict[str, Any], ...] = ()

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
    # Whether the value survives rescaling a layer whose output a BatchNorm normalizes (w -> c w: the
    # same function; Dinh et al. 2017), "invariant: ..." or "changes: ...", with why: what the paper's
    # question can rest on (tests/test_invariance.py checks each claim on a BatchNorm network).
    invariance: str

    def columns(self) -> dict[str, str]:
        return {"title": self.title, "unit": self.unit, "flatter": self.flatter, "invariance": self.invariance}


def sample(asked: int | None, available: int | None) -> int:
    """Images a measure evaluates: `asked` (None: all) of the `available` (None: unknown, taken as asked)."""
    if asked is None:
        return available or 0
    return min(asked, available) if available else asked


def whole(job: Job, workers: int) -> list[Any]:
    """A job that runs as one task."""
    return [None]


Runner = Callable[[Job, TaskInputs, Any], list[dict[str, Any]]]
# A job's work, unit -> (how many, images each): {"products": (300, 500)} is 300 Hessian-vector products on
# 500 images, {"points": (9, 2000)} nine landscape points that each evaluate 2,000 images. The dry run
# prices it with study.bench's rates; the progress line's ETA with the rates measured while running.
Cost = dict[str, tuple[float, int]]


@dataclass(frozen=True)
class Measure:
    """One measurement: the `measure:` key `name` of a study file and everything that key does."""

    name: str
    settings: type  # the frozen dataclass its study-file section builds (`name: true` = its defaults)
    validate: Callable[[StudyConfig, Any, str], None]  # (study, its settings, "source: ") -> raises ConfigError
    # (study, the measured trials' records as dicts, settings) -> jobs; pandas-free, so --dry-run can cost them
    plan: Callable[[StudyConfig, list[dict[str, Any]], Any], list[Job]]
    runs: dict[str, Runner]  # job kind -> runner(job, inputs, part) -> rows, in a Ray task (or on the driver)
    parts: Callable[[Job, int], list[Any]] = whole  # a job's parts over `workers` tasks (landscape points)
    # Checks that need the planned trials (their records as dicts): (study, records, settings, "source: ")
    check_plan: Callable[[StudyConfig, list[dict[str, Any]], Any, str], None] | None = None
    on_driver: bool = False  # computed from the store on the driver (cheap: no Ray task, no checkpoint)
    ready: Callable[[Job, TaskInputs], bool] | None = None  # inputs beyond the checkpoint exist (snapshots)
    doc: str = ""  # one line for `--help`-like listings and the README check
    # The expected work of a job, or of one of its parts (None: the whole job), given the study's (train,
    # test) image counts (None: unknown); typical counts where an algorithm stops adaptively (it says which)
    cost: Callable[[Job, Any, tuple[int | None, int | None]], Cost] | None = None
    # How the report names each value the measure writes to `sharpness/` (its row's `measure`): a Shown,
    # or None for a name it does not write. run_job fills every sharpness row's columns from it, so a
    # runner need not; a measure that plans sharpness jobs without it, or writes a value it does not
    # name, is refused (`shown_for`).
    shown: Callable[[str], Shown | None] | None = None


def no_checks(study: StudyConfig, config: Any, s: str) -> None:
    """`Measure.validate` of a measure whose settings need no check beyond their fields' declared types and
    ranges (validated for every measure before this)."""


def named(name: str, shown: Shown) -> Callable[[str], Shown | None]:
    """`Measure.shown` of a measure that writes one value, under its own name."""
    return lambda value: shown if value == name else None


MEASURES: dict[str, Measure] = {}


def trial_ids(records: list[dict[str, Any]]) -> list[str]:
    return [record["trial_id"] for record in records]


def plan_measure_jobs(study: StudyConfig, records: list[dict[str, Any]]) -> list[Job]:
    """Every job the study's measure section asks for over these trials (records as dicts: rows of the
    trials table, or planned TrialSpecs for the dry run's cost), each measure planning its own."""
    jobs = []
    for name, measure in MEASURES.items():
        settings = getattr(study.measure, name)
        if settings is not None:  # each job names the measure that planned it: its module need not
            planned = [dataclasses.replace(job, measure=name) for job in measure.plan(study, records, settings)]
            if measure.shown is None and any(job.table == "sharpness" for job in planned):
                raise ValueError(
                    f"measure {name!r} plans sharpness jobs but says nothing of how the report names their "
                    "values: give its Measure shown= (study/measures/base.py, `named` for one value)"
                )
            jobs += planned
    return jobs


def stored_jobs(study: StudyConfig, records: list[dict[str, Any]], store: Any) -> tuple[list[Job], dict[str, set[str]]]:
    """Every job the study asks for over these trials (`plan_measure_jobs`) as `store` (a ResultsStore)
    holds them (`as_stored`), and the job keys written in each of their tables (one listing each)."""
    jobs = plan_measure_jobs(study, records)
    written = {table: store.keys(table) for table in {j.table for j in jobs}}
    return as_stored(jobs, written), written


def as_stored(jobs: list[Job], stored: Mapping[str, Collection[str]]) -> list[Job]:
    """The jobs as a store holds them: a job not written under its key but under the key of one of its
    `earlier` settings is that stored job (those settings, that key), so a changed default measures nothing
    twice. `stored`: table -> the job keys written there, for every table of `jobs`."""
    out = []
    for job in jobs:
        if job.earlier and job.key not in stored[job.table]:
            for settings in job.earlier:
                variant = dataclasses.replace(job, settings=settings, earlier=())
                if variant.key in stored[job.table]:
                    job = variant
                    break
        out.append(job)
    return out


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


def shown_for(job: Job, row: dict[str, Any]) -> dict[str, Any]:
    """A sharpness row with its value's name (the measure's, where the runner left it out) and the columns
    the report names it by, from the measure's registration."""
    measure = MEASURES[job.measure]
    value = row.get("measure") or job.measure
    shown = measure.shown(value) if measure.shown is not None else None
    if shown is None:
        raise ValueError(
            f"measure {job.measure!r} wrote the sharpness value {value!r}, which its Measure's shown= does not "
            "name: return a Shown for it"
        )
    return {**row, "measure": value, **shown.columns()}


def run_job(job: Job, inputs: TaskInputs, part: Any, task: str = "", board: Any = None) -> list[dict[str, Any]]:
    """One part of a job, as a Ray task runs it; every row says where it was computed (host, Ray node).
    With a `board` (the driver's ProgressBoard actor), what the runner says of its progress goes there
    under the name `task`."""
    global _reporter
    where = here()
    _reporter = Reporter(board, task) if board is not None else None
    try:
        rows = [{**row, **where} for row in runner_for(job)(job, inputs, part)]
        return [shown_for(job, row) for row in rows] if job.table == "sharpness" else rows
    finally:
        _reporter = None


# ---------------------------------------------------------------------------------------------
# Progress of a running measurement, for the driver's progress line


class Reporter:
    """What a runner says of its own progress, sent to the driver's board at most every REPORT_EVERY_S."""

    def __init__(self, board: Any, task: str) -> None:
        self.board, self.task = board, task
        self.started = time.perf_counter()
        self.sent_at = -math.inf

    def __call__(self, done: float, total: float | None, unit: str, images: int, text: str) -> None:
        now = time.perf_counter()
        if now - self.sent_at < REPORT_EVERY_S:
            return
        self.sent_at = now
        report = {"done": done, "total": total, "unit": unit, "images": images, "text": text}
        self.board.say.remote(self.task, {**report, "elapsed_s": now - self.started})


REPORT_EVERY_S = 2.0
_reporter: Reporter | None = None


def progress(done: float, total: float | None, unit: str, images: int, text: str) -> None:
    """A runner's progress: `done` of `total` (None: not known yet) `unit`s ("products", "points", "steps")
    of `images` images each, and a few words ("trace 140 products, s.e. 3.1% -> 2%"). Nothing outside a
    measurement task the driver watches."""
    if _reporter is not None:
        _reporter(done, total, unit, images, text)


class ProgressBoard:
    """A Ray actor of the driver's (no CPU): the running tasks' latest reports, by task name."""

    def __init__(self) -> None:
        self.reports: dict[str, dict[str, Any]] = {}

    def say(self, task: str, report: dict[str, Any]) -> None:
        self.reports[task] = report

    def read(self) -> dict[str, dict[str, Any]]:
        return dict(self.reports)


def here() -> dict[str, str | None]:
    """This process's host name and Ray node id (None outside Ray)."""
    import socket

    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    return {"host": socket.gethostname(), "node_id": node}
