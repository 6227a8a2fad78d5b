"""Where a study stands, read from its store alone (no Ray, no torch): from another terminal, on this
machine or over s3://, while it runs or after.

    python -m study.status STUDY_DIR_OR_URI [--watch [SECONDS]]

STUDY_DIR is `<storage>/<name>` (or its `results` folder). It prints the trials by status, the epochs
done of all, each started trial's last epoch and how long ago it came, the measurements written,
failed and missing. While a driver holds the study (its lock is live: study/lock.py) it names it and
gives an ETA from the recorded epoch times; otherwise it says when the study stopped and the command
that continues it. --watch ends when the study has finished or stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from analysis.store import ResultsStore, join, parent
from analysis.words import counted
from study.checks import recorded_study
from study.lock import Announcement, announcements, holder, last_driver
from study.progress import duration


@dataclass(frozen=True)
class StudyStatus:
    name: str
    root: str
    planned: dict[str, int]  # trial id -> epochs it trains (empty: the study file is not known yet)
    statuses: dict[str, str]  # trial id -> its final status, for trials that ended
    last_epoch: dict[str, int]  # trial id -> last epoch recorded
    age_s: dict[str, float]  # trial id -> seconds since its last epoch was written
    epoch_s: float  # mean training seconds of an epoch recorded so far (NaN: none)
    concurrency: int
    measurements: tuple[int, int, int] | None  # (written, failed, missing); None: no measure section
    driver: Announcement | None = None  # the driver holding the study now (study/lock.py); None: none runs
    last_driver: Announcement | None = None  # the newest that held it, live or not (None: none recorded)
    last_write_s: float | None = None  # unix seconds of the newest epoch or trial row

    @property
    def running(self) -> bool:
        return self.driver is not None

    @property
    def finished(self) -> bool:
        """Every planned trial ended and every measurement written (or failed: a resume retries those)."""
        trained = bool(self.planned) and set(self.planned) <= set(self.statuses)
        return trained and (self.measurements is None or self.measurements[2] == 0)

    def lines(self) -> list[str]:
        ended = len(self.statuses)
        started = [t for t in self.last_epoch if t not in self.statuses]  # running, or interrupted
        state = "running" if self.running or not started else "interrupted"
        counts = ", ".join(f"{n} {s}" for s, n in sorted(_count(self.statuses.values()).items())) or "none ended"
        if self.planned:
            total = sum(self.planned.values())
            done = sum(
                self.planned[t] if t in self.statuses else min(self.last_epoch.get(t, 0), self.planned[t])
                for t in self.planned
            )
            waiting = len(set(self.planned) - set(self.statuses) - set(started))
            head = (
                f"study {self.name}: {counted(len(self.planned), 'trial')}: {counts}; {len(started)} {state}, "
                f"{waiting} not "
                f"started; {done}/{total} epochs"
            )
        else:
            head = (
                f"study {self.name}: {counted(ended, 'trial')} ended ({counts}), {len(started)} {state}; "
                "plan not recorded yet"
            )
        out = [head + f" ({self.root})"]
        for t in sorted(started):
            of = f"/{self.planned[t]}" if t in self.planned else ""
            out.append(f"  {state} {t}: epoch {self.last_epoch[t]}{of}, {duration(self.age_s.get(t, 0.0))} ago")
        if self.measurements is not None:
            written, failed, missing = self.measurements
            out.append(f"measurements: {written} written, {failed} failed, {missing} to do")
        if self.driver is not None:
            heard = duration(max(0.0, time.time() - self.driver.heartbeat))
            out.append(f"driver: {self.driver.named()}, last heard {heard} ago")
        elif not self.finished:
            out.append(self.stopped_line())
        if self.running and self.planned and self.epoch_s == self.epoch_s:  # not NaN
            left = sum(n - min(self.last_epoch.get(t, 0), n) for t, n in self.planned.items() if t not in self.statuses)
            at_once = max(1, min(self.concurrency, len(set(self.planned) - set(self.statuses)) or 1))
            if left == 0:  # every planned epoch trained: no ETA to give
                return out
            out.append(
                f"ETA ~{duration(left * self.epoch_s / at_once)} of training ({left} epochs at {self.epoch_s:.1f} s "
                f"each as recorded, {at_once} at a time; evaluation and measurements not included)"
            )
        return out

    def stopped_line(self) -> str:
        """No driver runs an unfinished study: when it stopped and the command that continues it."""
        last = self.last_driver
        if last is None:  # a store of an earlier version, or a driver that never took the lock
            when = f" at {_clock(self.last_write_s)}" if self.last_write_s else ""
            return f"no driver runs it; stopped{when}; continue with: python -m study.run_sweep STUDY_FILE --resume"
        how = "stopped" if last.released is not None else "its driver died or lost its host"
        at = last.released or max(last.heartbeat, self.last_write_s or 0.0)
        command = last.command or "python -m study.run_sweep STUDY_FILE --resume"
        return f"interrupted at {_clock(at)} ({how}: {last.named()}); continue with: {command}"


def _clock(unix_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix_s))


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[str(v)] = counts.get(str(v), 0) + 1
    return counts


def read_status(location: str) -> StudyStatus:
    """The study at `location` (its folder or its results folder), from the files alone."""
    study_dir = parent(location) if location.rstrip("/").endswith("/results") else location
    store = ResultsStore(join(study_dir, "results"))
    if not store.is_store():
        raise FileNotFoundError(
            f"{location}: no study results there (no results/trials or results/epochs); pass <storage>/<name>"
        )
    trials, epochs = store.read("trials"), store.read("epochs")
    config = recorded_study(study_dir, store, "config")
    planned: dict[str, int] = {}
    concurrency = 1
    measurements = None
    if config is not None:
        from study.config import parse_study
        from study.measures.base import stored_jobs
        from study.plan import plan_study, with_stored_ids

        study = parse_study(json.dumps(config), source=f"{study_dir}: the recorded study file")
        planned = {t.trial_id: t.epochs for t in with_stored_ids(plan_study(study), trials)}
        concurrency = study.resources.max_concurrent_trials or 0
        completed = trials[trials["status"] == "completed"] if len(trials) else trials
        if "phase" in completed:
            completed = completed[completed["phase"] != "sample"]
        jobs, written = stored_jobs(study, completed.to_dict("records"), store)
        if any(getattr(study.measure, name) is not None for name in study.measure.__dataclass_fields__):
            failed = set(store.read("measure_errors")["job"]) if store.keys("measure_errors") else set()
            done = sum(j.key in written[j.table] for j in jobs)
            bad = sum(j.key in failed and j.key not in written[j.table] for j in jobs)
            measurements = (done, bad, len(jobs) - done - bad)
    statuses = dict(zip(trials["trial_id"], trials["status"])) if len(trials) else {}
    last = epochs.groupby("trial_id")["epoch"].max().to_dict() if len(epochs) else {}
    # When each trial's epochs file was last written: one listing (one request on object storage).
    listed = store.fs.get_file_info(pafs.FileSelector(store.table_dir("epochs"), allow_not_found=True))
    written = {
        i.base_name.removesuffix(".parquet"): i.mtime.timestamp()
        for i in listed
        if i.mtime is not None and i.base_name.endswith(".parquet")
    }
    now = time.time()
    ages = {t: now - written[t] for t in last if t not in statuses and t in written}
    last_write = max((written[t] for t in last if t in written), default=None)
    times = epochs["epoch_time_s"].dropna() if "epoch_time_s" in epochs else []
    epoch_s = float(times.mean()) if len(times) else float("nan")
    running = len(set(last) - set(statuses))
    name = str(config["name"]) if config else study_dir.rstrip("/").rsplit("/", 1)[-1]
    drivers = announcements(study_dir)
    return StudyStatus(
        name,
        study_dir,
        planned,
        {str(k): str(v) for k, v in statuses.items()},
        {str(k): int(v) for k, v in last.items()},
        ages,
        epoch_s,
        concurrency or max(1, running),
        measurements,
        holder(drivers),
        last_driver(drivers),
        last_write,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m study.status", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("study_dir", help="a study's folder, <storage>/<name> (a path or a URI such as s3://...)")
    parser.add_argument(
        "--watch",
        nargs="?",
        const=10.0,
        type=float,
        metavar="SECONDS",
        help="refresh every SECONDS (10) while a driver runs it",
    )
    args = parser.parse_args(argv)
    while True:
        try:
            status = read_status(args.study_dir)
        except (FileNotFoundError, OSError, ValueError) as error:
            print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
            return 2
        if args.watch:
            print("\033[2J\033[H", end="")  # clear the screen: the status replaces the last one
        print("\n".join(status.lines()), flush=True)
        if not args.watch or not status.running:  # finished or stopped: nothing more will change
            return 0
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
