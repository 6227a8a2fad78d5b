"""One driver per study (study/lock.py): announcements with a heartbeat, correct under races and host changes."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, tiny_study_yaml

import study.lock as lock
from study.lock import Announcement, StudyLocked, announcements, study_lock


def announce(root: Path, pid: int, host: str | None = None, heard_s_ago: float = 0.0, **more: object) -> Announcement:
    """An announcement as another driver would have left it (held, not released unless said)."""
    now = time.time()
    found = Announcement(
        f"other{pid}", host or socket.gethostname(), pid, now - 3600, now - heard_s_ago, "python -m x", True, **more
    )
    (root / lock.LOCK_DIR).mkdir(parents=True, exist_ok=True)
    (root / lock.LOCK_DIR / f"{found.token}.json").write_text(json.dumps(dataclasses.asdict(found)))
    return found


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_live_holder_keeps_the_study_and_releasing_leaves_how_it_stopped(tmp_path: Path) -> None:
    with study_lock(str(tmp_path), "python -m study.run_sweep s.yaml --resume") as took_over:
        assert took_over is None
        holder = rf"in use by pid {os.getpid()} on {socket.gethostname()} since .*expires"
        with pytest.raises(StudyLocked, match=holder):
            with study_lock(str(tmp_path)):
                pass
        (mine,) = announcements(str(tmp_path))  # the refused one withdrew its own
        assert mine.held and mine.released is None and mine.live(time.time(), socket.gethostname())
    (released,) = announcements(str(tmp_path))
    assert released.released is not None and not released.live(time.time(), socket.gethostname())
    assert released.command == "python -m study.run_sweep s.yaml --resume"
    with study_lock(str(tmp_path)):  # the next driver replaces it
        assert [a.released for a in announcements(str(tmp_path))] == [None]


class Exited(BaseException):
    """os._exit as the second Ctrl-C's handler ends the process: what the interrupted code was doing is lost."""


def test_a_second_ctrl_c_during_the_release_still_leaves_the_study_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The with-block's release is writing the released record when the handler runs (end_process ->
    # release_held -> os._exit): the handler's release must write it, since the interrupted write never lands.
    write, interrupted = lock._write, []

    def write_interrupted_once(study_root: str, me: Announcement) -> None:
        if me.released is not None and not interrupted:
            interrupted.append(me)
            lock.release_held()  # the handler, between two bytecodes of this write
            raise Exited
        write(study_root, me)

    monkeypatch.setattr(lock, "_write", write_interrupted_once)
    with pytest.raises(Exited):
        with study_lock(str(tmp_path), "python -m study.run_sweep s.yaml --resume"):
            pass
    (found,) = announcements(str(tmp_path))
    assert interrupted and found.released is not None and not lock._held


def test_the_heartbeat_cannot_overwrite_the_released_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # end_process releases with release_held and exits without leaving the with-block: the heartbeat thread
    # is still there, and a beat after (or during) the release would rewrite the record unreleased.
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.01)
    held = study_lock(str(tmp_path))
    held.__enter__()
    time.sleep(0.1)
    lock.release_held()
    time.sleep(0.2)
    (found,) = announcements(str(tmp_path))
    assert found.released is not None


def test_a_driver_of_this_host_that_died_frees_the_study_at_once(tmp_path: Path) -> None:
    gone = announce(tmp_path, dead_pid())
    with study_lock(str(tmp_path)) as took_over:
        assert took_over is not None and f"took over study {tmp_path} from pid {gone.pid} on " in took_over
        assert [a.pid for a in announcements(str(tmp_path))] == [os.getpid()]


def test_a_vanished_host_frees_the_study_when_its_heartbeat_expires(tmp_path: Path) -> None:
    """A replaced head node: its driver's lock is never released and its pid means nothing here."""
    announce(tmp_path, 4242, host="old-head", heard_s_ago=lock.EXPIRES_S - 30)
    with pytest.raises(StudyLocked, match="pid 4242 on old-head .*its lock expires at"):
        with study_lock(str(tmp_path)):
            pass
    announce(tmp_path, 4242, host="old-head", heard_s_ago=lock.EXPIRES_S + 1)  # the same driver, silent longer
    with study_lock(str(tmp_path)) as took_over:
        assert took_over is not None and "from pid 4242 on old-head" in took_over


def test_the_holder_refreshes_its_heartbeat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.1)
    with study_lock(str(tmp_path)):
        first = announcements(str(tmp_path))[0].heartbeat
        time.sleep(0.5)
        assert announcements(str(tmp_path))[0].heartbeat > first


def contend(root: str, start: float, log: str) -> None:
    """One racing driver: at `start`, take the study; while holding it, note the interval."""
    time.sleep(max(0.0, start - time.time()))
    try:
        with study_lock(root):
            held_from = time.time()
            time.sleep(0.2)
            with open(log, "a") as out:
                out.write(f"{held_from} {time.time()}\n")
    except StudyLocked:
        pass


def test_racing_drivers_never_hold_the_study_together(tmp_path: Path) -> None:
    """Main's lock read, judged stale, deleted and created: two drivers 0-30 ms apart both held it in 1 of 12
    tries. Here 6 drivers start within 30 ms over a stale lock, 10 times: never two holders at once."""
    context = multiprocessing.get_context("fork")
    for round_ in range(10):
        root, log = tmp_path / f"study{round_}", tmp_path / f"held{round_}.log"
        announce(root, dead_pid())
        start = time.time() + 0.3
        racers = [context.Process(target=contend, args=(str(root), start + 0.006 * i, str(log))) for i in range(6)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(timeout=60)
            assert racer.exitcode == 0
        held = sorted(tuple(map(float, line.split())) for line in log.read_text().splitlines())
        assert held, f"round {round_}: nobody took the study"
        assert all(a[1] <= b[0] for a, b in zip(held, held[1:])), held  # one holder at a time


@pytest.mark.slow
def test_a_second_driver_exits_2_naming_the_holder_before_ray_starts(tmp_path: Path) -> None:
    study_file = tmp_path / "locked.yaml"
    study_file.write_text(tiny_study_yaml("locked", tmp_path / "storage"))
    with study_lock(str(tmp_path / "storage" / "locked")):
        result = subprocess.run(
            [sys.executable, "-m", "study.run_sweep", str(study_file)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2
    assert result.stderr.startswith("error: study ") and len(result.stderr.strip().splitlines()) == 1
    assert f"in use by pid {os.getpid()}" in result.stderr and "Ray dashboard" not in result.stdout  # no Ray started
