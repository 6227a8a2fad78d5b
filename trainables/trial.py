"""The trial record: one trial's conditions (`TrialSpec`) and one epoch's measurements (`EpochMetrics`).

These two dataclasses are the single description of a trial. `study/plan.py` fills a `TrialSpec`
from the study file (its sweep axes, fixed values and derived values, with the study file's defaults:
there are no others); the loop consumes it; the Ray adapter writes it, field by field, as the
`trials/` columns and `EpochMetrics` as the `epochs/` columns. The dry-run table, the report's trial
table and the interpolation grouping keys read the fields' roles, so a new sweep key is a field here
(role `swept`) and a key of `study.config.SweepConfig` of the same name, and nothing else.

Roles (field metadata "role"):
- swept: a sweep axis; trials that differ only here are compared (interpolation pairs, figures)
- derived: computed by the plan from the others (peak lr, the batch split, labels)
- fixed: the same for every trial of a study, read from the study file at the field's `source`
Metadata "shown": False keeps a field out of the printed tables (another field shows it better).

A swept field's metadata also says everything else a key needs, so that no list kept elsewhere can
forget it (`KeyInfo`, read with `key_info`):
- legend: how a figure's legend names one of its values ("ghost BN {value}"), with `legend_values` for
  values named otherwise ({None: "plain BN"}); every swept key is a compared condition drawn as its own
  curves, except those with legend None: drawn elsewhere (batch size: the x axis; augmentation: its
  label; lr_scaling: the curve name) or replicates (seed).
- tag: how the trial id shows a value other than `untagged` (by default `unchanged`) ("-ghost{value}");
  "" shows none (the id's digest tells trials apart all the same).
- unchanged: the value every study ran with before the key existed (or a function of the trial's other
  values that gives it, where it depended on them): at it, the key is left out of the id's digest, so
  those studies resume with the same trial ids.
- between: whether 1-D interpolation may pair trials along the key (no straight line joins two
  architectures).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from trainables.catalog import Augmentation

SWEPT, DERIVED, FIXED = "swept", "derived", "fixed"


class Phase(StrEnum):
    """Why a trial exists: a point of the sweep's grid, a search sample, or a search winner re-run with a seed."""

    GRID = "grid"
    SAMPLE = "sample"
    FINAL = "final"


class Status(StrEnum):
    """How a trial ended (its `trials/` row's status; analysis/store.py's FINAL_STATUSES are the final ones)."""

    COMPLETED = "completed"
    DIVERGED = "diverged"  # a non-finite or exploding loss ended it; never resumed
    FAILED = "failed"  # it raised (its error's last line is recorded); a resumed study trains it again
    STOPPED = "stopped"  # a search's ASHA stopped it early


NOTHING = object()  # `unchanged` not given: the key always counts in the digest


def swept(
    *,
    shown: bool = True,
    legend: str | None = "{key} {value}",
    legend_values: dict[Any, str] | None = None,
    tag: str = "",
    unchanged: Any = NOTHING,
    untagged: Any = NOTHING,
    between: bool = True,
) -> Any:
    return field(
        metadata={
            "role": SWEPT,
            "shown": shown,
            "legend": legend,
            "legend_values": legend_values or {},
            "tag": tag,
            "unchanged": unchanged,
            "untagged": unchanged if untagged is NOTHING else untagged,
            "between": between,
        }
    )


def derived(*, shown: bool = True) -> Any:
    return field(metadata={"role": DERIVED, "shown": shown})


def fixed(source: str, *, unchanged: Any = NOTHING, trains: bool = True) -> Any:
    """`source`: where the study file holds the value ("optim.momentum"; the plan reads it there, and
    study/plan.py's COMPUTED says how where it is not copied as is). `trains=False`: the value does not
    change the trained weights (a path, a measurement taken during training, a speed switch), so it
    stays out of the trial id (`training_digest`)."""
    return field(metadata={"role": FIXED, "shown": False, "source": source, "unchanged": unchanged, "trains": trains})


@dataclass(frozen=True)
class TrialSpec:
    """Everything one trial needs and everything that describes it (built by study/plan.py)."""

    trial_id: str = field(metadata={"role": "id", "shown": True})
    # The sweep axes: every combination of the study's `sweep:` lists is one trial.
    batch_size: int = swept(legend=None)  # global batch per optimizer step = workers x micro_batch x accumulation_steps
    augmentation: str = swept(
        shown=False, legend=None, between=False
    )  # none | mixup | cutmix | cutout (trainables/augment.py)
    augmentation_alpha: float = swept(
        shown=False, legend=None, between=False
    )  # mixup, cutmix: lambda ~ Beta(alpha, alpha)
    cutout_size: int = swept(shown=False, legend=None, between=False)  # cutout: side of the square, pixels
    lr_scaling: str = swept(legend=None)  # none | linear | sqrt (trainables/lr.py)
    seed: int = swept(legend=None)  # replicates: what intervals are taken over
    base_lr: float = swept(legend="base lr {value}")  # the LR at base_batch_size
    weight_decay: float = swept(legend="weight decay {value}")
    warmup_epochs: float = swept(legend="warmup {value} epochs")
    model: str = swept(
        legend="{value}", tag="{value}-", untagged="vgg9", between=False
    )  # a name in the model registry (trainables/models.py)
    optimizer: str = swept(legend="{value}", tag="-{value}", unchanged="sgd")  # sgd | lars | lamb (trainables/optim.py)
    ghost_batch: int | None = swept(
        legend="ghost BN {value}", legend_values={None: "plain BN"}, tag="-ghost{value}", unchanged=None
    )  # BatchNorm over ghost batches of this many images; None = the micro-batch
    budget: str = swept(
        legend_values={"steps": "train longer", "epochs": "fixed epochs"}, tag="-long", unchanged="epochs"
    )  # epochs | steps (epochs and milestones x batch / base batch: train longer)
    label_smoothing: float = swept(legend="label smoothing {value}", tag="-ls{value}", unchanged=0.0)
    # Derived from the above by the plan.
    augmentation_label: str = derived()  # 'none', 'mixup a=1', 'cutout 16': how tables and figures name it
    mixup_alpha: float = derived(shown=False)  # alpha when the augmentation is mixup, else 0
    peak_lr: float = derived()  # base_lr scaled by lr_scaling, reached after warmup
    workers: int = derived()
    micro_batch: int = derived()  # per worker and per forward pass
    accumulation_steps: int = derived()
    bn_batch_size: int = derived(shown=False)  # what BatchNorm normalizes over: the ghost batch, else the micro-batch
    epochs: int = derived()  # schedule.epochs, or scaled with the batch size under budget 'steps'
    milestones: tuple[int, ...] = derived(shown=False)  # epochs, for step decay (scaled as epochs)
    phase: str = derived()  # grid | sample (a search sample) | final (a search winner re-run with a seed)
    search_group: str = derived()  # the group a search sample or final belongs to ('' for grid trials)
    # The same for every trial of the study.
    study: str = fixed("name")
    dataset: str = fixed("data.dataset")
    data_root: str = fixed(
        "data.root", trains=False
    )  # where the images lay for this run: the same images may lie elsewhere
    train_subset: int | None = fixed("data.train_subset")
    test_subset: int | None = fixed("data.test_subset")
    augment: bool = fixed("data.augment")  # random crop (pad 4) + horizontal flip
    width: float = fixed("model.width")
    base_batch_size: int = fixed("optim.base_batch_size")
    momentum: float = fixed("optim.momentum")
    nesterov: bool = fixed("optim.nesterov")
    trust_coefficient: float = fixed("optim.trust_coefficient", unchanged=0.001)  # lars
    # which parameters weight decay applies to (trainables/optim.py): all | weights. Before it was a
    # setting, SGD decayed all and LARS/LAMB weights only: those trials keep their ids.
    decayed: str = fixed(
        "optim.decayed", unchanged=lambda values: "weights" if values["optimizer"] in ("lars", "lamb") else "all"
    )
    decay: str = fixed("schedule.decay")  # step | cosine | constant
    gamma: float = fixed("schedule.gamma")
    eval_every_epochs: int = fixed("eval.every_epochs")
    train_eval_samples: int | None = fixed("eval.train_eval_samples")
    noise_probes: int = fixed(
        "measure.noise_scale", trains=False
    )  # one-worker trials: pairs of probe batches per epoch for the noise scale
    noise_probe_batch: int = fixed(
        "measure.noise_scale", trains=False
    )  # the probes' small batch (at most the micro-batch); the big one is twice it
    trajectory_every: int = fixed(
        "measure.trajectory", trains=False
    )  # keep the weights every N epochs (and the last); 0 = never
    compile: bool | None = fixed(
        "model.compile", trains=False
    )  # torch.compile the training forward/backward; None = on CUDA only

    def __post_init__(self) -> None:
        if self.workers * self.micro_batch * self.accumulation_steps != self.batch_size:
            raise ValueError(
                f"{self.trial_id}: workers {self.workers} x micro_batch {self.micro_batch} x "
                f"accumulation {self.accumulation_steps} != batch_size {self.batch_size}"
            )

    @property
    def augment_batch(self) -> Augmentation:
        return Augmentation(self.augmentation, self.augmentation_alpha, self.cutout_size)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["milestones"] = list(self.milestones)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialSpec:
        return cls(**{**values, "milestones": tuple(values["milestones"])})


@dataclass(frozen=True)
class TrialRun:
    """What one Tune trial is handed: its record, where it writes, the provenance its row carries and its
    resources. It crosses Ray as a plain dict (Tune's param space, `to_dict`) and is rebuilt on the other
    side (`from_dict`), so neither side describes the dict again."""

    spec: TrialSpec
    study_root: str  # <storage>/<study>: checkpoints/, results/, train/, trajectory/ live under it
    provenance: dict[str, Any]  # the driver's git revision and resolved study config
    use_gpu: bool
    cpus_per_worker: float
    gpus_per_worker: float
    max_failures: int  # restarts of a multi-worker trial's workers from their last checkpoint
    started_at: float | None = None  # when the Tune trial started (it sets this): start-up is timed from it
    worker_started_at: float | None = None  # multi-worker: when the workers were placed and running
    generation: int = 0  # the driver run it belongs to: its writes are refused once a newer run has begun

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**values, "spec": self.spec.to_dict()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialRun:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in values.items() if k in known}, "spec": TrialSpec.from_dict(values["spec"])})


def fields_with_role(cls: type, *roles: str) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("role") in roles]


def shown_fields(cls: type, *roles: str) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("role") in roles and f.metadata.get("shown")]


SWEEP_FIELDS = tuple(fields_with_role(TrialSpec, SWEPT))  # what trials compared with each other share or not


def value_text(value: Any) -> str:
    """One value as legends and trial ids write it: 0.1 not 0.1000, 128 for 128.0, null for None."""
    if value is None or (isinstance(value, float) and value != value):
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True)
class KeyInfo:
    """What the record says of one swept key (see the module docstring)."""

    name: str
    legend: str | None
    legend_values: dict[Any, str]
    tag: str
    untagged: Any
    between: bool

    @property
    def compared(self) -> bool:
        """Whether figures draw each of its values as separate curves (never averaged as seeds)."""
        return self.legend is not None or bool(self.legend_values)

    def legend_text(self, value: Any) -> str:
        for known, text in self.legend_values.items():
            if value == known or (known is None and value_text(value) == "null"):
                return text
        return (self.legend or "{key} {value}").format(key=self.name, value=value_text(value))

    def tag_text(self, value: Any) -> str:
        """The trial id's part for `value`: empty at the unchanged value, or where the key has no tag."""
        if not self.tag or (self.untagged is not NOTHING and value == self.untagged):
            return ""
        return self.tag.format(value=value_text(value))


def key_info(name: str) -> KeyInfo:
    meta = {f.name: f.metadata for f in dataclasses.fields(TrialSpec)}[name]
    return KeyInfo(
        name,
        meta.get("legend"),
        dict(meta.get("legend_values", {})),
        meta.get("tag", ""),
        meta.get("untagged", NOTHING),
        bool(meta.get("between", True)),
    )


def unchanged_value(unchanged: Any, values: dict[str, Any]) -> Any:
    """A key's `unchanged` value for a trial of these values (it may depend on them)."""
    return unchanged(values) if callable(unchanged) else unchanged


def training_digest(values: dict[str, Any]) -> str:
    """Six hex digits of what a trial trains (`values`: TrialSpec's fields), the end of its id. Fields with
    `trains=False` never enter it; a key added since the first studies ran enters it only at a value
    other than its `unchanged` one. Two trials with one digest are one training."""
    unchanged = unchanged_values()
    hashed = {
        f.name: values[f.name]
        for f in dataclasses.fields(TrialSpec)
        if f.name != "trial_id"
        and f.metadata.get("trains", True)
        and (f.name not in unchanged or values[f.name] != unchanged_value(unchanged[f.name], values))
    }
    return hashlib.sha1(json.dumps(hashed, sort_keys=True, default=list).encode()).hexdigest()[:6]


def unchanged_values() -> dict[str, Any]:
    """Fields added since the first studies ran, and the value those studies had (left out of digests)."""
    return {
        f.name: f.metadata["unchanged"]
        for f in dataclasses.fields(TrialSpec)
        if f.metadata.get("unchanged", NOTHING) is not NOTHING
    }


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch of a trial measured (one `epochs/` row; accuracies are fractions)."""

    epoch: int
    step: int  # optimizer steps so far
    lr: float  # at the epoch's last step
    train_loss: float  # on the optimized (augmented, mixed) batches
    grad_norm_rms: float  # the all-reduced gradient's norm, root mean square over the epoch's steps
    local_grad_sq: float  # one worker's squared gradient norm, mean over steps and workers
    grad_sq: float  # the all-reduced gradient's squared norm, mean over steps
    param_norm: float
    epoch_time_s: float  # training only, without evaluation
    images_per_s: float
    mfu: float | None  # model FLOPs utilization (CUDA devices with a known peak)
    clean_train_loss: float  # no augmentation, no mixup, on train_eval_samples fixed images; NaN when not evaluated
    clean_train_acc: float
    test_loss: float
    test_acc: float
    # The gradient noise scale of this epoch (McCandlish et al. 2018); NaN when not measured.
    noise_small_batch: float
    noise_small_grad_sq: float
    noise_big_batch: float
    noise_big_grad_sq: float
    noise_scale: float
    noise_population: int | None  # training images the batches were drawn from (without replacement)
    noise_units: str | None  # JSON [[small, big, weight], ...] for the trial's bootstrap interval
    diverged: bool
    diverged_reason: str | None
    checkpoint: str | None = None  # the trial's checkpoint after this epoch, while it is kept

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EpochMetrics:
        """An epoch as a checkpoint's history holds it, written by this version or an older one: renamed
        fields under their new names, fields added since with what an older epoch did not measure (NaN
        for a number, None where the field allows it). Fields dropped since are ignored."""
        values = {RENAMED_EPOCH_FIELDS.get(k, k): v for k, v in values.items()}
        hints = typing.get_type_hints(cls)
        known = {}
        for f in dataclasses.fields(cls):
            if f.name in values:
                known[f.name] = values[f.name]
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                hint = hints[f.name]
                if type(None) in typing.get_args(hint):
                    known[f.name] = None
                elif hint is float:
                    known[f.name] = math.nan
                else:
                    raise ValueError(f"an epoch record without {f.name!r} ({hint}) cannot be resumed; start afresh")
        return cls(**known)


# Old epoch field name -> its name now (checkpoints written before the rename still resume).
RENAMED_EPOCH_FIELDS = {"grad_norm": "grad_norm_rms"}
