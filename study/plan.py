"""Expand a study into trials: the grid over every sweep key, each with its derived values."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import pandas as pd

from analysis.words import counted
from study.config import StudyConfig, all_grids, key_values
from study.measures.trajectory import trajectory_epochs
from trainables.catalog import Augmentation, cache_dir, dataset_sizes, split_global_batch, state_bytes
from trainables.lr import scaled_lr, training_regime
from trainables.trial import (
    DERIVED,
    FIXED,
    SWEEP_FIELDS,
    SWEPT,
    Phase,
    TrialSpec,
    key_info,
    shown_fields,
    training_digest,
    unchanged_value,
    unchanged_values,
)


def local_path(path: str) -> str:
    """Workers run elsewhere than the driver's folder: make local paths absolute, leave URIs alone."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def sweep_axes(study: StudyConfig) -> dict[str, tuple[Any, ...]]:
    """Each sweep key's values (`key_values`); mixup_alpha and augmentation are one axis (mixup_alpha is
    shorthand for mixup augmentations), `also` holds more grids, not an axis."""
    return {
        key: key_values(study, key)
        for key in (f.name for f in dataclasses.fields(study.sweep))
        if key not in ("mixup_alpha", "also")
    }


def _noise_probes(study: StudyConfig, noise: Any) -> int:
    # One-worker trials probe for the noise scale; multi-worker ones get it free from per-worker vs
    # all-reduced gradients.
    return noise.probe_pairs if noise is not None and study.resources.workers == 1 else 0


# How a fixed field's value is made from what its `source` holds, where it is not copied as is.
COMPUTED: dict[str, Callable[[StudyConfig, Any], Any]] = {
    "data_root": lambda study, root: local_path(root),
    "noise_probes": _noise_probes,
    "noise_probe_batch": lambda study, noise: noise.probe_batch if noise is not None else 512,
    "trajectory_every": lambda study, trajectory: trajectory.every_epochs if trajectory is not None else 0,
    "compile": lambda study, compile_: None if compile_ == "auto" else compile_,
}


def source_value(study: StudyConfig, source: str) -> Any:
    """The study file's value at a dotted path ("optim.momentum")."""
    value: Any = study
    for part in source.split("."):
        value = getattr(value, part)
    return value


def fixed_values(study: StudyConfig) -> dict[str, Any]:
    """The record's fields that are the same for every trial of the study: each fixed field of TrialSpec
    read from the study file where its `source` says (so a new one is its field, and nothing else)."""
    values = {}
    for f in dataclasses.fields(TrialSpec):
        if f.metadata.get("role") == FIXED:
            raw = source_value(study, f.metadata["source"])
            values[f.name] = COMPUTED[f.name](study, raw) if f.name in COMPUTED else raw
    return values


def derived_values(study: StudyConfig, point: dict[str, Any]) -> dict[str, Any]:
    """The record's fields computed from one grid point: the augmentation's parts, the lr, the batch split."""
    aug: Augmentation = point["augmentation"]
    workers = study.resources.workers
    micro_batch, accumulation = split_global_batch(point["batch_size"], workers, study.resources.max_micro_batch)
    epochs, milestones = training_regime(
        study.schedule.epochs,
        study.schedule.milestones,
        point["budget"],
        point["batch_size"],
        study.optim.base_batch_size,
    )
    return dict(
        augmentation=aug.name,
        augmentation_alpha=aug.alpha,
        cutout_size=aug.size,
        augmentation_label=aug.label,
        mixup_alpha=aug.alpha if aug.name == "mixup" else 0.0,
        peak_lr=scaled_lr(point["base_lr"], point["batch_size"], study.optim.base_batch_size, point["lr_scaling"]),
        workers=workers,
        micro_batch=micro_batch,
        accumulation_steps=accumulation,
        bn_batch_size=point["ghost_batch"] or micro_batch,
        epochs=epochs,
        milestones=milestones,
    )


def grid_points(study: StudyConfig, seeds: tuple[int, ...] | None = None) -> list[dict[str, Any]]:
    """Every combination of the sweep axes (with `seeds` in place of the seed axis when given), then those
    of each `sweep.also` grid not already among them."""
    points: dict[str, dict[str, Any]] = {}
    for grid in all_grids(study.sweep):
        axes = sweep_axes(dataclasses.replace(study, sweep=grid))
        if seeds is not None:
            axes["seed"] = seeds
        for combination in itertools.product(*axes.values()):
            point = dict(zip(axes, combination))
            points.setdefault(repr(sorted(point.items())), point)
    return list(points.values())


def make_trial(study: StudyConfig, point: dict[str, Any], phase: str = Phase.GRID, group: str = "") -> TrialSpec:
    """The trial of one grid point (searched keys included in `point` where a search set them)."""
    values = {
        **fixed_values(study),
        **point,
        **derived_values(study, point),
        "phase": str(phase),
        "search_group": group,
    }
    # Readable and stable: the swept values for people, a digest of what it trains for uniqueness, so a
    # resumed study never mistakes a changed trial for a finished one, nor a moved or re-measured one
    # for a new one.
    digest = training_digest(values)
    aug: Augmentation = point["augmentation"]
    augmentation = {"none": "a0", "mixup": f"a{aug.alpha:g}", "cutmix": f"cutmix{aug.alpha:g}"}.get(
        aug.name, f"cutout{aug.size}"
    )
    tags = [key_info(key).tag_text(values[key]) for key in SWEEP_FIELDS]
    leading = "".join(tag for tag in tags if tag.endswith("-"))  # a tag ending in '-' leads the id
    remedies = "".join(tag for tag in tags if not tag.endswith("-"))
    trial_id = (
        f"{leading}b{point['batch_size']}-{augmentation}-{point['lr_scaling']}{remedies}-s{point['seed']}-{digest}"
    )
    return TrialSpec(trial_id=trial_id, **values)


def group_key(study: StudyConfig, point: dict[str, Any]) -> str:
    """A search group's name: its values of the sweep keys that take more than one value (seed aside)."""
    axes = sweep_axes(study)
    parts = []
    for key, values in axes.items():
        if key == "seed" or len(values) < 2:
            continue
        value = point[key]
        parts.append(f"{key}={value.label if isinstance(value, Augmentation) else value}")
    return ", ".join(parts) or "all"


def plan_study(study: StudyConfig) -> list[TrialSpec]:
    """One TrialSpec per combination of the sweep axes, in a stable order; with a `search:` section, the
    search samples of every group instead (their winners are planned from results: `plan_finals`)."""
    if study.search is None:
        return [make_trial(study, point) for point in grid_points(study)]
    from study.search import draw_samples  # numpy and pandas: only for a search (--dry-run stays light)

    trials = []
    for point in grid_points(study, seeds=study.sweep.seed[:1]):
        group = group_key(study, point)
        trials += [
            make_trial(study, {**point, **sampled}, Phase.SAMPLE, group)
            for sampled in draw_samples(study.search, group)
        ]
    return trials


def stored_spec_values(spec_json: str) -> dict[str, Any] | None:
    """A stored trial row's `spec` as TrialSpec values; fields added since it was written take their
    `unchanged` value. None where it lacks one that has none (it cannot be compared)."""
    stored = json.loads(spec_json)
    unchanged = unchanged_values()
    values: dict[str, Any] = {}
    for f in dataclasses.fields(TrialSpec):
        if f.name in stored:
            values[f.name] = stored[f.name]
        elif f.name in unchanged:
            values[f.name] = unchanged[f.name]
        else:
            return None
    for name, value in values.items():  # the callable `unchanged` ones depend on the others
        values[name] = unchanged_value(value, values)
    return values


def stored_specs(stored: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """trial id -> TrialSpec values of every row of a `trials/` frame whose `spec` can be read
    (`stored_spec_values`)."""
    if stored.empty or "spec" not in stored:
        return {}
    specs = {}
    for trial_id, spec_json in zip(stored["trial_id"], stored["spec"], strict=True):
        values = stored_spec_values(spec_json) if isinstance(spec_json, str) else None
        if values is not None:
            specs[str(trial_id)] = values
    return specs


def with_stored_ids(plan: list[TrialSpec], stored: pd.DataFrame) -> list[TrialSpec]:
    """`plan` with every trial whose training the store already holds under that trial's stored id.

    A store written before an id left out paths, measurement settings and speed switches (`trains=False`)
    holds ids that depended on them (the data folder with HOME expanded, the noise-scale probes): matched
    by what they train, its trials are resumed and counted as the same trainings, never again as new ones.
    """
    ids: dict[str, str] = {}
    for trial_id, values in stored_specs(stored).items():
        ids.setdefault(training_digest(values), trial_id)
    return [dataclasses.replace(t, trial_id=ids.get(training_digest(t.to_dict()), t.trial_id)) for t in plan]


def unmeasurable_note(plan: list[TrialSpec], stored: pd.DataFrame, finished: set[str]) -> str | None:
    """What a measurement added on --resume cannot measure: finished trials trained without what it records
    while training (noise-scale probes, trajectory snapshots). None when nothing is missing."""
    specs = {trial_id: values for trial_id, values in stored_specs(stored).items() if trial_id in finished}
    gaps = []
    for field_name, measure in (("noise_probes", "measure.noise_scale"), ("trajectory_every", "measure.trajectory")):
        missing = [
            t.trial_id for t in plan if getattr(t, field_name) and specs.get(t.trial_id, {}).get(field_name) == 0
        ]
        if missing:
            gaps.append(f"{len(missing)} finished trials were trained without {measure} (e.g. {missing[0]})")
    if not gaps:
        return None
    return (
        "note: " + "; ".join(gaps) + ": what it records while training cannot be measured for them afterwards "
        "(they are not trained again; the trials still to train record it)"
    )


def check_against_plan(study: StudyConfig, trials: list[TrialSpec], source: str = "<study>") -> None:
    """The measurements' checks that need the planned trials (interpolation pairs that pair nothing):
    after the study file's own checks, still before Ray starts; raises ConfigError."""
    from study.measures import MEASURES

    records = None
    for name, measure in MEASURES.items():
        settings = getattr(study.measure, name)
        if measure.check_plan is not None and settings is not None:
            records = records or [dataclasses.asdict(trial) for trial in trials]
            measure.check_plan(study, records, settings, f"{source}: ")


def coinciding_line(trials: list[TrialSpec]) -> str | None:
    """Trials that train exactly alike though their labels differ: every learning-rate rule gives the
    base rate at the base batch size, so `none`, `linear` and `sqrt` trials there are one training run
    three times. Said in the plan (each still runs, under its own label), with its share of the cost."""
    groups: dict[str, list[TrialSpec]] = {}
    for t in trials:
        same = {k: v for k, v in dataclasses.asdict(t).items() if k not in ("trial_id", "lr_scaling")}
        groups.setdefault(json.dumps(same, sort_keys=True, default=str), []).append(t)
    repeats = [g for g in groups.values() if len(g) > 1]
    if not repeats:
        return None
    extra = sum(len(g) - 1 for g in repeats)
    share = sum(t.epochs for g in repeats for t in g[1:]) / max(1, sum(t.epochs for t in trials))
    example = repeats[0]
    rules = "/".join(t.lr_scaling for t in example)
    return (
        f"note: {counted(extra, 'trial')} train exactly as another does ({counted(len(repeats), 'group')}; e.g. batch "
        f"{example[0].batch_size} with lr rules {rules}: peak lr {example[0].peak_lr:g} for all); each runs under "
        f"its own label, {share:.1%} of the training cost"
    )


def stand_in_finals(study: StudyConfig, samples: list[TrialSpec]) -> list[TrialSpec]:
    """For --dry-run's cost: the final trials a search will run, each group's first sample standing in
    for its winner (the same epochs and images; the learning rate does not change the cost)."""
    from study.config import searched_keys

    assert study.search is not None
    groups = {group_key(study, p): p for p in grid_points(study, seeds=study.sweep.seed[:1])}
    first: dict[str, TrialSpec] = {}
    for sample in samples:
        first.setdefault(sample.search_group, sample)
    keys = searched_keys(study.search)
    return [
        make_trial(study, {**groups[group], **{k: getattr(t, k) for k in keys}, "seed": seed}, Phase.FINAL, group)
        for group, t in first.items()
        if group in groups
        for seed in study.search.final_seeds
    ]


def plan_finals(study: StudyConfig, trials: pd.DataFrame, epochs: pd.DataFrame | None = None) -> list[TrialSpec]:
    """The best sample of every group (its searched values) with each of search.final_seeds."""
    from study.search import final_points

    assert study.search is not None
    groups = {group_key(study, p): p for p in grid_points(study, seeds=study.sweep.seed[:1])}
    return [
        make_trial(study, {**groups[group], **sampled, "seed": seed}, Phase.FINAL, group)
        for group, sampled in final_points(study, trials, epochs)
        if group in groups
        for seed in study.search.final_seeds
    ]


def format_plan(study: StudyConfig, trials: list[TrialSpec]) -> str:
    """The --dry-run table: one line per trial, its swept and derived values (the record's shown fields)."""
    shown = [
        c for c in shown_fields(TrialSpec, "id", SWEPT, DERIVED) if not all(trivial(getattr(t, c)) for t in trials)
    ]
    # A value every trial shares is said once above the table, not in a column of repeats.
    same = [
        c for c in shown if c not in ("trial_id", "batch_size") and len({_cell(getattr(t, c)) for t in trials}) == 1
    ]
    columns = [c for c in shown if c not in same]
    rows = [[_cell(getattr(t, c)) for c in columns] for t in trials]
    widths = [max(len(x) for x in column) for column in zip(columns, *rows)]
    lines = [
        f"study {study.name}: {counted(len(trials), 'trial')} x {epochs_text(trials)} epochs on {study.data.dataset} "
        f"(width {study.model.width:g})"
    ]
    if trials and same:
        lines.append("every trial: " + ", ".join(f"{c} {_cell(getattr(trials[0], c))}" for c in same))
    for row in (columns, *rows):
        lines.append("  ".join(x.rjust(w) for x, w in zip(row, widths)))
    if study.search is not None:
        groups = len({t.search_group for t in trials})
        finals = groups * len(study.search.final_seeds)
        lines.append(
            f"search: {counted(groups, 'group')} x {counted(study.search.samples, 'sample')} = "
            f"{counted(len(trials), 'sample')}{' (ASHA stops the weak ones early)' if study.search.asha else ''}, "
            f"then {counted(groups, 'winner')} x {counted(len(study.search.final_seeds), 'seed')} = "
            f"{counted(finals, 'final trial')} (planned from the samples' results)"
        )
    repeated = coinciding_line(trials)
    if repeated:
        lines.append(repeated)
    # A search trains its samples (at most: ASHA stops some early) and then its finals, and measures only
    # the finals: those are priced with each group's first sample standing in for its winner.
    finals = stand_in_finals(study, trials) if study.search is not None else []
    lines.append(cost_line(study, trials + finals))
    measuring = measurement_cost_line(study, finals if study.search is not None else trials)
    if measuring:
        lines.append(measuring)
    if study.measure.trajectory is not None:
        lines.append(trajectory_disk_line(study, trials))
    return "\n".join(lines)


def bench_record_path() -> Path:
    return cache_dir() / "bench.json"


def write_bench_record(
    device: str,
    width: float,
    train: dict[int, float],
    evaluation: float,
    measure: dict[str, float] | None = None,
    train_via_ray: dict[int, float] | None = None,
    model: str = "vgg9",
) -> Path:
    """What `python -m study.bench` measured on this machine, for --dry-run's estimate of hours, kept per
    model and width (`--model`, `--width`: each its own entry, the others kept); `measure`: the
    measurement phase's rates in images/s by unit of work (products, steps, points: study.measures);
    `train_via_ray`: training images/s of the trial swept through Ray, what a study gets (the bare loop
    was 1.4x faster: hours from it were optimistic)."""
    path = bench_record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    records = bench_records()
    records[bench_key(model, width)] = {
        "device": device,
        "model": model,
        "width": width,
        "measured_at": time.strftime("%Y-%m-%d", time.gmtime()),
        "train_images_per_s": {str(b): r for b, r in train.items()},
        "train_via_ray_images_per_s": {str(b): r for b, r in (train_via_ray or {}).items()},
        "eval_images_per_s": evaluation,
        "measure_images_per_s": measure or {},
    }
    path.write_text(json.dumps({"records": records}, indent=1))
    return path


def time_text(seconds: float) -> str:
    """'0.98 h' from an hour on, '12 min' below (a small study's '0.0 h' said nothing)."""
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{max(1, round(seconds / 60))} min"


def bench_key(model: str, width: float) -> str:
    return f"{model}@{width:g}"


def bench_records() -> dict[str, dict[str, Any]]:
    """Every bench record of this machine, by 'model@width' (a file of one record, as written before
    records were kept per model and width, reads as its VGG9 entry)."""
    with contextlib.suppress(OSError, ValueError):
        stored = json.loads(bench_record_path().read_text())
        if "records" in stored:
            return dict(stored["records"])
        if "width" in stored:
            return {bench_key(stored.get("model", "vgg9"), stored["width"]): stored}
    return {}


def bench_record(model: str, width: float) -> dict[str, Any] | None:
    """The record of a model at a width, where it holds what hours need (a bench cut short before its
    training and evaluation rates were measured has none)."""
    record = bench_records().get(bench_key(model, width))
    usable = record and record.get("train_images_per_s") and math.isfinite(record.get("eval_images_per_s", math.nan))
    return record if usable else None


def missing_bench(models: list[str], width: float) -> str:
    """What to run so that --dry-run can say hours: the bench of each model at the study's width."""
    return "; ".join(f"python -m study.bench --model {m} --width {width:g}" for m in models) + " (~2 min each)"


def cost_line(study: StudyConfig, trials: list[TrialSpec]) -> str:
    """The study's size in training images (trials x epochs x images) and, where `python -m study.bench`
    has recorded this machine's rates at the study's width, in hours (training and evaluation, one trial
    at a time; more at once divides it)."""
    per_epoch, test_images = image_counts(study)
    if per_epoch is None:
        return "cost: training images unknown until the image folder is read (set data.train_subset to know)"
    total = sum(t.epochs for t in trials) * per_epoch
    trials_text = counted(len(trials), "trial")
    line = f"cost: {total:,} training images ({trials_text} x {epochs_text(trials)} epochs x {per_epoch:,})"
    samples = sum(t.phase == Phase.SAMPLE for t in trials)
    if samples:
        line += f", of which {len(trials) - samples} finals and {samples} samples (at most: ASHA stops some early)"
    models = sorted({t.model for t in trials})
    records = {m: bench_record(m, study.model.width) for m in models}
    missing = [m for m, r in records.items() if r is None]
    if missing:
        return line + f"; for hours on this machine: {missing_bench(missing, study.model.width)}"
    evaluated = (study.eval.train_eval_samples or per_epoch) + (test_images or 0)
    seconds, bare = 0.0, False
    for trial in trials:
        record = records[trial.model]
        assert record is not None
        via_ray = record.get("train_via_ray_images_per_s") or {}
        bare = bare or not via_ray
        rates = {int(b): r for b, r in (via_ray or record["train_images_per_s"]).items()}
        nearest = min(rates, key=lambda b: abs(math.log2(b) - math.log2(trial.batch_size)))
        evaluations = trial.epochs / trial.eval_every_epochs
        seconds += trial.epochs * per_epoch / rates[nearest] + evaluations * evaluated / record["eval_images_per_s"]
    record = records[models[0]]
    assert record is not None
    rate = (
        "training-loop rates without Ray, optimistic: study.bench --full times trials through Ray"
        if bare
        else "via-Ray rates"
    )
    return line + (
        f"; about {time_text(seconds)} one trial at a time on {record['device']} "
        f"(bench of {record['measured_at']}, {rate})"
    )


def image_counts(study: StudyConfig) -> tuple[int | None, int | None]:
    """(train, test) images the study's data holds: its subsets, else the dataset's size (None: unknown
    until an image folder is read)."""
    known = dataset_sizes(study.data.dataset) or (None, None)
    return study.data.train_subset or known[0], study.data.test_subset or known[1]


# The measurement phase's units of work, as the dry run names them.
WORK_NAMES = {"products": "Hessian-vector products", "steps": "loss-and-gradient steps", "points": "landscape points"}


def bench_measure_rates(study: StudyConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """(images/s by measurement unit, the bench record) as `python -m study.bench` measured this machine
    for the study's model and width; no rates where it has not (another width costs differently)."""
    record = bench_record(study.model.arch, study.model.width)
    return (dict(record.get("measure_images_per_s", {})), record) if record else ({}, {})


def measurement_cost_line(study: StudyConfig, trials: list[TrialSpec]) -> str | None:
    """The measurement phase's work if every planned trial completes: each unit (Hessian-vector products,
    loss-and-gradient steps, landscape points) with the images it evaluates, and hours where
    `python -m study.bench` has recorded this machine's measurement rates at the study's width."""
    from study.measures import MEASURES
    from study.measures.base import plan_measure_jobs

    jobs = plan_measure_jobs(study, [dataclasses.asdict(t) for t in trials])
    if not jobs:
        return None
    sizes = image_counts(study)
    work: dict[str, list[float]] = {}  # unit -> [count, images]
    for job in jobs:
        cost = MEASURES[job.measure].cost
        for unit, (count, images) in (cost(job, None, sizes) if cost else {}).items():
            total = work.setdefault(unit, [0.0, 0.0])
            total[0], total[1] = total[0] + count, total[1] + count * images
    said = ", ".join(f"~{c:,.0f} {WORK_NAMES.get(u, u)} ({i:,.0f} images)" for u, (c, i) in work.items())
    line = f"measure: {len(jobs)} jobs, {said or 'computed from the training records'}"
    rates, record = bench_measure_rates(study)
    if work and set(work) <= set(rates):
        seconds = sum(images / rates[unit] for unit, (_, images) in work.items())
        device, day = record["device"], record["measured_at"]
        line += f"; about {time_text(seconds)} one task at a time on {device} (bench of {day})"
    elif work:
        line += f"; for hours on this machine: {missing_bench([study.model.arch], study.model.width)}"
    return line + " (typical counts where an algorithm stops adaptively: study/measures/)"


def epochs_text(trials: list[TrialSpec]) -> str:
    """'300', or '150-19200' where the budget scales epochs with the batch size."""
    low, high = min((t.epochs for t in trials), default=0), max((t.epochs for t in trials), default=0)
    return str(low) if low == high else f"{low}-{high}"


def trivial(value: Any) -> bool:
    """A table cell that says nothing: a grid trial's phase and (empty) search group."""
    return value in ("", Phase.GRID)


def _cell(value: Any) -> str:
    if value is None:
        return "null"  # as the study file writes it
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trajectory_disk_line(study: StudyConfig, trials: list[TrialSpec]) -> str:
    """What measure.trajectory keeps on disk: snapshots per trial and their size (each trial's own model;
    100 classes bound any dataset's head)."""
    every = study.measure.trajectory.every_epochs
    counts = [len(trajectory_epochs(t.epochs, every)) for t in trials]
    sizes = [state_bytes(t.model, t.width, 100) for t in trials]
    snapshots = max(counts, default=0)
    if None in sizes:
        unknown = sorted({t.model for t, size in zip(trials, sizes) if size is None})
        return (
            f"trajectory: up to {snapshots} weight snapshots per trial under <storage>/{study.name}/trajectory/ "
            f"(the size of a {', '.join(unknown)} snapshot is not known without building it)"
        )
    largest = max(sizes, default=0)
    varies = "" if len(set(counts)) <= 1 and len(set(sizes)) <= 1 else "up to "
    return (
        f"trajectory: {varies}{snapshots} weight snapshots per trial x {largest / 2**20:.1f} MiB = "
        f"{snapshots * largest / 2**20:.0f} MiB per trial, "
        f"{sum(c * s for c, s in zip(counts, sizes)) / 2**30:.2f} GiB in all, under <storage>/{study.name}/trajectory/"
    )


def plan_one(name: str = "single", **sections: Any) -> TrialSpec:
    """The one trial of a study given as study-file sections, with the study file's defaults elsewhere.

    How tests and benchmarks get a trial: `plan_one(sweep={"batch_size": 64, "mixup_alpha": 0.0},
    data={"dataset": "synthetic"})`. Raises ValueError unless the sweep has exactly one point.
    """
    from study.config import parse_study

    study = parse_study(yaml.safe_dump({"name": name, **sections}), source="plan_one")
    trials = plan_study(study)
    if len(trials) != 1:
        raise ValueError(f"plan_one: the sweep has {len(trials)} points; give every sweep key one value")
    return trials[0]
