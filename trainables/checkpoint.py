"""Trial state on disk: model, optimizer, progress and RNG state, loaded without unpickling code."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch

CHECKPOINT_FILE = "state.pt"


def save_state(state: dict[str, Any], directory: str | os.PathLike[str]) -> Path:
    """Write `state` to directory/state.pt through a temporary name, so a crash leaves no half file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(state, partial)
    os.replace(partial, path)
    return path


def load_state(directory: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    # weights_only: a checkpoint from shared storage must not be able to run code on load.
    return torch.load(Path(directory) / CHECKPOINT_FILE, map_location=map_location, weights_only=True)


# Trajectory snapshots: the model's weights alone (no optimizer), one file per epoch, written to a
# local path or a URI (s3://...) through pyarrow's filesystems, so that every node of a cluster can
# write where the driver reads. Ray's checkpoints keep only the last two epochs.


def _resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def save_snapshot(weights: dict[str, torch.Tensor], folder: str, epoch: int) -> str:
    """Write `weights` as <folder>/epoch-NNNN.pt through a temporary name; returns the file's path."""
    fs, path = _resolve(folder)
    fs.create_dir(path, recursive=True)
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in weights.items()}, buffer)
    final, partial = f"{path}/epoch-{epoch:04d}.pt", f"{path}/.epoch-{epoch:04d}.{os.getpid()}.tmp"
    with fs.open_output_stream(partial) as out:
        out.write(buffer.getvalue())
    fs.move(partial, final)
    return final


def list_snapshots(folder: str) -> dict[int, str]:
    """epoch -> snapshot file in `folder` (empty when there is none)."""
    fs, path = _resolve(folder)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    found = {}
    for info in infos:
        name = info.base_name
        if name.startswith("epoch-") and name.endswith(".pt"):
            found[int(name[len("epoch-") : -len(".pt")])] = info.path
    scheme = folder.split("://", 1)[0] + "://" if "://" in folder else ""
    return {epoch: scheme + p if scheme and not p.startswith(scheme) else p for epoch, p in sorted(found.items())}


def load_snapshot(uri: str) -> dict[str, torch.Tensor]:
    fs, path = _resolve(uri)
    with fs.open_input_stream(path) as stream:
        return torch.load(io.BytesIO(stream.read()), map_location="cpu", weights_only=True)
