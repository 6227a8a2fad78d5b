"""TensorBoard by epoch: one run folder per trial, steps = epochs, a resumed trial continuing its curve."""

from __future__ import annotations

import struct
from pathlib import Path

from study.tensorboard import SCALARS, EpochBoard


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in a run folder's event files (TFRecord framing: length, crc, event, crc)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(run.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return {tag: sorted(points) for tag, points in out.items()}  # as TensorBoard draws them: by step


def epoch(e: int, evaluated: bool) -> dict:
    return {
        "kind": "epoch",
        "epoch": e,
        "train_loss": 2.0 / e,
        "test_acc": 0.1 * e if evaluated else float("nan"),
        "lr": 0.1,
        "noise_scale": float("nan"),
    }


def test_a_resumed_trial_is_one_run_whose_steps_are_its_epochs(tmp_path: Path) -> None:
    first = EpochBoard(str(tmp_path / "tensorboard"))
    for e in (1, 2):
        first.epoch("b128-a0", epoch(e, evaluated=e == 2))
    first.close()  # the driver was killed here; the study resumed from epoch 2's checkpoint
    second = EpochBoard(str(tmp_path / "tensorboard"))
    for e in (3, 4):
        second.epoch("b128-a0", epoch(e, evaluated=True))
    second.close()
    runs = [p.name for p in (tmp_path / "tensorboard").iterdir()]
    assert runs == ["b128-a0"]  # one run per trial, not one per driver run
    found = scalars(tmp_path / "tensorboard" / "b128-a0")
    assert [step for step, _ in found["train_loss"]] == [1, 2, 3, 4]  # each step once: one curve
    assert abs(found["train_loss"][3][1] - 0.5) < 1e-6
    assert [step for step, _ in found["test_acc"]] == [2, 3, 4]  # an epoch not evaluated has no point
    assert "noise_scale" not in found  # a tag exists only once measured
    assert {"train_loss", "test_acc", "lr", "noise_scale", "clean_train_acc"} <= set(SCALARS)


def test_a_failing_writer_warns_once_and_never_raises(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "tensorboard"
    blocker.write_text("a file where the folder should be")
    board = EpochBoard(str(blocker))
    board.epoch("t", epoch(1, True))
    board.epoch("t", epoch(2, True))
    assert capsys.readouterr().err.count("warning: TensorBoard files not written") == 1
