"""TensorBoard scalars by epoch: one run folder per trial, `<storage>/<name>/tensorboard/<trial_id>/`,
written by the driver as each epoch is reported, with the epoch as the step (a tracker of
study/tracking.py). A resumed trial appends to its folder (a new event file in the same run), so its
curve continues where it stopped; Tune's own TensorBoard files counted Tune iterations, which restart at
1 on a resume (two one-point runs)."""

from __future__ import annotations

import struct
import time
import uuid
from pathlib import Path
from typing import Any

from trainables.trial import TrialSpec


class EpochBoard:
    """The study's TensorBoard writers, one per trial, opened at its first epoch of this run."""

    name = "TensorBoard"
    durable = True  # written and flushed in each call

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.where = str(self.folder)
        self.writers: dict[str, Any] = {}

    def epoch(self, spec: TrialSpec, step: int, metrics: dict[str, float]) -> None:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto import event_pb2, summary_pb2

        writer = self.writers.get(spec.trial_id)
        if writer is None:
            (self.folder / spec.trial_id).mkdir(parents=True, exist_ok=True)
            # a name of its own: two driver runs within one second would otherwise share an event file
            suffix = f".{uuid.uuid4().hex[:8]}"
            writer = EventsWriter(str(self.folder / spec.trial_id / "events"), filename_suffix=suffix)
            self.writers[spec.trial_id] = writer
        # Written and flushed here, not by SummaryWriter's queue thread: once this returns the epoch is on
        # disk, so a driver killed next does not lose an epoch that tracking.json says is written.
        values = [summary_pb2.Summary.Value(tag=tag, simple_value=value) for tag, value in metrics.items()]
        event = event_pb2.Event(wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=values))
        writer.write_event(event)
        writer.flush()

    def last_epoch(self, spec: TrialSpec) -> int:
        """The last step of the trial's event files (an epoch written before a kill is not written again)."""
        from tensorboardX.proto import event_pb2

        last = 0
        for path in (self.folder / spec.trial_id).glob("events.out.tfevents.*"):
            data, at = path.read_bytes(), 0
            while at + 12 <= len(data):  # TFRecord framing: length (8), its crc (4), the event, its crc (4)
                (length,) = struct.unpack("<Q", data[at : at + 8])
                if at + 12 + length > len(data):
                    break  # a record cut by a kill
                event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
                if event.summary.value:
                    last = max(last, int(event.step))
                at += 12 + length + 4
        return last

    def ended(self, spec: TrialSpec, step: int, values: dict[str, float], tags: dict[str, str]) -> None:
        writer = self.writers.pop(spec.trial_id, None)  # its curves are the epochs'; the outcome is in MLflow/W&B
        if writer is not None:
            writer.close()

    def measured(self, spec: TrialSpec, step: int, values: dict[str, float]) -> None:
        pass  # one number per trial is no curve: TensorBoard shows epochs

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
