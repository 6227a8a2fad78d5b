"""Progress lines for the console: how much of a study is done and when the rest will be (an ETA from the
rates measured so far). Pure: the caller counts, this says it."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

# The study's progress line (training and measurements) comes at least this often, and whenever a trial
# or a measurement job ends.
PROGRESS_EVERY_S = 30.0


def duration(seconds: float) -> str:
    """'42 s', '3m10s', '2h05m'."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def eta(done: float, total: float, elapsed_s: float) -> str:
    """'ETA 3m10s' at the average rate so far; 'ETA ?' before anything is done."""
    if done <= 0:
        return "ETA ?"
    return f"ETA {duration(elapsed_s / done * max(0.0, total - done))}"


@dataclass
class SweepProgress:
    """Trials and epochs of one run of a study, as their reports arrive (`now`: the caller's clock)."""

    epochs_of: dict[str, int]  # trial_id -> epochs it trains in all (those planned for this run)
    started_at: float
    concurrency: int = 1  # trials that train at once
    # trial_id -> what sets its epoch time besides the machine (its batch size): a trial not measured yet
    # is priced at the epochs of trials of its own kind where there are any (a batch-2048 epoch on a CPU
    # took 1.5x a batch-64 one)
    kind_of: dict[str, object] = field(default_factory=dict)
    last_epoch: dict[str, int] = field(default_factory=dict)  # trial_id -> last epoch reported
    first_epoch: dict[str, int] = field(default_factory=dict)  # its first report this run (resumed trials > 1)
    ended: set[str] = field(default_factory=set)
    began: dict[str, float] = field(default_factory=dict)  # trial_id -> when Tune started it
    reported_at: dict[str, float] = field(default_factory=dict)  # trial_id -> when its last epoch came
    first_report_at: dict[str, float] = field(default_factory=dict)  # trial_id -> when its first came
    epoch_s: dict[str, list[float]] = field(default_factory=dict)  # trial_id -> its epochs' seconds
    startup_s: list[float] = field(default_factory=list)  # start to first epoch, less one epoch

    def start(self, trial_id: str, now: float) -> None:
        self.began.setdefault(trial_id, now)

    def epoch(self, trial_id: str, epoch: int, now: float | None = None) -> None:
        self.first_epoch.setdefault(trial_id, epoch)
        if now is not None:
            before = self.reported_at.get(trial_id)
            if before is not None and epoch > self.last_epoch.get(trial_id, epoch):
                self.epoch_s.setdefault(trial_id, []).append((now - before) / (epoch - self.last_epoch[trial_id]))
            self.reported_at[trial_id] = now
            self.first_report_at.setdefault(trial_id, now)
            self.began.setdefault(trial_id, now)
        self.last_epoch[trial_id] = epoch

    def end(self, trial_id: str) -> None:
        self.ended.add(trial_id)

    def running(self) -> set[str]:
        """Started (by Tune, or by its first report) and not ended: true from a trial's start on."""
        return (set(self.began) | set(self.last_epoch)) - self.ended

    def seconds_per_epoch(self, trial_id: str) -> float:
        """The trial's own measured epoch time, else the mean of those of its kind (`kind_of`), else the
        mean of the others' (NaN before any)."""
        own = self.epoch_s.get(trial_id)
        if own:
            return sum(own) / len(own)
        kind = self.kind_of.get(trial_id)
        same = [t for t in self.epoch_s if kind is not None and self.kind_of.get(t) == kind]
        alike = [x for t in same for x in self.epoch_s[t]]
        every = alike or [x for times in self.epoch_s.values() for x in times]
        if every:
            return sum(every) / len(every)
        # Only first epochs so far: start to first report, start-up included (an over-estimate until the
        # second epoch of any trial arrives).
        firsts = [self.first_report_at[t] - self.began[t] for t in self.first_report_at if t in self.began]
        return sum(firsts) / len(firsts) if firsts else math.nan

    def seconds_left(self, now: float) -> float:
        """When the last trial should end: each running trial's remaining epochs at its own rate (less
        the time since its last report), then the pending ones, each on the first slot to free up
        (start-up included), `concurrency` at a time."""
        startups = [
            self.first_report_at[t] - self.began[t] - self.seconds_per_epoch(t)
            for t in self.first_report_at
            if t in self.began and self.first_epoch.get(t) == 1 and self.epoch_s
        ]
        startup = max(0.0, sum(startups) / len(startups)) if startups else 0.0
        slots: list[float] = []
        for t in sorted(self.running()):
            left_epochs = self.epochs_of.get(t, 0) - self.last_epoch.get(t, self.first_epoch.get(t, 1) - 1)
            since = now - self.reported_at.get(t, self.began.get(t, now))
            first = 0.0 if t in self.reported_at else startup
            slots.append(max(0.0, first + left_epochs * self.seconds_per_epoch(t) - since))
        slots += [0.0] * max(0, self.concurrency - len(slots))
        heapq.heapify(slots)
        for t in sorted(set(self.epochs_of) - self.running() - self.ended):
            heapq.heappush(slots, heapq.heappop(slots) + startup + self.epochs_of[t] * self.seconds_per_epoch(t))
        return max(slots) if slots else 0.0

    def line(self, now: float) -> str:
        # Epochs this run trains: all of a trial not yet heard of; from its first report on, what remains.
        total = sum(n - (self.first_epoch[t] - 1 if t in self.first_epoch else 0) for t, n in self.epochs_of.items())
        remaining = sum(
            0 if t in self.ended else n - self.last_epoch.get(t, self.first_epoch.get(t, 1) - 1)
            for t, n in self.epochs_of.items()
        )
        done = total - remaining
        running = len(self.running())
        pending = len(self.epochs_of) - len(self.ended) - running
        elapsed = now - self.started_at
        left = self.seconds_left(now) if self.reported_at else math.nan
        timing = f"ETA {duration(left)}" if math.isfinite(left) else eta(done, total, elapsed)
        return (
            f"study: {len(self.ended)}/{len(self.epochs_of)} trials ended, {running} running, {pending} pending; "
            f"{done}/{total} epochs; {duration(elapsed)} elapsed, {timing}"
        )
