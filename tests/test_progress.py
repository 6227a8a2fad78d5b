"""The console's progress line: counts and an ETA from the rates so far (pure, no Ray)."""

from study.progress import SweepProgress, duration, eta


def test_durations_and_eta() -> None:
    assert [duration(s) for s in (0, 42.4, 190, 7500)] == ["0 s", "42 s", "3m10s", "2h05m"]
    assert eta(0, 10, 5.0) == "ETA ?"
    assert eta(2, 10, 60.0) == "ETA 4m00s"  # 30 s per unit, 8 to go


def test_progress_counts_trials_and_epochs_including_resumed_ones() -> None:
    progress = SweepProgress({"a": 4, "b": 4, "c": 4}, started_at=0.0)
    assert progress.line(1.0).startswith("study: 0/3 trials ended, 0 running, 3 pending; 0/12 epochs")
    progress.epoch("a", 1)
    progress.epoch("b", 3)  # b resumed from its checkpoint at epoch 2: it trains 3 and 4 this run
    assert "0/3 trials ended, 2 running, 1 pending; 2/10 epochs" in progress.line(20.0)
    assert progress.line(20.0).endswith("20 s elapsed, ETA 1m20s")  # 10 s per epoch, 8 to go
    progress.epoch("b", 4)
    progress.end("b")
    assert "1/3 trials ended, 1 running, 1 pending; 3/10 epochs" in progress.line(30.0)
