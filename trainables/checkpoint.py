"""A trial's files: its checkpoints and trajectory snapshots, on a local disk or object storage.

Checkpoints are `<study>/checkpoints/<trial_id>/epoch-NNNN.pt` (model, optimizer, progress, RNG
state and the epoch history), written by the trial's rank 0 after each epoch; the newest `keep` are
kept. Snapshots are `<study>/trajectory/<trial_id>/epoch-NNNN.pt` (the weights alone), every N epochs.
Both go through pyarrow's filesystems (local paths and s3://, gs:// alike), are written atomically (see
`write_atomic`), and load without unpickling code.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import uuid
from collections.abc import Callable
from typing import Any

import pyarrow.fs as pafs
import torch

# How a remote filesystem is wrapped: the outage retries of object storage live in analysis/remote.py, which
# the pure core may not import; the Ray adapter and the measurement jobs install them here (`remote_wrapper`).
_wrappers: list[Callable[[pafs.FileSystem, str], pafs.FileSystem]] = []


def remote_wrapper(wrap: Callable[[pafs.FileSystem, str], pafs.FileSystem]) -> None:
    _wrappers[:] = [wrap]


def _remote(filesystem: pafs.FileSystem, where: str) -> pafs.FileSystem:
    return _wrappers[0](filesystem, where) if _wrappers else filesystem


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        filesystem, path = pafs.FileSystem.from_uri(uri)
        return _remote(filesystem, uri.split("?", 1)[0]), path
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def write_atomic(uri: str, data: bytes) -> str:
    """Write `data` to `uri` so that no reader sees half a file: on a local disk through a hidden temporary
    name beside it, then a rename; on an object store in one upload (the object appears whole when it
    completes; a rename there is a copy plus a delete).

    The one atomic writer of `trainables` (the results store has its own: analysis may not import
    trainables). Returns `uri`.
    """
    fs, path = resolve(uri)
    folder, name = path.rsplit("/", 1)
    fs.create_dir(folder, recursive=True)
    if fs.type_name != "local":
        with fs.open_output_stream(path) as out:
            out.write(data)
        return uri
    partial = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        with fs.open_output_stream(partial) as out:
            out.write(data)
        fs.move(partial, path)  # a rename on local disks
    except BaseException:  # a full disk, Ctrl-C: the half-written temporary file must not stay behind
        with contextlib.suppress(OSError):
            fs.delete_file(partial)
        raise
    return uri


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def epoch_files(folder: str) -> dict[int, str]:
    """epoch -> `epoch-NNNN.pt` file in `folder`, oldest first (empty when there is none)."""
    fs, path = resolve(folder)
    found = {}
    for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        name = info.base_name
        if info.type == pafs.FileType.File and name.startswith("epoch-") and name.endswith(".pt"):
            digits = name[len("epoch-") : -len(".pt")]
            if digits.isdigit():
                found[int(digits)] = child(folder, name)
    return dict(sorted(found.items()))


def epoch_file(folder: str, epoch: int) -> str:
    return child(folder, f"epoch-{epoch:04d}.pt")


def child(folder: str, name: str) -> str:
    """`folder/name` for a local path or a URI; a URI's query (`?region=...`) stays at the end (as
    analysis.store.join, which this core may not import)."""
    path, mark, query = folder.partition("?") if "://" in folder else (folder, "", "")
    return f"{path.rstrip('/')}/{name}{mark}{query}"


def _to_bytes(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _from_bytes(data: bytes) -> Any:
    # weights_only: a file from shared storage must not be able to run code on load.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(state: dict[str, Any], folder: str, epoch: int, keep: int = 2) -> str:
    """Write `state` as the checkpoint of `epoch`, then delete all but the newest `keep`; returns its path."""
    path = write_atomic(epoch_file(folder, epoch), _to_bytes(state))
    old = list(epoch_files(folder).values())[:-keep]
    fs, _ = resolve(folder)
    for stale in old:
        fs.delete_file(resolve(stale)[1])
    return path


def load_checkpoint(path: str) -> dict[str, Any]:
    return _from_bytes(read_bytes(path))


def latest_checkpoint(folder: str) -> tuple[str, dict[str, Any]] | None:
    """(path, state) of the newest checkpoint in `folder` that loads, or None when none does.

    An unreadable one (a truncated upload, a disk error) is skipped with a warning on stderr and the
    one before it is used: that is why more than one is kept.
    """
    for epoch, path in reversed(epoch_files(folder).items()):
        try:
            return path, load_checkpoint(path)
        except Exception as error:  # noqa: BLE001 - any failure to read means: use the previous one
            print(
                f"warning: checkpoint {path} cannot be read ({type(error).__name__}: {error}); "
                f"trying the one before epoch {epoch}",
                file=sys.stderr,
                flush=True,
            )
    return None


# ---------------------------------------------------------------------------------------------
# Trajectory snapshots


def save_snapshot(weights: dict[str, torch.Tensor], folder: str, epoch: int) -> str:
    """Write `weights` as <folder>/epoch-NNNN.pt; returns the file's path."""
    return write_atomic(epoch_file(folder, epoch), _to_bytes({k: v.detach().cpu() for k, v in weights.items()}))


def list_snapshots(folder: str) -> dict[int, str]:
    return epoch_files(folder)


def load_snapshot(uri: str) -> dict[str, torch.Tensor]:
    return _from_bytes(read_bytes(uri))
