"""One driver per study, on whatever storage holds its results (a local folder, NFS, s3://... with the
endpoint and region its URI or the environment gives: the same filesystem the results are written to).

A driver that wants the study announces itself: a file of its own in `<study>/.lbstudy-lock/` (host, pid,
when, a heartbeat, the command that continues the study), written whole. Then it lists the folder, and
holds the study only if no other announcement there is live; otherwise it withdraws its own. Of two
drivers that announce at about once, the one that lists second sees the other (a listing shows every
write made before it), so at most one holds: never two. When all it saw were other announcers, not
a holder, it withdraws and tries again after a random pause, so one of them wins. Nothing is deleted
to take over, and no conditional write is needed: the same code is correct on a local disk and on S3.

Live: not released, heard from (its heartbeat) within EXPIRES_S, and, on this host, its process running.
The holder rewrites its heartbeat every HEARTBEAT_S, so a driver that vanished with its host frees the
study EXPIRES_S after its last heartbeat (a replaced head node resumes without deleting anything), and
one on this host that died frees it at once. On release the holder marks its announcement released and
leaves it: `study.status` reads from it when the study stopped and the command that continues it. The
next holder removes the announcements that are not live.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow.fs as pafs

from analysis.store import join, resolve, write_atomic

LOCK_DIR = ".lbstudy-lock"
HEARTBEAT_S = 15.0
EXPIRES_S = 120.0  # 8 heartbeats missed: the holder is gone (clocks of a cluster agree far better)
TRIES = 8  # announcing again after a tie with other announcers


class StudyLocked(RuntimeError):
    """Another driver holds the study; the message names it."""


@dataclass(frozen=True)
class Announcement:
    """One driver's claim on a study (a file in the lock folder)."""

    token: str
    host: str
    pid: int
    since: float  # unix seconds
    heartbeat: float  # unix seconds of its last rewrite
    command: str = ""  # what continues the study from where this driver leaves it
    held: bool = False  # it won: it holds the study (False: still announcing)
    released: float | None = None  # unix seconds it let go; None while it runs or if it died

    def live(self, now: float, host: str) -> bool:
        if self.released is not None or now - self.heartbeat > EXPIRES_S:
            return False
        return not (self.host == host and not _alive(self.pid))

    def named(self) -> str:
        return f"pid {self.pid} on {self.host} since {_clock(self.since)}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _clock(unix_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_s))


def lock_dir(study_root: str) -> str:
    return join(study_root, LOCK_DIR)


def announcements(study_root: str) -> list[Announcement]:
    """Every announcement in the study's lock folder (none if there is none), oldest first."""
    fs, folder = resolve(lock_dir(study_root))
    found = []
    for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
        if info.type != pafs.FileType.File or info.base_name.startswith(".") or not info.base_name.endswith(".json"):
            continue  # a write in progress (write_atomic's hidden temporary file)
        try:
            with fs.open_input_stream(info.path) as stream:
                values = json.loads(stream.read().decode())
            found.append(Announcement(**values))
        except (FileNotFoundError, ValueError, TypeError):
            continue  # withdrawn while listed, or not ours
        except OSError as error:
            if "not found" not in str(error).lower() and "no such file" not in str(error).lower():
                raise
    return sorted(found, key=lambda a: a.since)


def holder(found: list[Announcement]) -> Announcement | None:
    """Of a study's announcements (`announcements`), the driver holding it now, if any."""
    now, host = time.time(), socket.gethostname()
    return next((a for a in found if a.live(now, host) and a.held), None)


def last_driver(found: list[Announcement]) -> Announcement | None:
    """Of a study's announcements, the newest driver that held it (live, released or gone); None if none."""
    held = [a for a in found if a.held]
    return max(held, key=lambda a: a.released or a.heartbeat) if held else None


def _write(study_root: str, me: Announcement) -> None:
    write_atomic(join(lock_dir(study_root), f"{me.token}.json"), json.dumps(dataclasses.asdict(me)).encode())


def _withdraw(study_root: str, token: str) -> None:
    fs, path = resolve(join(lock_dir(study_root), f"{token}.json"))
    with contextlib.suppress(FileNotFoundError):
        fs.delete_file(path)


def _in_use(study_root: str, other: Announcement) -> StudyLocked:
    expires = _clock(other.heartbeat + EXPIRES_S)
    return StudyLocked(
        f"study {study_root} is in use by {other.named()}; wait for it, or stop it (if that driver is gone, "
        f"its lock expires at {expires}, {EXPIRES_S:.0f} s after its last heartbeat; run again then)"
    )


def take(study_root: str, command: str = "") -> tuple[Announcement, list[Announcement]]:
    """Announce, and hold the study if no other live announcement is there; returns (mine, the stale ones
    it replaced). Raises StudyLocked naming a live holder, or after TRIES ties with other announcers."""
    host, pid = socket.gethostname(), os.getpid()
    for attempt in range(TRIES):
        now = time.time()
        me = Announcement(uuid.uuid4().hex, host, pid, now, now, command)
        _write(study_root, me)
        others = [a for a in announcements(study_root) if a.token != me.token]
        now = time.time()
        live = [a for a in others if a.live(now, host)]
        if not live:
            me = dataclasses.replace(me, held=True)
            _write(study_root, me)
            for stale in others:  # the ones judged gone above: the study is ours
                _withdraw(study_root, stale.token)
            return me, [a for a in others if a.held and a.released is None]
        _withdraw(study_root, me.token)
        holding = next((a for a in live if a.held), None)
        if holding is not None:
            raise _in_use(study_root, holding)
        time.sleep(random.uniform(0.05, 0.5) * (attempt + 1))  # others announcing: one of us will win
    raise StudyLocked(f"study {study_root}: other drivers kept announcing at the same moment; run again")


def _heartbeat(study_root: str, me: Announcement, stop: threading.Event) -> None:
    fs, path = resolve(join(lock_dir(study_root), f"{me.token}.json"))
    while not stop.wait(HEARTBEAT_S):
        try:
            if fs.get_file_info(path).type == pafs.FileType.NotFound:
                return  # judged gone and replaced (this process was stopped past EXPIRES_S): its writes are fenced
            _write(study_root, dataclasses.replace(me, heartbeat=time.time()))
        except OSError:
            continue  # storage unreachable for now: the next beat tries again


@dataclasses.dataclass(frozen=True)
class Held:
    study_root: str
    me: Announcement
    stop: threading.Event  # ends the heartbeat
    beat: threading.Thread


_held: dict[str, Held] = {}  # token -> a lock this process holds


def release(study_root: str, me: Announcement) -> None:
    """Mark the announcement released (kept for study.status); the storage gone: its heartbeat lets it expire.
    The heartbeat is stopped (and a beat in flight finished) first, or its rewrite could land after the
    released record; the lock counts as held until that record is written, so a second Ctrl-C whose handler
    exits mid-release (end_process) writes it again instead of leaving the study looking abandoned."""
    held = _held.get(me.token)
    if held is None:
        return  # released already
    held.stop.set()
    if held.beat is not threading.current_thread():
        held.beat.join(timeout=10)
    with contextlib.suppress(OSError):
        _write(study_root, dataclasses.replace(me, heartbeat=time.time(), released=time.time()))
    _held.pop(me.token, None)


def release_held() -> None:
    """Release every lock this process holds: for an exit that skips the `with` blocks' ends (os._exit)."""
    for held in list(_held.values()):
        release(held.study_root, held.me)


def forget(study_root: str) -> None:
    """Remove every announcement of this process (and the lock folder, if that leaves it empty): a run
    whose checks failed before it wrote anything leaves no trace of itself."""
    host, pid = socket.gethostname(), os.getpid()
    for found in announcements(study_root):
        if found.host == host and found.pid == pid:
            _withdraw(study_root, found.token)
    fs, folder = resolve(lock_dir(study_root))
    with contextlib.suppress(OSError):
        if not fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
            fs.delete_dir(folder)


@contextlib.contextmanager
def study_lock(study_root: str, command: str = "") -> Iterator[str | None]:
    """Hold the study while the block runs (see the module docstring); yields a note when it took over from a
    driver that is gone (None otherwise). Raises StudyLocked naming the holder."""
    me, replaced = take(study_root, command)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(study_root, me, stop), name="study-lock-heartbeat", daemon=True)
    _held[me.token] = Held(study_root, me, stop, beat)
    beat.start()
    note = (
        f"took over study {study_root} from {replaced[-1].named()}, not heard from since "
        f"{_clock(replaced[-1].heartbeat)}"
        if replaced
        else None
    )
    try:
        yield note
    finally:
        release(study_root, me)
