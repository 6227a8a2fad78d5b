"""One driver per study: an exclusive lock file in the study folder, naming its holder."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".lbstudy.lock"


class StudyLocked(RuntimeError):
    """Another driver holds the study; the message names it."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _holder(path: Path) -> dict[str, object]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a lock being written, or unreadable: treated as held


@contextlib.contextmanager
def study_lock(folder: str | Path) -> Iterator[None]:
    """Hold `<folder>/.lbstudy.lock` (host, pid, since) while the block runs.

    A lock left by a driver that is gone (same host, pid no longer running) is stale and taken
    over; any other holder raises StudyLocked. Local folders only: object storage has no atomic
    create-if-absent here, so a study on s3:// is not locked.
    """
    path = Path(folder) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):  # a second try after removing a stale lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            stale = (
                holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and not _alive(holder["pid"])
            )
            if not stale:
                raise StudyLocked(
                    f"study folder {path.parent} is in use by pid {holder.get('pid', '?')} on "
                    f"{holder.get('host', '?')} since {holder.get('since', '?')}; wait for it, or stop it "
                    f"(if that driver is gone, delete {path})"
                ) from None
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise StudyLocked(f"could not take {path}: another driver took it at the same moment")
    try:
        yield
    finally:
        if _holder(path).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)
