"""Progress lines for the console: how much of a study is done and when the rest will be (an ETA from the
rates measured so far). Pure: the caller counts, this says it."""

from __future__ import annotations

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
    """Trials and epochs of one run of a study, as their reports arrive."""

    epochs_of: dict[str, int]  # trial_id -> epochs it trains in all (those planned for this run)
    started_at: float
    last_epoch: dict[str, int] = field(default_factory=dict)  # trial_id -> last epoch reported
    first_epoch: dict[str, int] = field(default_factory=dict)  # its first report this run (resumed trials > 1)
    ended: set[str] = field(default_factory=set)

    def epoch(self, trial_id: str, epoch: int) -> None:
        self.first_epoch.setdefault(trial_id, epoch)
        self.last_epoch[trial_id] = epoch

    def end(self, trial_id: str) -> None:
        self.ended.add(trial_id)

    def line(self, now: float) -> str:
        # Epochs this run trains: all of a trial not yet heard of; from its first report on, what remains.
        total = sum(n - (self.first_epoch[t] - 1 if t in self.first_epoch else 0) for t, n in self.epochs_of.items())
        remaining = sum(
            0 if t in self.ended else n - self.last_epoch.get(t, self.first_epoch.get(t, 1) - 1)
            for t, n in self.epochs_of.items()
        )
        done = total - remaining
        running = len(set(self.last_epoch) - self.ended)
        pending = len(self.epochs_of) - len(self.ended) - running
        elapsed = now - self.started_at
        return (
            f"study: {len(self.ended)}/{len(self.epochs_of)} trials ended, {running} running, {pending} pending; "
            f"{done}/{total} epochs; {duration(elapsed)} elapsed, {eta(done, total, elapsed)}"
        )
