"""Landscape benchmark: 1-D interpolation points per second with 1 and with 2 (or more) Ray workers.

    python -m study.bench_landscape [--width 0.25] [--samples 10000] [--points 8] [--workers 1 2]

Two VGG9 states (random initializations: the cost of a point does not depend on the weights) are
interpolated on `--samples` training images; each worker count runs the same points split into that
many Ray tasks, each loading the data and both checkpoints once. Prints points/s and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import ray
import torch

from study.bench_data import SHARED_CIFAR
from study.measures import Job, TaskInputs, run_job
from study.measures.common import job_points
from study.measures.interpolate import InterpolateConfig, interpolation_settings
from study.plan import plan_one
from trainables.checkpoint import save_checkpoint
from trainables.models import build_model


def points_per_second(
    width: float, samples: int, points: int, worker_counts: list[int], model: str = "vgg9"
) -> dict[int, float]:
    """Interpolation points/s for each worker count, on the connected Ray (one CPU or GPU per worker)."""
    on_gpu = torch.cuda.is_available()
    if SHARED_CIFAR.exists():
        dataset, root = "imagefolder", str(SHARED_CIFAR)
    else:
        dataset, root, samples = "synthetic", "", min(samples, 4096)
    spec = plan_one(
        "bench",
        data={"dataset": dataset, "root": root},
        model={"arch": model, "width": width},
        sweep={"batch_size": 128, "mixup_alpha": 0.0},
    )
    task = ray.remote(run_job).options(**({"num_gpus": 1} if on_gpu else {"num_cpus": 1}))
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = {}
        for i, name in enumerate(("a", "b")):
            torch.manual_seed(i)
            state = {"model": build_model(model, width=width).state_dict()}
            checkpoints[name] = save_checkpoint(state, str(Path(tmp) / name), epoch=1)
        inputs = TaskInputs({name: json.dumps(spec.to_dict()) for name in checkpoints}, checkpoints)
        job = Job(
            "landscape",
            "interp1d",
            ("a", "b"),
            interpolation_settings(
                InterpolateConfig(range=(-0.5, 1.5), points=points, train_samples=samples, test_samples=0)
            ),
            "interpolate",
        )
        all_points = job_points(job)
        # Warm as many worker processes as the largest count will use (imports, decode cache): a cold
        # worker's first task would charge its start-up to the points.
        ray.get([task.remote(job, inputs, all_points[:1]) for _ in range(max(worker_counts))])
        rates = {}
        for workers in worker_counts:
            started = time.perf_counter()
            chunks = [all_points[i::workers] for i in range(workers)]
            rows = ray.get([task.remote(job, inputs, c) for c in chunks])
            assert sum(len(r) for r in rows) == len(all_points)
            rates[workers] = len(all_points) / (time.perf_counter() - started)
    return rates


def main(argv: list[str] | None = None) -> None:
    on_gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=1.0 if on_gpu else 0.25, help="VGG9 width multiplier")
    parser.add_argument("--samples", type=int, default=10_000, help="training images evaluated per point")
    parser.add_argument("--points", type=int, default=8, help="interpolation points")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to compare")
    args = parser.parse_args(argv)
    ray.init(
        address="local",  # a fresh one: a cluster `ray start` left here would refuse num_cpus
        num_cpus=max(args.workers) if not on_gpu else None,
        include_dashboard=False,
        log_to_driver=False,
    )
    rates = points_per_second(args.width, args.samples, args.points, args.workers)
    print(
        f"1-D interpolation: vgg9 width {args.width:g}, {args.samples} images per point, {args.points} points; "
        f"device {'cuda' if on_gpu else 'cpu'}, torch {torch.__version__}, ray {ray.__version__}, "
        f"{os.cpu_count()} CPUs, one run each"
    )
    for workers, rate in rates.items():
        print(f"  {workers} worker(s): {rate:.3f} points/s")
    base = rates[args.workers[0]]
    for workers in args.workers[1:]:
        print(f"  speed-up {workers} vs {args.workers[0]}: {rates[workers] / base:.2f}x")
    ray.shutdown()


if __name__ == "__main__":
    main()
