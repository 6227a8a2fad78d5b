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
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.store import ResultsStore, join
from study.cluster import connect_ray
from study.config import ConfigError, InterpolateConfig, NoiseScaleConfig, StudyConfig, build, searched_keys, validate
from study.progress import duration, eta
from trainables.trial import SWEEP_FIELDS, TrialSpec

DIRECTION_SEED = 20180101  # the random directions of a trial depend only on this and the trial's seed


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
    # Trials compared differ only in `between`: equal in every other swept key, except those a search tuned
    # per group (each group's winner has its own learning rate: that is the point of the search).
    searched = searched_keys(study.search) if study.search is not None else []
    others = [k for k in SWEEP_FIELDS if k != spec.between and k in trials and k not in searched]
    pairs = []
    for _, group in trials.groupby(others, dropna=False, sort=True):
        by_value = {row[spec.between]: row["trial_id"] for _, row in group.iterrows()}
        for a, b in spec.pairs:
            if a in by_value and b in by_value:
                pairs.append((by_value[a], by_value[b]))
    return pairs


def interpolation_settings(config: InterpolateConfig) -> dict[str, Any]:
    """An interp1d job's settings: the study's interpolate section but the pair selection."""
    return {k: v for k, v in asdict(config).items() if k not in ("between", "pairs")}


def plan_jobs(study: StudyConfig, trials: pd.DataFrame) -> list[Job]:
    m = study.measure
    completed = trials[trials["status"] == "completed"]
    jobs = []
    if m.interpolate is not None:
        settings = interpolation_settings(m.interpolate)
        jobs += [Job("landscape", "interp1d", pair, settings) for pair in interpolation_pairs(study, completed)]
    for trial_id in completed["trial_id"]:
        if m.random_directions is not None:
            settings = asdict(m.random_directions)
            jobs.append(Job("landscape", f"random{m.random_directions.dims}d", (trial_id,), settings))
        if m.hessian is not None:
            hessian = {k: v for k, v in asdict(m.hessian).items() if k != "density"}
            jobs.append(Job("sharpness", "hessian", (trial_id,), hessian))
            if m.hessian.density is not None:
                settings = {**asdict(m.hessian.density), "samples": m.hessian.samples, "batch": m.hessian.batch}
                jobs.append(Job("spectrum", "hessian_density", (trial_id,), settings))
        if m.eps_sharpness is not None:
            jobs.append(Job("sharpness", "eps_sharpness", (trial_id,), asdict(m.eps_sharpness)))
        if m.trajectory is not None:
            jobs.append(Job("trajectory", "trajectory2d", (trial_id,), asdict(m.trajectory)))
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
    from trainables.checkpoint import load_checkpoint

    return load_checkpoint(uri)["model"]


def _task_data(spec_json: str, train_samples: int | None, test_samples: int | None, device: Any) -> Any:
    from trainables.data import load_dataset

    spec = TrialSpec.from_dict(json.loads(spec_json))
    data = load_dataset(spec.dataset, spec.data_root, train_subset=spec.train_subset, test_subset=spec.test_subset)
    splits = {}
    for name, split, n in (("train", data.train, train_samples), ("test", data.test, test_samples)):
        if n == 0:  # a split can be left out (benchmarks)
            continue
        splits[name] = _balanced(split, n, data.num_classes).to(device)
    return spec, data, splits


def _balanced(split: Any, n: int | None, num_classes: int) -> Any:
    """A fixed class-balanced subset of `n` images of `split` (all of it for None or n >= its size)."""
    from trainables.data import class_balanced_subset

    return split if n is None or n >= len(split) else split.take(class_balanced_subset(split.labels, n, num_classes))


def run_chunk(
    job: Job, specs: dict[str, str], checkpoints: dict[str, str], points: list[tuple[float, float | None]]
) -> list[dict[str, Any]]:
    """Evaluate landscape points of one job; the data and checkpoints load once per chunk."""
    import torch

    from trainables.data import Normalizer
    from trainables.landscape import (
        clamp_running_variances,
        displaced,
        evaluate_state,
        filter_normalized_direction,
        interpolate,
        recompute_bn_statistics,
    )
    from trainables.loop import Runtime
    from trainables.models import build_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runtime = Runtime(device)
    first = job.trials[0]
    spec, data, splits = _task_data(specs[first], job.settings["train_samples"], job.settings["test_samples"], device)
    normalize = Normalizer(data.mean, data.std, device)
    model = build_model(spec.model, width=spec.width, num_classes=data.num_classes, ghost_batch=spec.ghost_batch).to(
        device
    )
    state_a = {k: v.to(device) for k, v in _load_model_state(checkpoints[first]).items()}
    bn_mode = job.settings["bn"] if job.kind == "interp1d" else None
    if job.kind == "interp1d":
        state_b = {k: v.to(device) for k, v in _load_model_state(checkpoints[job.trials[1]]).items()}
        if bn_mode == "recompute":
            bn_images = _bn_batches(data, job.settings["bn_samples"], job.settings["bn_batch"], normalize, device)
    else:
        model.load_state_dict(state_a)
        generator = torch.Generator().manual_seed(DIRECTION_SEED + spec.seed)
        directions = [filter_normalized_direction(model, generator) for _ in range(2 if job.kind == "random2d" else 1)]
    rows = []
    for x, y in points:
        clamped, bn_label = 0, None
        if job.kind == "interp1d":
            state = interpolate(state_a, state_b, x)
            if bn_mode == "recompute":
                model.load_state_dict(state)
                recompute_bn_statistics(model, bn_images)
                state, bn_label = {k: v.clone() for k, v in model.state_dict().items()}, "recomputed"
            else:
                state, clamped = clamp_running_variances(state)
                bn_label = "interpolated"
        else:
            state = displaced(state_a, directions, [x] if y is None else [x, y])
        for split_name, split in splits.items():
            loss, acc = evaluate_state(model, state, split, normalize, runtime)
            rows.append(
                {
                    "job": job.key,
                    "kind": job.kind,
                    "trial_a": first,
                    "trial_b": job.trials[1] if len(job.trials) > 1 else None,
                    "x": x,
                    "y": y,
                    "split": split_name,
                    "loss": loss,
                    "acc": acc,
                    "bn": bn_label,
                    "bn_clamped": clamped if bn_label else None,
                    "note": point_note(loss, clamped),
                }
            )
    return rows


def point_note(loss: float, clamped: int) -> str | None:
    """Why a landscape point is unusual: never a NaN, nor a clamp, without saying so."""
    notes = []
    if clamped:
        notes.append(f"{clamped} negative extrapolated BatchNorm running variances clamped to 0")
    if not math.isfinite(loss):
        notes.append("loss not finite: the network's outputs overflowed at this point")
    return "; ".join(notes) or None


def _bn_batches(data: Any, samples: int, batch: int, normalize: Any, device: Any) -> list[Any]:
    """Fixed, class-balanced training images (no augmentation) for recomputing BatchNorm statistics,
    from the dataset the chunk already loaded."""
    images = _balanced(data.train, samples, data.num_classes).to(device).images
    return [normalize(images[i : i + batch]) for i in range(0, len(images) - batch + 1, batch)] or [normalize(images)]


def run_sharpness(job: Job, specs: dict[str, str], checkpoints: dict[str, str]) -> list[dict[str, Any]]:
    """Hessian top-k eigenvalues and trace, or epsilon-sharpness, of one trial's training loss."""
    import torch

    from trainables.data import Normalizer
    from trainables.models import build_model
    from trainables.ray_train import device_name
    from trainables.sharpness import density_on_grid, eps_sharpness, hessian_spectrum, hessian_trace, top_eigenvalues

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    trial_id = job.trials[0]
    settings = job.settings
    spec, data, splits = _task_data(specs[trial_id], settings["samples"], 1, device)
    normalize = Normalizer(data.mean, data.std, device)
    model = build_model(spec.model, width=spec.width, num_classes=data.num_classes, ghost_batch=spec.ghost_batch).to(
        device
    )
    model.load_state_dict(_load_model_state(checkpoints[trial_id]))
    model.eval()  # BatchNorm uses its running statistics, as PyHessian does
    train = splits["train"]
    # A fixed batch on every device: the loss is a sample-weighted mean over batches, so the split
    # changes nothing but rounding; recorded with each value all the same.
    batch = settings["batch"]
    batches = [
        (normalize(train.images[i : i + batch]), train.labels[i : i + batch]) for i in range(0, len(train), batch)
    ]
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_fn(b: tuple[Any, Any]) -> Any:
        return torch.nn.functional.cross_entropy(model(b[0]), b[1])

    generator = torch.Generator().manual_seed(DIRECTION_SEED + spec.seed)
    n = len(train)
    base = {"trial_id": trial_id, "n_samples": n, "device": device_name(device)}
    common = {**settings, "batch": batch, "dtype": "float32", "bn": "eval mode (running statistics)"}
    if job.kind == "hessian_density":
        quadrature = hessian_spectrum(
            loss_fn, batches, params, iterations=settings["iterations"], runs=settings["runs"], generator=generator
        )
        grid, density = density_on_grid(quadrature, bins=settings["bins"], sigma_squared=settings["sigma_squared"])
        recorded = json.dumps(
            {
                **common,
                "n_samples": n,
                "device": base["device"],
                "nodes": quadrature.nodes,
                "weights": quadrature.weights,
                "algorithm": "stochastic Lanczos quadrature (Ghorbani et al. 2019), full "
                "reorthogonalization, Rademacher starts, Gaussian smoothing",
            }
        )
        return [
            {"trial_id": trial_id, "eigenvalue": float(x), "density": float(y), "settings": recorded}
            for x, y in zip(grid, density)
        ]
    if job.kind == "hessian":
        # PyHessian's stopping rule: relative change below 1e-3, at most 100 iterations.
        eig = top_eigenvalues(loss_fn, batches, params, k=settings["top_k"], tolerance=1e-3, generator=generator)
        rows = [
            {
                **base,
                "measure": f"hessian_eig{i + 1}",
                "value": value,
                "settings": json.dumps(
                    {
                        **common,
                        "iterations": it,
                        "converged": ok,
                        "algorithm": "power iteration with deflation on Hessian-vector "
                        "products; k-th largest in magnitude",
                    }
                ),
            }
            for i, (value, it, ok) in enumerate(zip(eig.values, eig.iterations, eig.converged))
        ]
        if settings["trace"]:
            trace = hessian_trace(
                loss_fn,
                batches,
                params,
                rel_error=settings["trace_rel_error"],
                max_samples=settings["trace_max_draws"],
                generator=generator,
            )
            if not trace.converged:
                print(
                    f"measure: {trial_id} Hessian trace stopped at {trace.samples} draws with standard error "
                    f"{trace.std_error / abs(trace.value):.1%} of the value (asked "
                    f"{settings['trace_rel_error']:.1%}); raise measure.hessian.trace_max_draws",
                    file=sys.stderr,
                )
            rows.append(
                {
                    **base,
                    "measure": "hessian_trace",
                    "value": trace.value,
                    "ci_low": trace.value - 1.96 * trace.std_error,
                    "ci_high": trace.value + 1.96 * trace.std_error,
                    "settings": json.dumps(
                        {
                            **common,
                            "std_error": trace.std_error,
                            "hutchinson_samples": trace.samples,
                            "converged": trace.converged,
                            "interval": "95% normal, mean +- 1.96 standard errors",
                            "algorithm": "Hutchinson, Rademacher vectors",
                        }
                    ),
                }
            )
        return rows
    result = eps_sharpness(
        loss_fn,
        batches,
        params,
        settings["eps"],
        method=settings["method"],
        max_steps=settings["max_steps"],
    )
    return [
        {
            **base,
            "measure": "eps_sharpness",
            "value": result.value,
            "settings": json.dumps(
                {
                    **common,
                    "algorithm": result.method,
                    "steps": result.steps,
                    "converged": result.converged,
                    "loss": result.loss,
                    "max_loss": result.max_loss,
                }
            ),
        }
    ]


def run_trajectory(job: Job, specs: dict[str, str], checkpoints: dict[str, str], folder: str) -> list[dict[str, Any]]:
    """One trial's trajectory on its PCA plane (Li et al. 2018, section 7): the path and the loss surface."""
    import torch

    from trainables.checkpoint import list_snapshots, load_snapshot
    from trainables.data import Normalizer
    from trainables.landscape import direction_entries, displaced, evaluate_state, trajectory_pca
    from trainables.loop import Runtime
    from trainables.models import build_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runtime = Runtime(device)
    trial_id = job.trials[0]
    settings = job.settings
    found = list_snapshots(folder)
    if len(found) < 4:
        raise RuntimeError(
            f"{trial_id}: {len(found)} trajectory snapshots in {folder}; the plane needs 4 "
            "(train with measure.trajectory set from the start)"
        )
    spec, data, splits = _task_data(specs[trial_id], settings["train_samples"], 0, device)
    normalize = Normalizer(data.mean, data.std, device)
    model = build_model(spec.model, width=spec.width, num_classes=data.num_classes, ghost_batch=spec.ghost_batch).to(
        device
    )
    final = {k: v.to(device) for k, v in _load_model_state(checkpoints[trial_id]).items()}
    snapshots = {epoch: load_snapshot(path) for epoch, path in found.items()}
    path_epochs = [e for e in snapshots if not all(torch.equal(snapshots[e][k], final[k].cpu()) for k in final)]
    pca = trajectory_pca(
        [{k: v.to(device) for k, v in snapshots[e].items()} for e in path_epochs], final, direction_entries(model)
    )
    base = {
        "trial_id": trial_id,
        "explained_x": pca.explained[0],
        "explained_y": pca.explained[1],
        "split": "train",
        "settings": json.dumps(
            {
                **settings,
                "snapshots": sorted(snapshots),
                "algorithm": "PCA of theta_i - theta_final over conv and linear weights (Li et al. 2018)",
            }
        ),
    }
    rows = []
    coordinates = dict(zip(path_epochs, pca.coordinates))
    for epoch in sorted(snapshots):
        x, y = coordinates.get(epoch, (0.0, 0.0))
        loss, acc = evaluate_state(
            model, {k: v.to(device) for k, v in snapshots[epoch].items()}, splits["train"], normalize, runtime
        )
        rows.append({**base, "kind": "path", "epoch": epoch, "x": x, "y": y, "loss": loss, "acc": acc})
    xs, ys = [c[0] for c in pca.coordinates] + [0.0], [c[1] for c in pca.coordinates] + [0.0]
    axes = []
    for values in (xs, ys):
        span = max(values) - min(values)
        axes.append(
            np.linspace(
                min(values) - settings["margin"] * span, max(values) + settings["margin"] * span, settings["points"]
            ).tolist()
        )
    for y in axes[1]:
        for x in axes[0]:
            loss, acc = evaluate_state(
                model, displaced(final, pca.directions, [x, y]), splits["train"], normalize, runtime
            )
            rows.append({**base, "kind": "surface", "epoch": None, "x": x, "y": y, "loss": loss, "acc": acc})
    return rows


def noise_scale_rows(
    trials: pd.DataFrame, epochs: pd.DataFrame, config: NoiseScaleConfig
) -> dict[str, list[dict[str, Any]]]:
    """B_simple per trial from the units (probe pairs or blocks of steps) of its last epochs.

    The value is a ratio of averages over all units, finite-population corrected for batches drawn
    without replacement from the training set, with a bootstrap interval over the units.
    """
    from trainables.sharpness import noise_scale_interval

    out = {}
    for trial_id in trials.loc[trials["status"] == "completed", "trial_id"]:
        rows = epochs[(epochs["trial_id"] == trial_id) & epochs["noise_small_grad_sq"].notna()]
        rows = rows.sort_values("epoch").tail(config.last_epochs)
        if rows.empty:
            continue
        units = []
        for _, row in rows.iterrows():
            recorded = row.get("noise_units")
            if isinstance(recorded, str):
                units += json.loads(recorded)
            else:  # epochs written before units were kept: the epoch's means are one unit
                units.append([row["noise_small_grad_sq"], row["noise_big_grad_sq"], 1.0])
        population = rows["noise_population"].iloc[-1] if "noise_population" in rows else None
        population = None if population is None or pd.isna(population) else int(population)
        small, big = float(rows["noise_small_batch"].iloc[-1]), float(rows["noise_big_batch"].iloc[-1])
        estimate = noise_scale_interval(
            units, small, big, population, confidence=config.confidence, seed=DIRECTION_SEED
        )
        settings = {
            "epochs": rows["epoch"].tolist(),
            "small_batch": small,
            "big_batch": big,
            "population": population,
            "sampling": "without replacement" if population else "with replacement (not recorded)",
            "algorithm": "two-batch-size estimator, ratio of averages, percentile bootstrap over units",
            **estimate,
        }
        out[trial_id] = [
            {
                "trial_id": trial_id,
                "measure": "noise_scale",
                "value": estimate["b_simple"],
                "n_samples": estimate["units"],
                "ci_low": estimate["ci_low"],
                "ci_high": estimate["ci_high"],
                "settings": json.dumps(settings),
                "device": None,
            }
        ]
    return out


# ---------------------------------------------------------------------------------------------
# The driver


@dataclass(frozen=True)
class MeasureOutcome:
    written: int  # jobs whose results were written
    failed: dict[str, str]  # job key -> the last line of its error (recorded in `measure_errors/`)

    def summary(self) -> str:
        line = f"measure: {self.written} jobs written"
        if self.failed:
            line += f"; {len(self.failed)} failed ({', '.join(sorted(self.failed))}), see results/measure_errors/"
        return line


def error_line(error: BaseException) -> str:
    """The last non-empty line of an error (a Ray task error carries the remote traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def run_measurements(study: StudyConfig, store: ResultsStore) -> MeasureOutcome:
    """Run every missing measurement job of the study. A job that fails is recorded in
    `measure_errors/` with its error's last line and the others go on; a job that later succeeds
    drops its error record."""
    import ray

    trials = store.read("trials")
    if "phase" in trials:  # a search's samples only choose the winners: the finals are measured
        trials = trials[trials["phase"] != "sample"]
    written = 0
    if study.measure.noise_scale is not None:
        done = store.keys("sharpness")
        for trial_id, rows in noise_scale_rows(trials, store.read("epochs"), study.measure.noise_scale).items():
            if f"noise_scale-{trial_id}" not in done:
                store.write("sharpness", f"noise_scale-{trial_id}", rows)
                written += 1
    existing = {table: store.keys(table) for table in ("sharpness", "landscape", "spectrum", "trajectory")}
    jobs = [j for j in plan_jobs(study, trials) if j.key not in existing[j.table]]
    jobs = [j for j in jobs if j.table != "trajectory" or trajectory_ready(store, j.trials[0])]
    if not jobs:
        return MeasureOutcome(written, {})
    specs = dict(zip(trials["trial_id"], trials["spec"]))
    checkpoints = dict(zip(trials["trial_id"], trials["checkpoint"]))
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    workers = gpus or max(1, int(resources.get("CPU", 1)))
    options = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    chunk_task = ray.remote(run_chunk).options(**options)
    sharpness_task = ray.remote(run_sharpness).options(**options)
    trajectory_task = ray.remote(run_trajectory).options(**options)
    snapshots = trajectory_folder(store)
    pending: dict[Any, Job] = {}
    parts: dict[str, list[Any]] = {}
    remaining: dict[str, int] = {}
    for job in jobs:
        if job.table == "landscape":
            chunks = chunk(job_points(job), workers)
            for points in chunks:
                pending[chunk_task.remote(job, specs, checkpoints, points)] = job
            remaining[job.key] = len(chunks)
        elif job.table == "trajectory":
            pending[trajectory_task.remote(job, specs, checkpoints, f"{snapshots}/{job.trials[0]}")] = job
            remaining[job.key] = 1
        else:
            pending[sharpness_task.remote(job, specs, checkpoints)] = job
            remaining[job.key] = 1
        parts[job.key] = []
    total, started = len(pending), time.perf_counter()
    failed: dict[str, str] = {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(ready[0])
        try:
            part = ray.get(ready[0])
        except Exception as error:  # noqa: BLE001 - any task error: record it, let the other jobs finish
            if job.key not in failed:
                failed[job.key] = error_line(error)
                store.write("measure_errors", job.key, [job_error_row(job, failed[job.key])])
                print(f"\nmeasure: {job.key} failed: {failed[job.key]}", file=sys.stderr)
            part = []
        parts[job.key] += part
        remaining[job.key] -= 1
        if remaining[job.key] == 0 and job.key not in failed:
            rows = sorted(parts.pop(job.key), key=lambda r: (r.get("split", ""), r.get("y") or 0, r.get("x", 0)))
            store.write(job.table, job.key, rows)
            store.remove("measure_errors", job.key)  # an error of an earlier run no longer holds
            written += 1
        done, elapsed = total - len(pending), time.perf_counter() - started
        print(
            f"\rmeasure: {done}/{total} tasks [{'#' * (20 * done // total):<20}] {duration(elapsed)} elapsed, "
            f"{eta(done, total, elapsed)}",
            end="\n" if not pending else "",
            flush=True,
        )
    return MeasureOutcome(written, failed)


def job_error_row(job: Job, error: str) -> dict[str, Any]:
    import datetime as dt

    return {
        "job": job.key,
        "table": job.table,
        "kind": job.kind,
        "trials": ",".join(job.trials),
        "error": error,
        "failed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def trajectory_folder(store: ResultsStore) -> str:
    """<storage>/<study>/trajectory, beside the results folder: one folder of weight snapshots per trial."""
    results_root = store.uri if "://" in store.uri else store.root
    return join(results_root.rstrip("/").rsplit("/", 1)[0], "trajectory")


def trajectory_ready(store: ResultsStore, trial_id: str) -> bool:
    from trainables.checkpoint import list_snapshots

    found = len(list_snapshots(f"{trajectory_folder(store)}/{trial_id}"))
    if found < 4:
        print(
            f"measure: {trial_id}: {found} trajectory snapshots (the plane needs 4); trajectory skipped - "
            "it was trained without measure.trajectory, or with too few epochs",
            file=sys.stderr,
        )
    return found >= 4


def study_from_store(store: ResultsStore) -> StudyConfig:
    trials = store.read("trials")
    config = json.loads(trials["config"].dropna().iloc[-1])
    study = build(StudyConfig, config, "")
    validate(study, store.root)
    return study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m study.measure", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results_dir", help="a study's results folder, <storage>/<name>/results (path or URI)")
    parser.add_argument(
        "--address",
        help="join this Ray cluster; auto = the one running here (default: RAY_ADDRESS, else a fresh local one)",
    )
    args = parser.parse_args(argv)
    try:
        store = ResultsStore(args.results_dir)
        if not store.is_store():
            raise ConfigError(
                f"{args.results_dir} is not a results store (no trials/ or epochs/ Parquet files); "
                "pass the results folder that run_sweep printed"
            )
        study = study_from_store(store)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    connect_ray(args.address)
    outcome = run_measurements(study, store)
    print(f"{outcome.summary()} (results in {store.root})")
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
