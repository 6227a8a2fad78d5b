"""What the measurement runners share: loading a trial's data and model inside a task, landscape points.

Torch is imported inside the functions: they run in Ray tasks, never when a study file is checked.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from study.measures.base import Cost, Job, TaskInputs, progress, sample
from trainables.trial import TrialSpec


def task_device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def checkpoint_files() -> Any:
    """trainables.checkpoint, its object storage retrying outages (analysis/remote.py) as the results do."""
    from analysis.remote import retrying
    from trainables import checkpoint

    checkpoint.remote_wrapper(retrying)
    return checkpoint


def load_model_state(uri: str) -> dict[str, Any]:
    return checkpoint_files().load_checkpoint(uri)["model"]


def balanced(split: Any, n: int | None, num_classes: int) -> Any:
    """A fixed class-balanced subset of `n` images of `split` (all of it for None or n >= its size)."""
    from trainables.data import class_balanced_subset

    return split if n is None or n >= len(split) else split.take(class_balanced_subset(split.labels, n, num_classes))


@dataclass
class TrialOnDevice:
    """One trained trial inside a task: its record, data (fixed subsets on the device) and model."""

    spec: TrialSpec
    data: Any  # the whole dataset (trainables.data)
    splits: dict[str, Any]  # "train" / "test" -> the fixed subsets measured on
    normalize: Any
    model: Any  # built for the trial, weights not loaded
    device: Any


def trial_on_device(
    inputs: TaskInputs, trial_id: str, train_samples: int | None, test_samples: int | None
) -> TrialOnDevice:
    """The trial's dataset, its class-balanced subsets (a split of 0 images is left out) and its model."""
    from trainables.data import Normalizer, load_dataset
    from trainables.models import build_model

    device = task_device()
    spec = TrialSpec.from_dict(json.loads(inputs.specs[trial_id]))
    data = load_dataset(spec.dataset, spec.data_root, train_subset=spec.train_subset, test_subset=spec.test_subset)
    splits = {
        name: balanced(split, n, data.num_classes).to(device)
        for name, split, n in (("train", data.train, train_samples), ("test", data.test, test_samples))
        if n != 0
    }
    model = build_model(spec.model, width=spec.width, num_classes=data.num_classes, ghost_batch=spec.ghost_batch)
    return TrialOnDevice(spec, data, splits, Normalizer(data.mean, data.std, device), model.to(device), device)


def job_points(job: Job) -> list[tuple[float, float | None]]:
    """A landscape job's points: its range with `points` per axis (a square grid in 2-D)."""
    import numpy as np

    low, high = job.settings["range"]
    axis = np.linspace(low, high, job.settings["points"]).tolist()
    if job.kind.endswith("2d"):  # random2d, eigen2d
        return [(x, y) for y in axis for x in axis]
    return [(x, None) for x in axis]


def chunk(items: list[Any], parts: int) -> list[list[Any]]:
    parts = max(1, min(parts, len(items)))
    return [items[i::parts] for i in range(parts)]  # interleaved: every chunk costs about the same


def point_chunks(job: Job, workers: int) -> list[Any]:
    """A landscape job's parts: its points over the workers, each part one task (data loaded once)."""
    return chunk(job_points(job), workers)


def points_cost(job: Job, part: Any, sizes: tuple[int | None, int | None]) -> Cost:
    """A landscape job's (or part's) points, each evaluating its train and test images (and, where
    BatchNorm statistics are recomputed, a forward pass over bn_samples more)."""
    settings = job.settings
    images = sample(settings["train_samples"], sizes[0]) + sample(settings.get("test_samples"), sizes[1])
    if settings.get("bn") == "recompute":
        images += settings["bn_samples"]
    return {"points": (len(job_points(job) if part is None else part), images)}


def point_progress(done: int, points: list[Any], images: int) -> None:
    progress(done, len(points), "points", images, f"{done}/{len(points)} points")


def point_note(loss: float, clamped: int) -> str | None:
    """Why a landscape point is unusual: never a NaN, nor a clamp, without saying so."""
    notes = []
    if clamped:
        notes.append(f"{clamped} negative extrapolated BatchNorm running variances clamped to 0")
    if not math.isfinite(loss):
        notes.append("loss not finite: the network's outputs overflowed at this point")
    return "; ".join(notes) or None


def landscape_rows(
    job: Job, trial: TrialOnDevice, x: float, y: float | None, state: dict[str, Any], bn: str | None, clamped: int
) -> list[dict[str, Any]]:
    """One point of a landscape job, evaluated on each split: its `landscape/` rows."""
    from trainables.loop import Runtime, evaluate

    rows = []
    trial.model.load_state_dict(state)  # once for the point's splits
    for split_name, split in trial.splits.items():
        loss, acc = evaluate(trial.model, split, trial.normalize, Runtime(trial.device))
        rows.append(
            {
                "job": job.key,
                "kind": job.kind,
                "trial_a": job.trials[0],
                "trial_b": job.trials[1] if len(job.trials) > 1 else None,
                "x": x,
                "y": y,
                "split": split_name,
                "loss": loss,
                "acc": acc,
                "bn": bn,
                "bn_clamped": clamped if bn else None,
                "note": point_note(loss, clamped),
            }
        )
    return rows


@dataclass
class TrainingLoss:
    """A trained trial's training loss on a fixed sample, as the sharpness measures differentiate it: the
    model in eval mode (BatchNorm's running statistics, as PyHessian), fixed batches of `batch` images."""

    trial_id: str
    trial: TrialOnDevice
    batches: list[tuple[Any, Any]]
    params: list[Any]
    generator: Any  # seeded by the trial's seed: the same random vectors on every device
    row: dict[str, Any]  # trial_id, n_samples, device: the start of every row
    settings: dict[str, Any]  # the job's settings and the conditions every value is measured under

    def loss(self, batch: tuple[Any, Any]) -> Any:
        import torch

        return torch.nn.functional.cross_entropy(self.trial.model(batch[0]), batch[1])


CPU_BATCH = 128  # images per forward pass of the sharpness measures on a CPU (measured: study.bench)


def training_loss(job: Job, inputs: TaskInputs) -> TrainingLoss:
    import torch

    from study.measures.base import DIRECTION_SEED
    from trainables.ray_train import device_name

    trial_id, settings = job.trials[0], job.settings
    trial = trial_on_device(inputs, trial_id, settings["samples"], 1)
    trial.model.load_state_dict(load_model_state(inputs.checkpoints[trial_id]))
    trial.model.eval()
    train, batch = trial.splits["train"], settings["batch"]
    # The loss is a sample-weighted mean over batches, so the split changes nothing but rounding: a fixed
    # batch on every device, except that a CPU computes it in pieces of CPU_BATCH images (a Hessian-vector
    # product on 512 images of VGG9 takes 1.7-2x as long as on four pieces of 128: the cache); recorded.
    piece = min(batch, CPU_BATCH) if trial.device.type == "cpu" else batch
    batches = [
        (trial.normalize(train.images[i : i + piece]), train.labels[i : i + piece]) for i in range(0, len(train), piece)
    ]
    return TrainingLoss(
        trial_id,
        trial,
        batches,
        [p for p in trial.model.parameters() if p.requires_grad],
        torch.Generator().manual_seed(DIRECTION_SEED + trial.spec.seed),
        {"trial_id": trial_id, "n_samples": len(train), "device": device_name(trial.device)},
        {**settings, "batch": batch, "computed_in": piece, "dtype": "float32", "bn": "eval mode (running statistics)"},
    )
