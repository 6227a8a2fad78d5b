"""Trial state on disk: model, optimizer, progress and RNG state, loaded without unpickling code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
