"""TensorBoard scalars by epoch: one run folder per trial, `<storage>/<name>/tensorboard/<trial_id>/`,
written by the driver as each epoch is reported, with the epoch as the step. A resumed trial appends to
its folder (a new event file in the same run), so its curve continues where it stopped; Tune's own
TensorBoard files counted Tune iterations, which restart at 1 on a resume (two one-point runs)."""

from __future__ import annotations

import dataclasses
import math
import sys
import uuid
from pathlib import Path
from typing import Any

from trainables.trial import EpochMetrics

# Every float metric of an epoch row is a scalar (the record, not a list kept here); values that were not
# measured that epoch (NaN: no evaluation, no noise probes) are left out, so a tag exists only once written.
SCALARS = tuple(f.name for f in dataclasses.fields(EpochMetrics) if f.type in ("float", float, "float | None"))


class EpochBoard:
    """The study's TensorBoard writers, one per trial, opened at its first epoch of this run."""

    def __init__(self, folder: str | None) -> None:
        self.folder = Path(folder) if folder else None
        self.writers: dict[str, Any] = {}
        self.failed = False

    def epoch(self, trial_id: str, result: dict[str, Any]) -> None:
        if self.folder is None or self.failed:
            return
        try:
            writer = self.writers.get(trial_id)
            if writer is None:
                from tensorboardX import SummaryWriter

                # a name of its own: two driver runs within one second would otherwise share an event file
                suffix = f".{uuid.uuid4().hex[:8]}"
                writer = SummaryWriter(str(self.folder / trial_id), flush_secs=10, filename_suffix=suffix)
                self.writers[trial_id] = writer
            step = int(result["epoch"])
            for tag in SCALARS:
                value = result.get(tag)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    writer.add_scalar(tag, float(value), global_step=step)
            writer.flush()
        except Exception as error:  # TensorBoard is a view: it never stops a study
            self.failed = True
            print(f"warning: TensorBoard files not written ({type(error).__name__}: {error})", file=sys.stderr)

    def close(self, trial_id: str | None = None) -> None:
        for t in [trial_id] if trial_id else list(self.writers):
            writer = self.writers.pop(t, None)
            if writer is not None:
                writer.close()
