"""Trace benchmark: Hessian-vector products each method of the hessian job needs for its top eigenvalue and
a 2% standard error on the trace of a trained VGG9, through the measurement's own runner (the same job a
study plans), on the same model and images.

    python -m study.bench_trace [--width 0.25] [--epochs 3] [--train 4000] [--samples 500] [--rel-error 0.02]
                                [--methods hutchinson hutchpp krylov]

Trains VGG9 (batch 64, constant lr 0.05) on the shared CIFAR-10 JPEGs where they are (else on synthetic
images) on this machine, without Ray, then runs the hessian job with each trace method on the same
`--samples` training images: power iteration + Hutchinson, power iteration + Hutch++, or one Lanczos run
for both (krylov). Prints the top eigenvalue, the trace with its standard error, the products of each
part and seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from study.bench_data import SHARED_CIFAR
from study.measures import TaskInputs, run_job
from study.measures.hessian import HessianConfig
from study.measures.hessian import plan as plan_hessian
from study.plan import plan_one
from trainables.checkpoint import save_checkpoint
from trainables.loop import Runtime, train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m study.bench_trace", description=__doc__)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train", type=int, default=4000, help="training images")
    parser.add_argument("--samples", type=int, default=500, help="images the Hessian is measured on")
    parser.add_argument("--rel-error", type=float, default=0.02)
    parser.add_argument("--sketch", type=int, default=20)
    parser.add_argument("--methods", nargs="+", default=["hutchinson", "hutchpp", "krylov"])
    args = parser.parse_args(argv)
    data = {"dataset": "imagefolder", "root": str(SHARED_CIFAR)} if SHARED_CIFAR.exists() else {"dataset": "synthetic"}
    spec = plan_one(
        "bench-trace",
        data={**data, "train_subset": args.train, "test_subset": 1000},
        model={"width": args.width},
        optim={"base_lr": 0.05},
        schedule={"epochs": args.epochs, "decay": "constant", "milestones": []},
        sweep={"batch_size": 64, "mixup_alpha": 0.0},
    )
    started = time.perf_counter()
    states: list[dict] = []
    train(spec, Runtime(torch.device("cpu")), on_epoch=lambda metrics, make_state: states.append(make_state()))
    print(
        f"trained {spec.trial_id} on {data['dataset']}: {args.epochs} epochs in {time.perf_counter() - started:.0f} s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_checkpoint({**states[-1], "history": []}, str(Path(tmp) / spec.trial_id), args.epochs)
        inputs = TaskInputs({spec.trial_id: json.dumps(spec.to_dict())}, {spec.trial_id: checkpoint})
        trials = [{"trial_id": spec.trial_id}]
        for method in args.methods:
            config = HessianConfig(
                top_k=1,
                samples=args.samples,
                trace_rel_error=args.rel_error,
                trace_max_draws=5000,
                trace_method=method,
                trace_sketch=args.sketch,
            )
            (job,) = plan_hessian(None, trials, config)  # type: ignore[arg-type] - it reads nothing of the study
            began = time.perf_counter()
            rows = run_job(job, inputs, None)
            seconds = time.perf_counter() - began
            (trace,) = [r for r in rows if r["measure"] == "hessian_trace"]
            (top,) = [r for r in rows if r["measure"] == "hessian_eig1"]
            settings, eigen = json.loads(trace["settings"]), json.loads(top["settings"])
            trace_products = settings["hessian_vector_products"]
            # krylov: the eigenvalue's Lanczos steps are part of the trace's products, not more
            total = trace_products + (0 if method == "krylov" else eigen["iterations"])
            relative = settings["std_error"] / abs(trace["value"])
            print(
                f"{method:>10}: top eigenvalue {top['value']:.2f} ({eigen['iterations']} products), trace "
                f"{trace['value']:.1f} +- {settings['std_error']:.1f} ({relative:.1%}, {trace_products} products),"
                f" {total} products in all, converged {settings['converged']}, "
                f"{seconds:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
