"""The measurement phase: sharpness and loss landscapes of trained trials, spread over Ray tasks.

    python -m study.measure RESULTS_DIR [--address ADDR]

Plans jobs from the study's `measure` section (per completed trial: Hessian, epsilon-sharpness,
random-direction slices, the gradient noise scale from training; per pair of trials that differ
only in `interpolate.between`: the 1-D interpolation), splits each landscape job into chunks of
points (each chunk one Ray task that loads the data and checkpoints once), and writes one file per
job, atomically. Jobs whose file exists are skipped, so re-running measures only what is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from study.config import ConfigError, StudyConfig, build, validate
from study.store import ResultsStore

SWEEP_KEYS = ("batch_size", "augmentation", "augmentation_alpha", "cutout_size", "lr_scaling", "seed", "base_lr",
              "weight_decay", "warmup_epochs")
DIRECTION_SEED = 20180101  # the random directions of a trial depend only on this and the trial's seed
NOISE_SCALE_LAST_EPOCHS = 5


@dataclass(frozen=True)
class Job:
    """One measurement with its own output file (`table/key.parquet`)."""

    table: str  # sharpness | landscape
    kind: str  # interp1d | random1d | random2d | hessian | eps_sharpness
    trials: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        digest = hashlib.sha1(json.dumps([self.kind, self.trials, self.settings], sort_keys=True).encode())
        return f"{self.kind}-{'-'.join(self.trials)}-{digest.hexdigest()[:6]}"


def interpolation_pairs(study: StudyConfig, trials: pd.DataFrame) -> list[tuple[str, str]]:
    """(trial_a, trial_b) for each requested pair of `between` values, among trials equal in every other key."""
    spec = study.measure.interpolate
    if spec is None or trials.empty:
        return []
    others = [k for k in SWEEP_KEYS if k != spec.between and k in trials]
    pairs = []
    for _, group in trials.groupby(others, dropna=False, sort=True):
        by_value = {row[spec.between]: row["trial_id"] for _, row in group.iterrows()}
        for a, b in spec.pairs:
            if a in by_value and b in by_value:
                pairs.append((by_value[a], by_value[b]))
    return pairs


def plan_jobs(study: StudyConfig, trials: pd.DataFrame) -> list[Job]:
    m = study.measure
    completed = trials[trials["status"] == "completed"]
    jobs = []
    if m.interpolate is not None:
        settings = {k: v for k, v in asdict(m.interpolate).items() if k not in ("between", "pairs")}
        jobs += [Job("landscape", "interp1d", pair, settings) for pair in interpolation_pairs(study, completed)]
    for trial_id in completed["trial_id"]:
        if m.random_directions is not None:
            settings = asdict(m.random_directions)
            jobs.append(Job("landscape", f"random{m.random_directions.dims}d", (trial_id,), settings))
        if m.hessian is not None:
            jobs.append(Job("sharpness", "hessian", (trial_id,), asdict(m.hessian)))
        if m.eps_sharpness is not None:
            jobs.append(Job("sharpness", "eps_sharpness", (trial_id,), asdict(m.eps_sharpness)))
    return jobs


def job_points(job: Job) -> list[tuple[float, float | None]]:
    low, high = job.settings["range"]
    axis = np.linspace(low, high, job.settings["points"]).tolist()
    if job.kind == "random2d":
        return [(x, y) for y in axis for x in axis]
    return [(x, None) for x in axis]


def chunk(items: list[Any], parts: int) -> list[list[Any]]:
    parts = max(1, min(parts, len(items)))
    return [items[i::parts] for i in range(parts)]  # interleaved: every chunk costs about the same


# ---------------------------------------------------------------------------------------------
# Work done inside Ray tasks (torch imported there, not on the analysis side).

def _load_model_state(uri: str) -> dict[str, Any]:
    import ray.train

    from trainables.checkpoint import load_state

    with ray.train.Checkpoint(uri).as_directory() as directory:
        return load_state(directory)["model"]


def _task_data(spec_json: str, train_samples: int | None, test_samples: int | None, device: Any) -> Any:
    from trainables.data import class_balanced_subset, load_dataset
    from trainables.loop import TrialSpec

    spec = TrialSpec.from_dict(json.loads(spec_json))
    data = load_dataset(spec.dataset, spec.data_root, train_subset=spec.train_subset, test_subset=spec.test_subset)
    splits = {}
    for name, split, n in (("train", data.train, train_samples), ("test", data.test, test_samples)):
        if n == 0:  # a split can be left out (benchmarks)
            continue
        if n is not None and n < len(split):
            split = split.take(class_balanced_subset(split.labels, n, data.num_classes))
        splits[name] = split.to(device)
    return spec, data, splits


def run_chunk(job: Job, specs: dict[str, str], checkpoints: dict[str, str],
              points: list[tuple[float, float | None]]) -> list[dict[str, Any]]:
    """Evaluate landscape points of one job; the data and checkpoints load once per chunk."""
    import torch

    from trainables.data import Normalizer
    from trainables.landscape import displaced, evaluate_state, filter_normalized_direction, interpolate
    from trainables.loop import Runtime
    from trainables.models import build_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runtime = Runtime(device)
    first = job.trials[0]
    spec, data, splits = _task_data(specs[first], job.settings["train_samples"], job.settings["test_samples"], device)
    normalize = Normalizer(data.mean, data.std, device)
    model = build_model(spec.arch, width=spec.width, num_classes=data.num_classes).to(device)
    state_a = {k: v.to(device) for k, v in _load_model_state(checkpoints[first]).items()}
    if job.kind == "interp1d":
        state_b = {k: v.to(device) for k, v in _load_model_state(checkpoints[job.trials[1]]).items()}
    else:
        model.load_state_dict(state_a)
        generator = torch.Generator().manual_seed(DIRECTION_SEED + spec.seed)
        directions = [filter_normalized_direction(model, generator) for _ in range(2 if job.kind == "random2d" else 1)]
    rows = []
    for x, y in points:
        if job.kind == "interp1d":
            state = interpolate(state_a, state_b, x)
        else:
            state = displaced(state_a, directions, [x] if y is None else [x, y])
        for split_name, split in splits.items():
            loss, acc = evaluate_state(model, state, split, normalize, runtime)
            rows.append({"job": job.key, "kind": job.kind, "trial_a": first,
                         "trial_b": job.trials[1] if len(job.trials) > 1 else None, "x": x, "y": y,
                         "split": split_name, "loss": loss, "acc": acc})
    return rows


def run_sharpness(job: Job, specs: dict[str, str], checkpoints: dict[str, str]) -> list[dict[str, Any]]:
    """Hessian top-k eigenvalues and trace, or epsilon-sharpness, of one trial's training loss."""
    import torch

    from trainables.data import Normalizer
    from trainables.models import build_model
    from trainables.ray_train import device_name
    from trainables.sharpness import eps_sharpness, hessian_trace, top_eigenvalues

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    trial_id = job.trials[0]
    samples = job.settings["samples"]
    spec, data, splits = _task_data(specs[trial_id], samples, 1, device)
    normalize = Normalizer(data.mean, data.std, device)
    model = build_model(spec.arch, width=spec.width, num_classes=data.num_classes).to(device)
    model.load_state_dict(_load_model_state(checkpoints[trial_id]))
    model.eval()  # BatchNorm uses its running statistics, as PyHessian does
    train = splits["train"]
    batch = 512 if device.type == "cpu" else 2048
    batches = [(normalize(train.images[i:i + batch]), train.labels[i:i + batch]) for i in range(0, len(train), batch)]
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_fn(b: tuple[Any, Any]) -> Any:
        return torch.nn.functional.cross_entropy(model(b[0]), b[1])

    generator = torch.Generator().manual_seed(DIRECTION_SEED + spec.seed)
    n = len(train)
    base = {"trial_id": trial_id, "n_samples": n, "device": device_name(device)}
    if job.kind == "hessian":
        # PyHessian's stopping rule: relative change below 1e-3, at most 100 iterations.
        eig = top_eigenvalues(loss_fn, batches, params, k=job.settings["top_k"], tolerance=1e-3, generator=generator)
        rows = [{**base, "measure": f"hessian_eig{i + 1}", "value": value,
                 "settings": json.dumps({**job.settings, "iterations": it})}
                for i, (value, it) in enumerate(zip(eig.values, eig.iterations))]
        if job.settings["trace"]:
            trace = hessian_trace(loss_fn, batches, params, samples=HUTCHINSON_SAMPLES, generator=generator)
            rows.append({**base, "measure": "hessian_trace", "value": trace.value,
                         "settings": json.dumps({**job.settings, "std_error": trace.std_error,
                                                 "hutchinson_samples": trace.samples})})
        return rows
    value = eps_sharpness(loss_fn, batches, params, job.settings["eps"])
    return [{**base, "measure": "eps_sharpness", "value": value, "settings": json.dumps(job.settings)}]


HUTCHINSON_SAMPLES = 30


def noise_scale_rows(trials: pd.DataFrame, epochs: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """B_simple per trial from the squared gradient norms recorded during its last epochs."""
    from trainables.sharpness import noise_scale

    out = {}
    for trial_id in trials.loc[trials["status"] == "completed", "trial_id"]:
        rows = epochs[(epochs["trial_id"] == trial_id) & epochs["noise_small_grad_sq"].notna()]
        rows = rows.sort_values("epoch").tail(NOISE_SCALE_LAST_EPOCHS)
        if rows.empty:
            continue
        estimate = noise_scale(float(rows["noise_small_batch"].iloc[-1]), float(rows["noise_small_grad_sq"].mean()),
                               float(rows["noise_big_batch"].iloc[-1]), float(rows["noise_big_grad_sq"].mean()))
        settings = {"epochs": rows["epoch"].tolist(), "small_batch": float(rows["noise_small_batch"].iloc[-1]),
                    "big_batch": float(rows["noise_big_batch"].iloc[-1]), **estimate}
        out[trial_id] = [{"trial_id": trial_id, "measure": "noise_scale", "value": estimate["b_simple"],
                          "n_samples": len(rows), "settings": json.dumps(settings), "device": None}]
    return out


# ---------------------------------------------------------------------------------------------
# The driver

def run_measurements(study: StudyConfig, store: ResultsStore) -> int:
    """Run every missing measurement job of the study; returns the number of jobs written."""
    import ray

    trials = store.read("trials")
    written = 0
    if study.measure.noise_scale:
        done = store.keys("sharpness")
        for trial_id, rows in noise_scale_rows(trials, store.read("epochs")).items():
            if f"noise_scale-{trial_id}" not in done:
                store.write("sharpness", f"noise_scale-{trial_id}", rows)
                written += 1
    existing = {table: store.keys(table) for table in ("sharpness", "landscape")}  # one listing per table
    jobs = [j for j in plan_jobs(study, trials) if j.key not in existing[j.table]]
    if not jobs:
        return written
    specs = dict(zip(trials["trial_id"], trials["spec"]))
    checkpoints = dict(zip(trials["trial_id"], trials["checkpoint"]))
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    workers = gpus or max(1, int(resources.get("CPU", 1)))
    options = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    chunk_task = ray.remote(run_chunk).options(**options)
    sharpness_task = ray.remote(run_sharpness).options(**options)
    pending: dict[Any, Job] = {}
    parts: dict[str, list[Any]] = {}
    remaining: dict[str, int] = {}
    for job in jobs:
        if job.table == "landscape":
            chunks = chunk(job_points(job), workers)
            for points in chunks:
                pending[chunk_task.remote(job, specs, checkpoints, points)] = job
            remaining[job.key] = len(chunks)
        else:
            pending[sharpness_task.remote(job, specs, checkpoints)] = job
            remaining[job.key] = 1
        parts[job.key] = []
    total, started = len(pending), time.perf_counter()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(ready[0])
        parts[job.key] += ray.get(ready[0])
        remaining[job.key] -= 1
        if remaining[job.key] == 0:
            rows = sorted(parts.pop(job.key), key=lambda r: (r.get("split", ""), r.get("y") or 0, r.get("x", 0)))
            store.write(job.table, job.key, rows)
            written += 1
        done = total - len(pending)
        print(f"\rmeasure: {done}/{total} tasks [{'#' * (20 * done // total):<20}] "
              f"{time.perf_counter() - started:.0f} s", end="\n" if not pending else "", flush=True)
    return written


def study_from_store(store: ResultsStore) -> StudyConfig:
    trials = store.read("trials")
    config = json.loads(trials["config"].dropna().iloc[-1])
    study = build(StudyConfig, config, "")
    validate(study, store.root)
    return study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.measure", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_dir", help="a study's results folder, <storage>/<name>/results (path or URI)")
    parser.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else start a local one)")
    args = parser.parse_args(argv)
    from study.run_sweep import connect_ray

    try:
        store = ResultsStore(args.results_dir)
        if not store.is_store():
            raise ConfigError(f"{args.results_dir} is not a results store (no trials/ or epochs/ Parquet files); "
                              "pass the results folder that run_sweep printed")
        study = study_from_store(store)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    connect_ray(args.address)
    written = run_measurements(study, store)
    print(f"measure: {written} jobs written to {store.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
