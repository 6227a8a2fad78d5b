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
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.store import ResultsStore, join, parent
from study.cluster import connect_ray
from study.config import ConfigError, StudyConfig, build, validate
from study.measures import MEASURES, Job, TaskInputs, run_job
from study.progress import duration, eta
from trainables.trial import Phase, Status


def plan_jobs(study: StudyConfig, trials: pd.DataFrame) -> list[Job]:
    """Every job the study's measure section asks for over its completed trials, each measure planning its own."""
    completed = trials[trials["status"] == Status.COMPLETED]
    jobs = []
    for name, measure in MEASURES.items():
        settings = getattr(study.measure, name)
        if settings is not None:
            jobs += measure.plan(study, completed, settings)
    return jobs


# ---------------------------------------------------------------------------------------------
# The driver


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


def run_measurements(study: StudyConfig, store: ResultsStore) -> MeasureOutcome:
    """Run every missing measurement job of the study. A job that fails is recorded in
    `measure_errors/` with its error's last line and the others go on; a job that later succeeds
    drops its error record."""
    trials = measured_trials(store)
    planned = plan_jobs(study, trials)
    existing = {table: store.keys(table) for table in {j.table for j in planned}}
    jobs = [j for j in planned if j.key not in existing[j.table]]
    inputs = TaskInputs(
        dict(zip(trials["trial_id"], trials["spec"])),
        dict(zip(trials["trial_id"], trials["checkpoint"])),
        trajectory_folder(store),
    )
    written = run_on_driver(store, [j for j in jobs if MEASURES[j.measure].on_driver], inputs)
    ready = [j for j in jobs if not MEASURES[j.measure].on_driver]
    ready = [j for j in ready if MEASURES[j.measure].ready is None or MEASURES[j.measure].ready(j, inputs)]
    outcome = run_tasks(store, ready, inputs) if ready else MeasureOutcome(0, {})
    return MeasureOutcome(written + outcome.written, outcome.failed)


def run_on_driver(store: ResultsStore, jobs: list[Job], inputs: TaskInputs) -> int:
    """Jobs computed from the store itself (the noise scale, from the epochs table): no task, no checkpoint."""
    if not jobs:
        return 0
    inputs = TaskInputs(inputs.specs, inputs.checkpoints, inputs.snapshots, epochs=store.read("epochs"))
    written = 0
    for job in jobs:
        rows = run_job(job, inputs, None)
        if rows:  # nothing recorded for this trial (yet): no file, so a later run tries again
            store.write(job.table, job.key, rows)
            written += 1
    return written


def run_tasks(store: ResultsStore, jobs: list[Job], inputs: TaskInputs) -> MeasureOutcome:
    """Each job's parts as Ray tasks (one GPU each, else one CPU), each job written when its last part ends."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    workers = gpus or max(1, int(resources.get("CPU", 1)))
    task = ray.remote(run_job).options(**({"num_gpus": 1} if gpus else {"num_cpus": 1}))
    shared = ray.put(inputs)  # once, not once per task
    pending: dict[Any, Job] = {}
    parts: dict[str, list[Any]] = {}
    remaining: dict[str, int] = {}
    for job in jobs:
        pieces = MEASURES[job.measure].parts(job, workers)
        for piece in pieces:
            pending[task.remote(job, shared, piece)] = job
        remaining[job.key], parts[job.key] = len(pieces), []
    total, started = len(pending), time.perf_counter()
    failed: dict[str, str] = {}
    written = 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(ready[0])
        try:
            part = ray.get(ready[0])
        except Exception as error:  # noqa: BLE001 - any task error: record it, let the other jobs finish
            if job.key not in failed:
                failed[job.key] = error_line(error)
                store.write("measure_errors", job.key, [job_error_row(job, failed[job.key])])
                print(f"\nmeasure: {job.key} failed: {failed[job.key]}", file=sys.stderr)
            part = []
        parts[job.key] += part
        remaining[job.key] -= 1
        if remaining[job.key] == 0 and job.key not in failed:
            rows = sorted(parts.pop(job.key), key=lambda r: (r.get("split", ""), r.get("y") or 0, r.get("x", 0)))
            store.write(job.table, job.key, rows)
            store.remove("measure_errors", job.key)  # an error of an earlier run no longer holds
            written += 1
        done, elapsed = total - len(pending), time.perf_counter() - started
        print(
            f"\rmeasure: {done}/{total} tasks [{'#' * (20 * done // total):<20}] {duration(elapsed)} elapsed, "
            f"{eta(done, total, elapsed)}",
            end="\n" if not pending else "",
            flush=True,
        )
    return MeasureOutcome(written, failed)


def job_error_row(job: Job, error: str) -> dict[str, Any]:
    import datetime as dt

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
        said = f"{len(unreadable)} trial file(s) cannot be read" if unreadable else "no trial has finished"
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
    parser.add_argument("results_dir", help="a study's results folder, <storage>/<name>/results (path or URI)")
    parser.add_argument(
        "--address",
        help="join this Ray cluster; auto = the one running here (default: RAY_ADDRESS, else a fresh local one)",
    )
    args = parser.parse_args(argv)
    try:
        store = ResultsStore(args.results_dir)
        if not store.is_store():
            raise ConfigError(
                f"{args.results_dir} is not a results store (no trials/ or epochs/ Parquet files); "
                "pass the results folder that run_sweep printed"
            )
        study = study_from_store(store)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    connect_ray(args.address)
    outcome = run_measurements(study, store)
    print(f"{outcome.summary()} (results in {store.root})")
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
