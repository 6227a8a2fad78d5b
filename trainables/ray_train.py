"""Thin Ray adapters around the pure loop: the Ray Train worker function and the Ray Tune trial.

A trial's config is a plain dict (Tune's param space): {"spec": TrialSpec.to_dict(), "use_gpu",
"cpus_per_worker", "max_failures", "train_storage", "resume_from", ...}. Every epoch the trial reports
{"kind": "epoch", ...metrics} and, at the end, one {"kind": "final", ...} with the whole epoch
history; the driver turns these into Parquet rows. One-worker trials train inside the Tune trial
itself (no TorchTrainer start-up cost); multi-worker trials build a TorchTrainer (Ray Train V2).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

import ray
import ray.train
import ray.train.torch
import ray.tune
import torch

from trainables.checkpoint import load_state, save_snapshot, save_state
from trainables.loop import Runtime, TrialOutcome, TrialSpec, train


@dataclass(frozen=True)
class Reporter:
    """Where a worker's reports go: `ray.train` inside a Ray Train worker (to the controller, and
    from rank 0 on to Tune), `ray.tune` inside a one-worker Tune trial (straight to Tune). The two
    modules offer the same report / Checkpoint / get_checkpoint calls."""

    api: ModuleType

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        checkpoint = self.api.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        self.api.report(metrics, checkpoint=checkpoint)

    def checkpoint(self) -> ray.train.Checkpoint | None:
        return self.api.get_checkpoint()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {os.cpu_count()} cores)"


def run_worker(config: dict[str, Any], runtime: Runtime, reporter: Reporter, *, hosts: int = 1) -> TrialOutcome:
    """Train one trial on this worker, resuming from the latest reported checkpoint if there is one."""
    spec = TrialSpec.from_dict(config["spec"])
    resume = None
    checkpoint = reporter.checkpoint()
    if checkpoint is None and config.get("resume_from"):  # a resumed study: where this trial left off
        checkpoint = ray.train.Checkpoint(config["resume_from"])
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume = load_state(directory)
    history: list[dict[str, Any]] = list(resume["history"]) if resume else []

    def on_epoch(metrics: dict[str, Any], make_state: Callable[[], dict[str, Any]]) -> None:
        history.append(metrics)
        if runtime.rank != 0:
            reporter.report({"kind": "epoch", **metrics}, None)
            return
        state = make_state()
        state["history"] = history
        epoch = int(metrics["epoch"])
        if (
            config.get("trajectory_storage")
            and spec.trajectory_every
            and (epoch % spec.trajectory_every == 0 or epoch == spec.epochs)
        ):
            save_snapshot(state["model"], f"{config['trajectory_storage']}/{spec.trial_id}", epoch)
        with tempfile.TemporaryDirectory(prefix="lbstudy-ckpt-") as directory:
            save_state(state, directory)
            reporter.report({"kind": "epoch", **metrics}, directory)  # uploads before returning

    if history and history[-1]["diverged"]:
        outcome = TrialOutcome("diverged", len(history), int(resume["step"]) if resume else 0)  # never resume NaNs
    else:
        outcome = train(spec, runtime, resume=resume, on_epoch=on_epoch)
    started_at = float(config.get("started_at", time.time()))
    final = {
        "kind": "final",
        "status": outcome.status,
        "epochs_completed": outcome.epochs,
        "steps": outcome.steps,
        "startup_s": (outcome.first_step_at - started_at) if outcome.first_step_at else None,
        "train_time_s": sum(m["epoch_time_s"] for m in history),
        "device": device_name(runtime.device),
        "hosts": hosts,
        "history": json.dumps(history),
        "error": history[-1].get("diverged_reason") if history and history[-1]["diverged"] else None,
    }
    reporter.report(final, None)
    return outcome


def train_worker(config: dict[str, Any]) -> None:
    """The Ray Train worker function; torch.distributed is already initialized by TorchTrainer."""
    context = ray.train.get_context()
    torch.set_num_threads(max(1, int(config["cpus_per_worker"])))
    runtime = Runtime(ray.train.torch.get_device(), context.get_world_rank(), context.get_world_size())
    # Count distinct Ray nodes (not IPs: simulated nodes on one machine share an IP).
    node_ids: list[str | None] = [None] * runtime.world_size
    torch.distributed.all_gather_object(node_ids, ray.get_runtime_context().get_node_id())
    run_worker(config, runtime, Reporter(ray.train), hosts=len(set(node_ids)))


def tune_trial(config: dict[str, Any]) -> None:
    """The Tune function trainable: one trial, in this process or through a TorchTrainer."""
    config = {**config.get("trial", config), "started_at": time.time()}  # Tune nests grid values
    spec = config["spec"]
    if spec["workers"] == 1:
        torch.set_num_threads(max(1, int(config["cpus_per_worker"])))
        use_cuda = config["use_gpu"] and torch.cuda.is_available()
        run_worker(config, Runtime(torch.device("cuda" if use_cuda else "cpu")), Reporter(ray.tune))
        return
    from ray.tune.integration.ray_train import TuneReportCallback

    trainer = ray.train.torch.TorchTrainer(
        train_worker,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec["workers"],
            use_gpu=config["use_gpu"],
            resources_per_worker={
                "CPU": config["cpus_per_worker"],
                **({"GPU": config["gpus_per_worker"]} if config["use_gpu"] else {}),
            },
        ),
        run_config=ray.train.RunConfig(
            # Deterministic per trial: started again (a resumed study, a retried trial), the run
            # continues from its last checkpoint instead of starting over.
            name=spec["trial_id"],
            storage_path=config["train_storage"],
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=config["max_failures"], controller_failure_limit=0),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    trainer.fit()
