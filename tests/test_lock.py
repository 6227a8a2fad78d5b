"""One driver per study: the lock file names its holder; a lock left by a dead driver is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, tiny_study_yaml

from study.lock import LOCK_FILE, StudyLocked, study_lock


def hold(folder: Path, pid: int, host: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    path.write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid, "since": "2026-11-28 10:00:00"}))
    return path


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_live_holder_keeps_the_study(tmp_path: Path) -> None:
    path = hold(tmp_path, os.getpid())
    with pytest.raises(StudyLocked, match=rf"in use by pid {os.getpid()} on {socket.gethostname()}"):
        with study_lock(tmp_path):
            pass
    assert path.exists()  # the holder's lock is left as it is


def test_a_holder_on_another_host_is_never_judged_stale(tmp_path: Path) -> None:
    hold(tmp_path, dead_pid(), host="another-host")
    with pytest.raises(StudyLocked, match="another-host"):
        with study_lock(tmp_path):
            pass


def test_a_stale_lock_is_taken_over_and_released_after(tmp_path: Path) -> None:
    path = hold(tmp_path, dead_pid())
    with study_lock(tmp_path):
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with pytest.raises(StudyLocked):  # held: a second taker is refused
            with study_lock(tmp_path):
                pass
    assert not path.exists()


@pytest.mark.slow
def test_a_second_driver_exits_2_naming_the_holder_before_ray_starts(tmp_path: Path) -> None:
    study_file = tmp_path / "locked.yaml"
    study_file.write_text(tiny_study_yaml("locked", tmp_path / "storage"))
    hold(tmp_path / "storage" / "locked", os.getpid())
    result = subprocess.run(
        [sys.executable, "-m", "study.run_sweep", str(study_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: study folder") and len(result.stderr.strip().splitlines()) == 1
    assert f"in use by pid {os.getpid()}" in result.stderr and "Ray" not in result.stdout
