"""Object storage that rides out an outage: every call to a remote filesystem (s3://, gs://, ...) that fails
for a network reason is tried again with backoff for up to RETRY_S, so a storage outage of a minute or two
costs a study time, not the study. Past that, StorageUnreachable (an OSError naming the storage).

pyarrow's own retries (S3: 3 attempts within a second or so) are for a dropped request, not for an
outage; its retry strategy is not settable through a URI. Wrapped as a `pyarrow.fs.PyFileSystem`, the
retrying filesystem is a real pyarrow filesystem: Parquet, datasets and every caller use it unchanged.
Whole objects are read into memory and written from memory (one upload at close), so a retried call
starts again from its beginning: what the results and checkpoints need, objects of at most a few GB.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import pyarrow as pa
import pyarrow.fs as pafs

RETRY_S = float(os.environ.get("LBSTUDY_STORAGE_RETRY_S", "180"))  # an outage longer than this ends the study
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0)  # then 15 s between tries

# How pyarrow (and the AWS SDK, GCS client under it) words a failure of the network or of a service that is
# down for now; anything else (not found, access denied, a full disk) is an answer, not an outage.
TRANSIENT = (
    "NETWORK_CONNECTION",
    "Couldn't connect",
    "curlCode",
    "Connection refused",
    "Connection reset",
    "timed out",
    "Timeout",
    "SERVICE_UNAVAILABLE",
    "SLOW_DOWN",
    "SlowDown",
    "INTERNAL_FAILURE",
    "Service Unavailable",
    "HTTP response code: 5",
)

T = TypeVar("T")


class StorageUnreachable(OSError):
    """The storage did not answer for RETRY_S: the message names it and says how long it was tried."""


def transient(error: BaseException) -> bool:
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    return isinstance(error, OSError) and any(mark in str(error) for mark in TRANSIENT)


class Retrying(pafs.FileSystemHandler):
    """A FileSystemHandler over `inner` (a remote pyarrow filesystem) whose every call retries outages."""

    def __init__(self, inner: pafs.FileSystem, where: str) -> None:
        self.inner, self.where = inner, where

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Retrying) and other.inner.equals(self.inner)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def call(self, what: str, function: Callable[[], T]) -> T:
        started, attempt, said = time.monotonic(), 0, False
        while True:
            try:
                return function()
            except OSError as error:
                waited = time.monotonic() - started
                if not transient(error):
                    raise
                if waited >= RETRY_S:
                    raise StorageUnreachable(
                        f"storage unreachable: {self.where} did not answer for {waited:.0f} s ({what}: "
                        f"{str(error).strip().splitlines()[0][:160]})"
                    ) from error
                if not said:  # once per outage of this call: where it goes on
                    print(
                        f"storage: {self.where} not answering ({what}); trying again for up to {RETRY_S:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
                    said = True
                time.sleep(min(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)], max(0.0, RETRY_S - waited)))
                attempt += 1

    # The handler's interface (pyarrow.fs.FileSystemHandler), each call through `call`.
    def get_type_name(self) -> str:
        return f"retrying-{self.inner.type_name}"

    def normalize_path(self, path: str) -> str:
        return self.inner.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self.call("get_file_info", lambda: self.inner.get_file_info(paths))

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self.call("list", lambda: self.inner.get_file_info(selector))

    def create_dir(self, path: str, recursive: bool) -> None:
        self.call("create_dir", lambda: self.inner.create_dir(path, recursive=recursive))

    def delete_dir(self, path: str) -> None:
        self.call("delete_dir", lambda: self.inner.delete_dir(path))

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.call("delete_dir_contents", lambda: self.inner.delete_dir_contents(path, missing_dir_ok=missing_dir_ok))

    def delete_root_dir_contents(self) -> None:
        self.call("delete_root_dir_contents", lambda: self.inner.delete_dir_contents("/", accept_root_dir=True))

    def delete_file(self, path: str) -> None:
        self.call("delete_file", lambda: self.inner.delete_file(path))

    def move(self, src: str, dest: str) -> None:
        self.call("move", lambda: self.inner.move(src, dest))

    def copy_file(self, src: str, dest: str) -> None:
        self.call("copy_file", lambda: self.inner.copy_file(src, dest))

    def _read(self, path: str) -> pa.Buffer:
        def read() -> pa.Buffer:
            with self.inner.open_input_stream(path) as stream:
                return stream.read_buffer()

        return self.call(f"read {path}", read)

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return pa.BufferReader(self._read(path))

    def open_input_file(self, path: str) -> pa.NativeFile:
        return pa.BufferReader(self._read(path))

    def open_output_stream(self, path: str, metadata: dict[str, str] | None) -> pa.NativeFile:
        def upload(data: bytes) -> None:
            def write() -> None:
                with self.inner.open_output_stream(path, metadata=metadata) as out:
                    out.write(data)

            self.call(f"write {path}", write)

        return pa.PythonFile(_UploadOnClose(upload), mode="w")

    def open_append_stream(self, path: str, metadata: dict[str, str] | None) -> pa.NativeFile:
        raise OSError(f"{self.where}: appending is not supported on object storage")


class _UploadOnClose(io.BytesIO):
    """Collects what is written; uploads it whole (with retries) when closed."""

    def __init__(self, upload: Callable[[bytes], None]) -> None:
        super().__init__()
        self.upload = upload

    def close(self) -> None:
        if not self.closed:
            data = self.getvalue()
            super().close()
            self.upload(data)


def retrying(inner: pafs.FileSystem, where: str) -> pafs.FileSystem:
    return pafs.PyFileSystem(Retrying(inner, where))


def unreachable(error: BaseException | None) -> StorageUnreachable | None:
    """The StorageUnreachable behind `error` (raised directly, or wrapped by Ray Tune or a callback)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, StorageUnreachable):
            return error
        if "storage unreachable: " in str(error):
            return StorageUnreachable(str(error)[str(error).index("storage unreachable: ") :].splitlines()[0])
        error = error.__cause__ or error.__context__
    return None
