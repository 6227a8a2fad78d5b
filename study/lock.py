"""One driver per study: an exclusive lock in the study folder, naming its holder: a file created
exclusively on a local disk, an object created conditionally (`If-None-Match: *`) on S3."""

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
    over; any other holder raises StudyLocked. Local folders; `object_store_lock` for s3://.
    """
    path = Path(folder) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):  # a second try after removing a stale lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if not _stale(holder, me):
                raise _in_use(str(path.parent), holder) from None
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


def _stale(holder: dict[str, object], me: dict[str, object]) -> bool:
    """A lock left by a driver of this host that is no longer running."""
    pid = holder.get("pid")
    return holder.get("host") == me["host"] and isinstance(pid, int) and not _alive(pid)


def _in_use(where: str, holder: dict[str, object]) -> StudyLocked:
    return StudyLocked(
        f"study folder {where} is in use by pid {holder.get('pid', '?')} on {holder.get('host', '?')} since "
        f"{holder.get('since', '?')}; wait for it, or stop it (if that driver is gone, delete {where}/{LOCK_FILE})"
    )


def s3_location(uri: str) -> tuple[str, str, str | None]:
    """(bucket, key prefix, region) of an s3:// URI (its `?region=` query, if any)."""
    from urllib.parse import parse_qs, urlparse

    parsed = urlparse(uri)
    region = parse_qs(parsed.query).get("region", [None])[0]
    return parsed.netloc, parsed.path.strip("/"), region


@contextlib.contextmanager
def object_store_lock(uri: str) -> Iterator[str | None]:
    """Hold `<uri>/.lbstudy.lock` on S3 while the block runs: created only if absent (a conditional PUT,
    which S3 and current MinIO honour), removed at the end if still ours; a stale one (this host, its pid
    gone) is taken over. Yields None while held, or a one-line reason why the study is not locked: boto3
    is not installed, or the store ignores the condition (a second conditional PUT succeeded)."""
    try:
        import boto3
        from botocore.exceptions import ClientError
    except ImportError:
        yield "boto3 is not installed (pip install boto3), so the study is not locked: run one driver per study"
        return
    bucket, prefix, region = s3_location(uri)
    key = f"{prefix}/{LOCK_FILE}".lstrip("/")
    client = boto3.client("s3", region_name=region)  # endpoint and credentials from the environment
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    body = json.dumps(me).encode()

    def create() -> bool:
        try:
            client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
            return True
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise

    def holder() -> dict[str, object]:
        try:
            return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except (ClientError, ValueError):
            return {}

    for _ in range(2):  # a second try after removing a stale lock
        if create():
            break
        found = holder()
        if not _stale(found, me):
            raise _in_use(uri, found)
        client.delete_object(Bucket=bucket, Key=key)
    else:
        raise StudyLocked(f"could not take {uri}/{LOCK_FILE}: another driver took it at the same moment")
    ignored = create()  # the store must refuse this one: otherwise it ignores the condition
    try:
        yield (
            f"{uri} ignores conditional writes (If-None-Match), so the study is not locked: run one driver per study"
            if ignored
            else None
        )
    finally:
        current = holder()
        if current.get("pid") == me["pid"] and current.get("host") == me["host"]:
            client.delete_object(Bucket=bucket, Key=key)
