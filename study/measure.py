"""The measurement phase: sharpness and loss landscapes of trained trials, spread over Ray tasks.

    python -m study.measure RESULTS_DIR [--address ADDR]

Plans jobs from the study's `measure` section through the registered measurements (study/measures/:
per completed trial, or per pair of trials that differ only in `interpolate.between`), splits each job
into the parts its measure asks for (landscape points over the workers), runs each part as a Ray task
(or on the driver, for measures computed from the store), and writes one file per job, atomically. Jobs
whose file exists are skipped, so re-running measures only what is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

from analysis.store import ResultsStore, is_export, join, parent
from analysis.words import counted, every
from study.cluster import connect_ray
from study.config import ConfigError, StudyConfig, build, validate
from study.measures import MEASURES, Cost, Job, ProgressBoard, TaskInputs, run_job
from study.measures.base import stored_jobs
from study.plan import bench_measure_rates, image_counts
from study.progress import PROGRESS_EVERY_S, duration
from trainables.trial import Phase, Status, TrialSpec


def plan_jobs(study: StudyConfig, trials: pd.DataFrame, store: ResultsStore) -> tuple[list[Job], dict[str, set[str]]]:
    """Every job the study's measure section asks for over its completed trials, each measure planning its own,
    as the store holds them (a job measured under an earlier default is that job: `as_stored`); and the job
    keys written in each of their tables (one listing each)."""
    return stored_jobs(study, trials[trials["status"] == Status.COMPLETED].to_dict("records"), store)


# ---------------------------------------------------------------------------------------------
# The driver


# A unit's work per image relative to a loss-and-gradient step, where no rate is known yet: a Hessian-vector
# product (double backpropagation) took 3.1x a gradient on VGG9 width 0.25 here (2.45 s against 0.78 s on
# 500 images, one thread), a landscape point's forward pass about a third of one.
UNIT_WORK = {"products": 3.1, "steps": 1.0, "points": 0.35}


@dataclass(frozen=True)
class MeasureOutcome:
    written: int  # jobs whose results were written
    failed: dict[str, str]  # job key -> the last line of its error (recorded in `measure_errors/`)

    def summary(self) -> str:
        line = f"measure: {self.written} jobs written"
        if self.failed:
            line += f"; {len(self.failed)} failed ({', '.join(sorted(self.failed))}), see results/measure_errors/"
        return line


def error_line(error: BaseException) -> str:
    """The last non-empty line of an error (a Ray task error carries the remote traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def measured_trials(store: ResultsStore) -> pd.DataFrame:
    """The trials whose checkpoints are measured: a search's samples only choose the winners."""
    trials = store.read("trials")
    return trials[trials["phase"] != Phase.SAMPLE] if "phase" in trials else trials


def measured_another_training(store: ResultsStore, job: Job, identity: dict[str, str | None]) -> bool:
    """Whether the job's file records a training of its trials other than `identity` (trial id -> the
    trial row's finished_at); a file from before trainings were recorded counts as current."""
    recorded = store.read(job.table, job.key)
    if "trained_at" not in recorded or recorded["trained_at"].isna().all():
        return False
    return json.loads(recorded["trained_at"].dropna().iloc[0]) != identity


def jobs_to_do(study: StudyConfig, store: ResultsStore) -> tuple[list[Job], list[Job]]:
    """(every job the completed trials ask for, those not written or stale), from the store alone: what
    study.measure answers before it starts Ray."""
    trials = measured_trials(store)
    completed = trials[trials["status"] == Status.COMPLETED]
    trained_at = {t: stamp(f) for t, f in zip(completed["trial_id"], completed.get("finished_at", []))}
    jobs, existing = plan_jobs(study, trials, store)
    todo = [
        j
        for j in jobs
        if j.key not in existing[j.table]
        or measured_another_training(store, j, {t: trained_at.get(t) for t in j.trials})
    ]
    return jobs, todo


def run_measurements(study: StudyConfig, store: ResultsStore) -> MeasureOutcome:
    """Run every missing measurement job of the study, all at once (its training is over). A job that
    fails is recorded in `measure_errors/` with its error's last line and the others go on; a job that
    later succeeds drops its error record."""
    from study.cluster import autoscaling

    measurements = Measurements(study, store, autoscaled=autoscaling())
    measurements.plan()
    return measurements.finish()


class Measurements:
    """The measurement phase as a scheduler, so that it can run beside training: jobs are planned from the
    trials completed so far (`plan`, again whenever a trial ends), their parts wait in a queue and go to
    Ray as tasks while `free_slots` allows, and each job is written when its last part returns (`poll`).

    Priority: training first. While trials are still to train, a measurement task takes only a slot that
    no unfinished trial can use (`reserved` counts the slots those trials hold or will take), so that
    measurements never delay the training they depend on (an interpolation needs both of its trials,
    and the study's end is the last trial's end plus what is left to measure); once training is over
    every job is submitted at once and Ray queues them (an autoscaler launches nodes for them).

    A job whose file exists is done, unless it measured an earlier training of its trials (a trial
    trained again after its row was lost or set aside): then the file is set aside as
    `_<key>.parquet.superseded` and the job runs again, so that no measurement is kept stale."""

    def __init__(
        self,
        study: StudyConfig,
        store: ResultsStore,
        reserved: Callable[[], float] | None = None,
        autoscaled: bool = False,
    ) -> None:
        self.study, self.store = study, store
        self.reserved = reserved or (lambda: 0.0)
        # On a cluster that grows, parts beyond its slots are demand the autoscaler launches nodes for; on
        # a fixed one they wait here, so that "running" means running and the ETA is over the real slots.
        self.autoscaled = autoscaled
        self.queue: list[tuple[Job, Any]] = []  # (job, part) waiting for a slot
        self.in_flight: dict[Any, Task] = {}  # Ray object ref -> its part
        self.parts: dict[str, list[dict[str, Any]]] = {}  # job key -> rows of its parts returned so far
        self.remaining: dict[str, int] = {}  # job key -> parts not yet returned
        self.inputs: dict[str, TaskInputs] = {}  # job key -> what its tasks read
        self.identity: dict[str, dict[str, str | None]] = {}  # job key -> trial id -> the training it measures
        self.seen: set[str] = set()  # job keys planned (and checked against their files) by this run
        self.failed: dict[str, str] = {}
        self.written = 0
        self.jobs: dict[str, Job] = {}  # job key -> job, of those this run runs as tasks
        self.done = 0  # of those, written
        self.on_driver = 0  # jobs computed and written on the driver (no task)
        self.expected = 0  # jobs the whole plan asks for, not written before this run (`expect`)
        self.started_at = time.perf_counter()
        self.said_at = time.perf_counter()
        self._task: Any = None
        self.board: Any = None  # the tasks' progress reports (a ProgressBoard actor)
        self.tasks = 0  # parts submitted, for their names
        self.reports: dict[str, dict[str, Any]] = {}  # task name -> its latest report, as last read
        self.rates: dict[str, tuple[float, float]] = {}  # unit -> (seconds, unit-images) of finished parts
        # Until a part of a unit has finished here, the ETA prices it at the rate study.bench measured on
        # this machine (where it has): an ETA from the first minute, replaced by this run's own rates.
        self.bench_rates = bench_measure_rates(study)[0]  # unit -> unit-images per second
        self.sizes = image_counts(study)
        self._workers: tuple[int, float] = (0, -math.inf)  # (measurement slots, perf_counter when read)

    # -- planning ------------------------------------------------------------------------------

    def plan(self) -> int:
        """Queue every job the trials completed so far ask for that is neither done nor planned; returns
        how many were queued (jobs computed on the driver are computed here and then)."""
        trials = measured_trials(self.store)
        completed = trials[trials["status"] == Status.COMPLETED]
        trained_at = {t: stamp(f) for t, f in zip(completed["trial_id"], completed.get("finished_at", []))}
        jobs, existing = plan_jobs(self.study, trials, self.store)
        new = [j for j in jobs if j.key not in self.seen]
        queued = 0
        for job in new:
            self.seen.add(job.key)
            identity = {t: trained_at.get(t) for t in job.trials}
            if job.key in existing[job.table] and not self.stale(job, identity):
                continue
            inputs = TaskInputs(
                {t: s for t, s in zip(trials["trial_id"], trials["spec"]) if t in job.trials},
                {t: c for t, c in zip(trials["trial_id"], trials["checkpoint"]) if t in job.trials},
                trajectory_folder(self.store),
            )
            measure = MEASURES[job.measure]
            if measure.on_driver:
                self.run_on_driver(job, inputs, identity)
                continue
            if measure.ready is not None and not measure.ready(job, inputs):
                continue
            self.inputs[job.key], self.jobs[job.key] = inputs, job
            self.identity[job.key] = identity
            pieces = measure.parts(job, self.workers())
            self.queue += [(job, piece) for piece in pieces]
            self.remaining[job.key], self.parts[job.key] = len(pieces), []
            queued += 1
        return queued

    def expect(self, specs: list[TrialSpec]) -> None:
        """Count the jobs the study's whole plan asks for that no earlier run wrote: the total the progress
        line counts against from the start (the dry-run's count, less what is written), instead of one
        that grows as trials complete and their jobs are planned."""
        measured = [s.to_dict() for s in specs if s.phase != Phase.SAMPLE]  # as measured_trials: no samples
        jobs, existing = stored_jobs(self.study, measured, self.store)
        self.expected = sum(job.key not in existing[job.table] for job in jobs)

    def stale(self, job: Job, identity: dict[str, str | None]) -> bool:
        """Whether the job's file measured another training of its trials than the one on record now (a
        file written before trainings were recorded with it counts as current); a stale file is set aside."""
        if not measured_another_training(self.store, job, identity):
            return False
        path = join(self.store.table_dir(job.table), f"{job.key}.parquet")
        kept = self.store.set_aside(path, "superseded")
        print(
            f"measure: {job.key} measured an earlier training of {', '.join(job.trials)}: "
            f"kept as {kept}, measured again",
            flush=True,
        )
        return True

    # -- running -------------------------------------------------------------------------------

    def workers(self) -> int:
        """Measurement slots of the cluster (`slot_resource`), read again at most every SLOTS_EVERY_S: the
        scheduler asks on every step of Tune's loop, and the cluster changes only as nodes come and go."""
        import ray

        slots, read_at = self._workers
        if time.perf_counter() - read_at >= SLOTS_EVERY_S:
            resources = ray.cluster_resources()
            slots = max(1, int(resources.get(slot_resource(resources), 1)))
            self._workers = (slots, time.perf_counter())
        return slots

    def free_slots(self) -> float:
        reserved = self.reserved()
        if reserved <= 0 and self.autoscaled:
            return math.inf
        return self.workers() - reserved - len(self.in_flight)

    def submit(self) -> None:
        import ray

        if self._task is None:
            on_gpus = slot_resource(ray.cluster_resources()) == "GPU"
            self._task = ray.remote(run_job).options(**({"num_gpus": 1} if on_gpus else {"num_cpus": 1}))
            self.board = ray.remote(num_cpus=0)(ProgressBoard).remote()
        while self.queue and self.free_slots() >= 1:
            job, piece = self.queue.pop(self.longest())
            self.tasks += 1
            label = f"{job.key}#{self.tasks}"
            ref = self._task.remote(job, self.inputs[job.key], piece, label, self.board)
            self.in_flight[ref] = Task(job, piece, label, time.perf_counter())

    def longest(self) -> int:
        """The queued part expected to take longest (its work in gradient-equivalent images): started
        first, so that the cheap parts fill the slots at the end instead of one long Hessian job running
        alone while the other slots idle (the mini study's last 3 minutes, before)."""

        def work(job: Job, part: Any) -> float:
            cost = self.cost(job, part).items()
            return sum(n * max(1, images) * UNIT_WORK.get(unit, 1.0) for unit, (n, images) in cost)

        return max(range(len(self.queue)), key=lambda i: work(*self.queue[i]))

    def poll(self, timeout_s: float = 0.0) -> None:
        """Submit what the free slots allow, then write every job whose last part has returned."""
        import ray

        self.submit()
        if not self.in_flight:
            return
        ready, _ = ray.wait(list(self.in_flight), num_returns=len(self.in_flight), timeout=timeout_s)
        for ref in ready:
            self.returned(ref, self.in_flight.pop(ref))
        if ready:
            self.submit()

    def returned(self, ref: Any, task: Task) -> None:
        import ray

        job = task.job
        try:
            part = ray.get(ref)
        except Exception as error:  # noqa: BLE001 - any task error: record it, let the other jobs finish
            if job.key not in self.failed:
                self.failed[job.key] = error_line(error)
                self.store.write("measure_errors", job.key, [job_error_row(job, self.failed[job.key])])
                print(f"measure: {job.key} failed: {self.failed[job.key]}", file=sys.stderr, flush=True)
            part = []
        else:
            self.learn(task, time.perf_counter() - task.started)
        self.parts[job.key] += part
        self.remaining[job.key] -= 1
        if self.remaining[job.key] == 0 and job.key not in self.failed:
            rows = sorted(self.parts.pop(job.key), key=lambda r: (r.get("split", ""), r.get("y") or 0, r.get("x", 0)))
            self.write(job, rows, self.identity[job.key])
            self.store.remove("measure_errors", job.key)  # an error of an earlier run no longer holds
            self.done += 1
            self.said_at = -math.inf  # a job ended: say so

    def run_on_driver(self, job: Job, inputs: TaskInputs, identity: dict[str, str | None]) -> None:
        """A job computed from the store itself (the noise scale, from the epochs table): no task, no checkpoint."""
        epochs = pd.concat([self.store.read("epochs", t) for t in job.trials], ignore_index=True)
        rows = run_job(job, TaskInputs(inputs.specs, inputs.checkpoints, inputs.snapshots, epochs=epochs), None)
        if rows:  # nothing recorded for this trial (yet): no file, so a later run tries again
            self.write(job, rows, identity)
            self.on_driver += 1
        else:
            self.seen.discard(job.key)

    def write(self, job: Job, rows: list[dict[str, Any]], identity: dict[str, str | None]) -> None:
        """The job's file; every row says when it was measured and which training of its trials it measured."""
        when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        trained_at = json.dumps(identity, sort_keys=True)
        self.store.write(job.table, job.key, [{**r, "measured_at": when, "trained_at": trained_at} for r in rows])
        self.written += 1

    def busy(self) -> bool:
        return bool(self.queue or self.in_flight)

    def finish(self) -> MeasureOutcome:
        """Training is over: every queued part goes to Ray; wait for them all, saying how far it is."""
        self.reserved = lambda: 0.0
        while self.busy():
            self.poll(timeout_s=1.0)
            if time.perf_counter() - self.said_at >= PROGRESS_EVERY_S and self.jobs:
                print(self.line(), flush=True)
                self.said_at = time.perf_counter()
        return MeasureOutcome(self.written, self.failed)

    # -- progress ------------------------------------------------------------------------------

    def cost(self, job: Job, part: Any) -> Cost:
        measure = MEASURES[job.measure]
        return measure.cost(job, part, self.sizes) if measure.cost is not None else {}

    def learn(self, task: Task, seconds: float) -> None:
        """A finished part's seconds per unit-image, by unit: what the ETA of the parts still to run uses."""
        for unit, (count, images) in self.cost(task.job, task.part).items():
            report = self.reports.get(task.label)
            if report is not None and report["unit"] == unit and report["done"]:
                count, images = report["done"], report["images"]
                seconds = report["elapsed_s"]
            spent, work = self.rates.get(unit, (0.0, 0.0))
            self.rates[unit] = (spent + seconds, work + count * max(1, images))

    def seconds_left(self, task: Task | None, job: Job, part: Any) -> float:
        """A part's remaining seconds: from its own report where it has one, else its cost at measured rates."""
        report = self.reports.get(task.label) if task is not None else None
        if report is not None and report["done"] and report["total"] is not None:
            return report["elapsed_s"] / report["done"] * max(0.0, report["total"] - report["done"])
        left = 0.0
        for unit, (count, images) in self.cost(job, part).items():
            if unit in self.rates:
                spent, work = self.rates[unit]
                left += spent / work * count * max(1, images)
            elif unit in self.bench_rates:
                left += count * max(1, images) / self.bench_rates[unit]
            else:
                return math.nan
        return left - (time.perf_counter() - task.started if task is not None else 0.0)

    def line(self) -> str:
        """'measure: 3/12 jobs written, 2 running (hessian-b1024...: trace 140 products, s.e. 3.1% -> 2%),
        7 queued, 1m20s elapsed, ETA 5m10s': the ETA from the running parts' own progress and the per-unit
        costs measured so far, over the slots measurements have."""
        import ray

        with contextlib.suppress(Exception):  # a slow board: the reports of the last reading
            if self.board is not None:
                self.reports = ray.get(self.board.read.remote(), timeout=5)
        running = list(self.in_flight.values())
        self.reports = {t.label: self.reports[t.label] for t in running if t.label in self.reports}
        said = [
            f"{t.job.kind} {' '.join(t.job.trials)}: {self.reports[t.label]['text']}"
            for t in running
            if t.label in self.reports
        ]
        left = [max(0.0, self.seconds_left(t, t.job, t.part)) for t in running]
        left += [self.seconds_left(None, job, part) for job, part in self.queue]
        slots = max(1.0, min(len(left), self.workers() - max(0.0, self.reserved()))) if left else 1.0
        timed = [x for x in left if math.isfinite(x)]
        untimed = len(left) - len(timed)
        # parts of a unit neither this run nor study.bench has timed: the ETA says it leaves them out
        # nothing timed yet but untimed parts (an ETA of 0 s would be a guess): it does not know
        known = timed and (sum(timed) > 0 or not untimed)
        eta = f"ETA {duration(sum(timed) / slots)}" if known or not left else "ETA ?"
        if timed and untimed:
            eta += f" + {untimed} untimed part{'s' if untimed > 1 else ''}"
        detail = f" ({'; '.join(said)})" if said else ""
        planned = len(self.jobs) + self.on_driver
        waiting = max(0, self.expected - planned)  # their trials are still training: not in the ETA
        if waiting:
            eta += f" for the {counted(planned, 'planned job')}, {waiting} more when their trials end"
        return (
            f"measure: {self.written}/{planned + waiting} jobs written, {len(running)} running{detail}, "
            f"{len(self.queue)} parts queued; {duration(time.perf_counter() - self.started_at)} elapsed, {eta}"
        )


@dataclass(frozen=True)
class Task:
    """One part of a job, running as a Ray task."""

    job: Job
    part: Any
    label: str  # its name on the progress board
    started: float  # perf_counter when submitted


SLOTS_EVERY_S = 10.0


def slot_resource(resources: dict[str, float]) -> str:
    """What one measurement task holds: a GPU where the cluster has them, else a CPU."""
    return "GPU" if resources.get("GPU", 0) > 0 else "CPU"


def stamp(value: Any) -> str | None:
    """A trial row's finished_at as text (its identity as a training): None where it has none."""
    return None if value is None or pd.isna(value) else pd.Timestamp(value).isoformat()


def job_error_row(job: Job, error: str) -> dict[str, Any]:
    return {
        "job": job.key,
        "table": job.table,
        "kind": job.kind,
        "trials": ",".join(job.trials),
        "error": error,
        "failed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def trajectory_folder(store: ResultsStore) -> str:
    """<storage>/<study>/trajectory, beside the results folder: one folder of weight snapshots per trial."""
    results_root = store.uri if "://" in store.uri else store.root
    return join(parent(results_root), "trajectory")


def study_from_store(store: ResultsStore) -> StudyConfig:
    """The study's settings, from the config its trial rows carry; ConfigError when no row can be read."""
    trials = store.read("trials")
    configs = trials["config"].dropna() if "config" in trials else trials.iloc[0:0]
    if configs.empty:
        unreadable = [path for path in store.unreadable if "/trials/" in path]
        said = f"{counted(len(unreadable), 'trial file')} cannot be read" if unreadable else "no trial has finished"
        raise ConfigError(
            f"{store.root}: {said}, so there is nothing to measure; resume the study "
            "(run_sweep --resume) to train those trials again"
        )
    config = json.loads(configs.iloc[-1])
    study = build(StudyConfig, config, "")
    validate(study, store.root)
    return study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m study.measure", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results_dir", help="a study's folder, <storage>/<name>, or its results/ (path or URI)")
    parser.add_argument(
        "--address",
        help="join this Ray cluster; auto = the one running here (default: RAY_ADDRESS, else a fresh local one)",
    )
    args = parser.parse_args(argv)
    try:
        store = ResultsStore.found(args.results_dir)
        if store is None or is_export(store.uri):  # an export has no checkpoints to measure
            raise ConfigError(
                f"{args.results_dir} is not a results store (no trials/ or epochs/ Parquet files, there or in its "
                "results/); pass the study's folder that run_sweep printed, <storage>/<name>"
            )
        study = study_from_store(store)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Nothing to measure is said from the store, in about a second, in words that say why: Ray started
    # for 25 s to print "0 jobs written" whether nothing was asked or everything was done.
    if all(getattr(study.measure, name) is None for name in MEASURES):
        print(f"measure: nothing to do: the study file asks for no measurements (no measure section; {store.root})")
        return 0
    jobs, todo = jobs_to_do(study, store)
    if not todo:
        print(
            f"measure: nothing to do: {every(len(jobs), 'measurement')} of the completed trials written ({store.root})"
        )
        return 0
    connect_ray(args.address)
    outcome = run_measurements(study, store)
    print(f"{outcome.summary()} (results in {store.root})")
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
