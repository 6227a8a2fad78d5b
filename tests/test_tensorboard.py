"""TensorBoard by epoch: one run folder per trial, steps = epochs, a resumed trial continuing its curve."""

from __future__ import annotations

import struct
from pathlib import Path

from conftest import tiny_study_yaml

from study.config import parse_study
from study.plan import plan_study
from study.tracking import EPOCH_METRICS, study_tracking


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
    study = parse_study(tiny_study_yaml("tb", tmp_path))
    spec = plan_study(study)[0]
    first = study_tracking(study, str(tmp_path), uid="u")
    for e in (1, 2):
        first.epoch(spec, epoch(e, evaluated=e == 2))
    first.close()  # the driver was killed here; the study resumed from epoch 2's checkpoint
    second = study_tracking(study, str(tmp_path), uid="u")
    for e in (2, 3, 4):  # epoch 2 reported again (its checkpoint was the newest): logged once
        second.epoch(spec, epoch(e, evaluated=True))
    second.close()
    runs = [p.name for p in (tmp_path / "tensorboard").iterdir()]
    assert runs == [spec.trial_id]  # one run per trial, not one per driver run
    found = scalars(tmp_path / "tensorboard" / spec.trial_id)
    assert [step for step, _ in found["train_loss"]] == [1, 2, 3, 4]  # each step once: one curve
    assert abs(found["train_loss"][3][1] - 0.5) < 1e-6
    assert [step for step, _ in found["test_acc"]] == [2, 3, 4]  # an epoch not evaluated has no point
    assert "noise_scale" not in found  # a tag exists only once measured
    assert {"train_loss", "test_acc", "lr", "noise_scale", "clean_train_acc"} <= set(EPOCH_METRICS)


def test_an_epoch_a_killed_driver_never_logged_comes_from_the_store(tmp_path: Path) -> None:
    """The trial wrote epoch 3's row and the driver was killed before it heard of it: the resumed driver
    logs epoch 3 from the store's rows before the trial's next report (epoch 4)."""
    study = parse_study(tiny_study_yaml("tb", tmp_path))
    spec = plan_study(study)[0]
    first = study_tracking(study, str(tmp_path), uid="u")
    for e in (1, 2):
        first.epoch(spec, epoch(e, evaluated=True))
    stored = [epoch(e, evaluated=True) for e in (1, 2, 3)]
    second = study_tracking(study, str(tmp_path), uid="u", history=lambda trial_id: stored)
    second.epoch(spec, epoch(4, evaluated=True))
    second.ended(spec, {"status": "completed", "epochs_completed": 4, "finished_at": "t"})
    second.close()
    found = scalars(tmp_path / "tensorboard" / spec.trial_id)
    assert [step for step, _ in found["train_loss"]] == [1, 2, 3, 4]
