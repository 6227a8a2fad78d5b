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


def test_the_eta_follows_per_trial_rates_and_converges_on_a_scripted_study() -> None:
    """3 trials of 4 epochs, 2 at a time; each starts up for 5 s, then 10 s an epoch: a and b end at
    45 s, c (started then) at 90 s. The old ETA (epochs so far over elapsed, start-up included) said
    2m15s at 25 s; the truth is 65 s."""
    progress = SweepProgress({"a": 4, "b": 4, "c": 4}, started_at=0.0, concurrency=2)
    events = []
    for trial, start in (("a", 0.0), ("b", 0.0), ("c", 45.0)):
        events += [(start, "start", trial, 0)] + [(start + 5 + 10 * e, "epoch", trial, e) for e in range(1, 5)]
    events.sort(key=lambda e: (e[0], e[1] != "start"))
    said = {}
    for now, what, trial, epoch in events:
        if what == "start":
            progress.start(trial, now)
        else:
            progress.epoch(trial, epoch, now)
            if epoch == 4:
                progress.end(trial)
        said[now] = progress.seconds_left(now)
    assert "ETA ?" in SweepProgress({"a": 1}, 0.0).line(3.0)  # nothing reported: no guess
    assert said[15.0] > 90 - 15  # first epochs only: start-up counted as epoch time, too long
    for now in (25.0, 35.0, 45.0, 60.0, 70.0, 80.0, 90.0):  # from the second epoch on: exact
        assert said[now] == 90.0 - now, (now, said[now])
    # Between reports the ETA counts down on the timer; the running count is the started trials.
    progress = SweepProgress({"a": 4, "b": 4, "c": 4}, started_at=0.0, concurrency=2)
    for trial in ("a", "b"):
        progress.start(trial, 0.0)
    assert "0 running" not in progress.line(1.0) and "2 running, 1 pending" in progress.line(1.0)
    for trial in ("a", "b"):
        progress.epoch(trial, 1, 15.0)
        progress.epoch(trial, 2, 25.0)
    assert progress.seconds_left(30.0) == 60.0 and progress.line(30.0).endswith("ETA 1m00s")


def test_tunes_notices_about_its_own_files_are_left_out() -> None:
    """After a Ctrl-C before any trial reported, Tune warned 'Failed to fetch metrics ...
    FileNotFoundError' (three lines) about result files the study never reads."""
    import logging

    from study.sweep import _NoRestoreHint

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("ray.tune", logging.WARNING, __file__, 1, message, None, None)

    keep = _NoRestoreHint()
    assert not keep.filter(record("Failed to fetch metrics for 1 trial(s):\n- b64: FileNotFoundError('x')"))
    assert not keep.filter(record("Resume experiment with: Tuner.restore(path=...)"))
    assert not keep.filter(record("Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run."))
    assert keep.filter(record("Trial b64 errored"))  # everything else passes


def test_the_progress_line_comes_on_a_timer_with_no_event(tmp_path, monkeypatch, capsys) -> None:
    """Before, the line came only with an epoch report: silent gaps of 51 and 61 s in a 3-minute run.
    The driver's ticker says it every PROGRESS_EVERY_S (here 0.5 s) with nothing reported at all."""
    import time

    import study.sweep as sweep
    from analysis.store import ResultsStore
    from study.config import parse_study
    from study.plan import plan_study

    monkeypatch.setattr(sweep, "PROGRESS_EVERY_S", 0.5)
    study = parse_study("name: t\nsweep: {batch_size: [64, 128]}\n")
    todo = plan_study(study)
    progress = sweep.make_progress_callback(ResultsStore(str(tmp_path / "r")), todo, {})
    progress.setup()
    try:
        time.sleep(3.5)  # the ticker wakes every second
    finally:
        progress.on_experiment_end([])
    said = capsys.readouterr().out.splitlines()
    lines = [line for line in said if line.startswith(f"study: 0/{len(todo)} trials ended")]
    assert len(lines) >= 2, lines


def test_tunes_slow_processing_warning_is_left_out_unless_verbose(monkeypatch) -> None:  # noqa: ANN001
    """'Processing trial results took 0.7 s, which may be a performance bottleneck. Please consider reporting
    results less frequently to Ray Tune' is about the driver's own writing: nothing a user can act on."""
    import logging
    import time

    from ray.tune.utils import util
    from ray.tune.utils.util import warn_if_slow

    from study.sweep import quiet_tune

    monkeypatch.setattr(util, "START_OF_TIME", time.time() - 100)  # it is silent in a process's first minute

    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("ray.tune.utils.util")
    logger.addHandler(handler)
    try:
        for verbose in (False, True):
            with quiet_tune(verbose), warn_if_slow("process_trial_results", threshold=1e-9):
                time.sleep(0.01)
    finally:
        logger.removeHandler(handler)
    assert len(said) == 1 and "performance bottleneck" in said[0]  # the verbose run's only


def test_a_pending_trial_is_priced_at_the_epochs_of_its_own_batch_size() -> None:
    """Batch 64 takes 10 s an epoch, batch 2048 20 s (a CPU): the pending batch-2048 trial c is priced at
    20 s an epoch, not at the mean over both sizes (13.3 s, which said 'ETA 1m03s' for 90 s)."""
    progress = SweepProgress({"a": 4, "b": 4, "c": 4}, 0.0, concurrency=2, kind_of={"a": 64, "b": 2048, "c": 2048})
    for trial, seconds in (("a", 10.0), ("b", 20.0)):
        progress.start(trial, 0.0)
        for epoch in range(1, 4):
            if 5 + seconds * (epoch - 1) <= 25.0:
                progress.epoch(trial, epoch, 5 + seconds * (epoch - 1))
    assert progress.seconds_per_epoch("c") == 20.0
    # a ends at 35 s, then c trains 4 x 20 s: done at 115 s, 90 s from now
    assert progress.seconds_left(25.0) == 90.0
