"""Expand a study into trials: the grid over every sweep key, each with its derived values."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from typing import Any

from study.config import StudyConfig, augmentations, trajectory_epochs
from trainables.data import split_global_batch
from trainables.loop import TrialSpec
from trainables.lr import scaled_lr


@dataclass(frozen=True)
class PlannedTrial:
    spec: TrialSpec
    lr_scaling: str
    base_lr: float

    @property
    def trial_id(self) -> str:
        return self.spec.trial_id

    def params(self, study: StudyConfig) -> dict[str, Any]:
        """The trial's conditions as `trials/` columns (swept, fixed and derived)."""
        s = self.spec
        return {
            "trial_id": s.trial_id,
            "study": study.name,
            "dataset": s.dataset,
            "model": s.arch,
            "width": s.width,
            "augment": s.augment,
            "train_subset": s.train_subset,
            "batch_size": s.batch_size,
            "mixup_alpha": s.mixup_alpha,
            "augmentation": s.augmentation,
            "augmentation_alpha": s.augmentation_alpha,
            "cutout_size": s.cutout_size,
            "lr_scaling": self.lr_scaling,
            "base_lr": self.base_lr,
            "base_batch_size": study.optim.base_batch_size,
            "peak_lr": s.peak_lr,
            "momentum": s.momentum,
            "nesterov": s.nesterov,
            "weight_decay": s.weight_decay,
            "epochs": s.epochs,
            "warmup_epochs": s.warmup_epochs,
            "decay": s.decay,
            "seed": s.seed,
            "workers": s.workers,
            "micro_batch": s.micro_batch,
            "accumulation_steps": s.accumulation_steps,
            "bn_batch_size": s.micro_batch,
        }


def local_path(path: str) -> str:
    """Workers run elsewhere than the driver's folder: make local paths absolute, leave URIs alone."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def plan_study(study: StudyConfig) -> list[PlannedTrial]:
    sweep, res = study.sweep, study.resources
    grid = itertools.product(
        sweep.batch_size,
        augmentations(sweep),
        sweep.lr_scaling,
        sweep.seed,
        sweep.base_lr or (study.optim.base_lr,),
        sweep.weight_decay or (study.optim.weight_decay,),
        sweep.warmup_epochs or (study.schedule.warmup_epochs,),
    )
    noise = study.measure.noise_scale
    trials = []
    for batch_size, aug, rule, seed, base_lr, weight_decay, warmup in grid:
        micro_batch, accumulation = split_global_batch(batch_size, res.workers, res.max_micro_batch)
        values: dict[str, Any] = dict(
            dataset=study.data.dataset,
            data_root=local_path(study.data.root),
            train_subset=study.data.train_subset,
            test_subset=study.data.test_subset,
            augment=study.data.augment,
            arch=study.model.arch,
            width=study.model.width,
            batch_size=batch_size,
            workers=res.workers,
            micro_batch=micro_batch,
            accumulation_steps=accumulation,
            peak_lr=scaled_lr(base_lr, batch_size, study.optim.base_batch_size, rule),
            momentum=study.optim.momentum,
            nesterov=study.optim.nesterov,
            weight_decay=weight_decay,
            epochs=study.schedule.epochs,
            warmup_epochs=warmup,
            decay=study.schedule.decay,
            milestones=list(study.schedule.milestones),
            gamma=study.schedule.gamma,
            augmentation=aug.name,
            augmentation_alpha=aug.alpha,
            cutout_size=aug.size,
            seed=seed,
            eval_every_epochs=study.eval.every_epochs,
            train_eval_samples=study.eval.train_eval_samples,
            compile=None if study.model.compile == "auto" else study.model.compile,
            # One-worker trials probe for the noise scale; multi-worker ones get it free from
            # per-worker vs all-reduced gradients.
            noise_probes=noise.probe_pairs if noise is not None and res.workers == 1 else 0,
            noise_probe_batch=noise.probe_batch if noise is not None else 512,
            trajectory_every=study.measure.trajectory.every_epochs if study.measure.trajectory else 0,
        )
        # Readable and stable: the swept values for people, a digest of everything for uniqueness,
        # so a resumed study never mistakes a changed trial for a finished one.
        digest = hashlib.sha1(json.dumps([values, rule, base_lr], sort_keys=True).encode()).hexdigest()[:6]
        tag = {
            "none": "a0",
            "mixup": f"a{aug.alpha:g}",
            "cutmix": f"cutmix{aug.alpha:g}",
            "cutout": f"cutout{aug.size}",
        }[aug.name]
        trial_id = f"b{batch_size}-{tag}-{rule}-s{seed}-{digest}"
        trials.append(PlannedTrial(TrialSpec(trial_id=trial_id, **values), rule, base_lr))
    return trials


def format_plan(study: StudyConfig, trials: list[PlannedTrial]) -> str:
    """The --dry-run table: one line per trial with its derived values."""
    header = (
        "trial_id",
        "batch",
        "augmentation",
        "lr_rule",
        "seed",
        "base_lr",
        "peak_lr",
        "warmup",
        "wd",
        "workers",
        "micro",
        "accum",
        "bn_batch",
    )
    rows = [
        (
            t.trial_id,
            t.spec.batch_size,
            t.spec.augment_batch.label,
            t.lr_scaling,
            t.spec.seed,
            f"{t.base_lr:g}",
            f"{t.spec.peak_lr:.4g}",
            f"{t.spec.warmup_epochs:g}",
            f"{t.spec.weight_decay:g}",
            t.spec.workers,
            t.spec.micro_batch,
            t.spec.accumulation_steps,
            t.spec.micro_batch,
        )
        for t in trials
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    lines = [
        f"study {study.name}: {len(trials)} trials x {study.schedule.epochs} epochs on {study.data.dataset} "
        f"({study.model.arch}, width {study.model.width:g})"
    ]
    for row in (header, *rows):
        lines.append("  ".join(str(x).rjust(w) for x, w in zip(row, widths)))
    if study.measure.trajectory is not None:
        lines.append(trajectory_disk_line(study, len(trials)))
    return "\n".join(lines)


def trajectory_disk_line(study: StudyConfig, trials: int) -> str:
    """What measure.trajectory keeps on disk: snapshots per trial and their size."""
    from trainables.models import build_model

    model = build_model(study.model.arch, width=study.model.width, num_classes=100)  # an upper bound on classes
    size = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    snapshots = len(trajectory_epochs(study.schedule.epochs, study.measure.trajectory.every_epochs))
    return (
        f"trajectory: {snapshots} weight snapshots per trial x {size / 2**20:.1f} MiB = "
        f"{snapshots * size / 2**20:.0f} MiB per trial, {trials * snapshots * size / 2**30:.2f} GiB in all, "
        f"under <storage>/{study.name}/trajectory/"
    )
