"""Thin Ray adapters around the pure loop: the Ray Train worker function and the Ray Tune trial.

A trial's config is a `TrialRun` (trainables/trial.py), as a plain dict in Tune's param space. The trial writes its
own results: after every epoch rank 0 saves a checkpoint under `<study_root>/checkpoints/<trial_id>/`
and rewrites `results/epochs/<trial_id>.parquet` with the whole history; at the end it writes
`results/trials/<trial_id>.parquet`. Started again (a retried worker group, a resumed study) it
continues from its newest readable checkpoint. What it reports to Ray is for the console only.
One-worker trials train inside the Tune trial itself (no TorchTrainer start-up cost); multi-worker
trials build a TorchTrainer (Ray Train V2).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import ray
import ray.train
import ray.train.torch
import ray.tune
import torch

from analysis.remote import retrying
from analysis.store import (
    ResultsStore,
    StaleRun,
    check_generation,
    disk_full,
    epoch_schema,
    join,
    trial_row,
    trial_schema,
)
from trainables.checkpoint import epoch_files, latest_checkpoint, remote_wrapper, save_checkpoint, save_snapshot
from trainables.data import DataError
from trainables.loop import Runtime, TrialOutcome, train
from trainables.trial import EpochMetrics, Status, TrialRun, TrialSpec

remote_wrapper(retrying)  # a trial's checkpoints and snapshots ride out a storage outage like its rows

STORAGE_FULL = "storage full"  # a trial's error when its storage has no room for its rows
TRIALS_SCHEMA = trial_schema(TrialSpec)
EPOCHS_SCHEMA = epoch_schema(EpochMetrics)
CHECKPOINTS_KEPT = 2  # the newest and one more, in case the newest cannot be read


@dataclass(frozen=True)
class Reporter:
    """Where a worker's progress reports go: `ray.train` inside a Ray Train worker (to the controller,
    and from rank 0 on to Tune), `ray.tune` inside a one-worker Tune trial (straight to Tune)."""

    api: ModuleType

    def report(self, metrics: dict[str, Any]) -> None:
        self.api.report(metrics)


@dataclass(frozen=True)
class TrialFiles:
    """Where one trial writes: its checkpoints, trajectory snapshots and its rows of the results store."""

    spec: TrialSpec
    study_root: str
    generation: int = 0  # of the driver run: every write first checks no newer run has begun (0: unfenced)

    @property
    def checkpoints(self) -> str:
        return join(self.study_root, "checkpoints", self.spec.trial_id)

    @property
    def snapshots(self) -> str:
        return join(self.study_root, "trajectory", self.spec.trial_id)

    @property
    def store(self) -> ResultsStore:
        return ResultsStore(join(self.study_root, "results"))

    def write_epoch(self, history: list[EpochMetrics], state: dict[str, Any]) -> list[EpochMetrics]:
        """Checkpoint the latest epoch, then rewrite the trial's epochs file; returns the history with each
        row's checkpoint path while that checkpoint is kept."""
        check_generation(self.study_root, self.generation)
        epoch = history[-1].epoch
        if self.spec.trajectory_every and (epoch % self.spec.trajectory_every == 0 or epoch == self.spec.epochs):
            save_snapshot(state["model"], self.snapshots, epoch)
        kept = {m.epoch for m in history[-CHECKPOINTS_KEPT:]}
        path = save_checkpoint({**state, "history": [m.to_dict() for m in history]}, self.checkpoints, epoch)
        history = [
            dataclasses.replace(m, checkpoint=path if m.epoch == epoch else (m.checkpoint if m.epoch in kept else None))
            for m in history
        ]
        rows = [{"trial_id": self.spec.trial_id, **m.to_dict()} for m in history]
        check_generation(self.study_root, self.generation)  # again: a newer run may have begun meanwhile
        self.store.write("epochs", self.spec.trial_id, rows, EPOCHS_SCHEMA)
        return history

    def restore_epochs(self, epochs: int) -> bool:
        """Rewrite the trial's epochs file from the history its newest readable checkpoint holds, each row
        with its checkpoint while kept; False (nothing written) when no checkpoint holds `epochs` epochs."""
        found = latest_checkpoint(self.checkpoints)
        history = [EpochMetrics.from_dict(m) for m in found[1]["history"]] if found else []
        if len(history) < epochs:
            return False
        kept = epoch_files(self.checkpoints)
        rows = [{"trial_id": self.spec.trial_id, **m.to_dict(), "checkpoint": kept.get(m.epoch)} for m in history]
        self.store.write("epochs", self.spec.trial_id, rows, EPOCHS_SCHEMA)
        return True

    def write_trial(self, history: list[EpochMetrics], outcome: dict[str, Any], provenance: dict[str, Any]) -> None:
        row = trial_row(self.spec.to_dict(), [m.to_dict() for m in history], outcome, provenance)
        check_generation(self.study_root, self.generation)
        self.store.write("trials", self.spec.trial_id, [row], TRIALS_SCHEMA)


def worker_provenance(driver: dict[str, Any]) -> dict[str, Any]:
    """The driver's (git revision, study config) with this process's versions."""
    return {
        **driver,
        "torch_version": torch.__version__,
        "ray_version": ray.__version__,
        "python_version": sys.version.split()[0],
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {os.cpu_count()} cores)"


def run_worker(run: TrialRun, runtime: Runtime, reporter: Reporter, *, hosts: int = 1) -> TrialOutcome:
    """Train one trial on this worker, continuing from its newest readable checkpoint if there is one."""
    spec = run.spec
    files = TrialFiles(spec, run.study_root, run.generation)
    found = latest_checkpoint(files.checkpoints)
    resume = found[1] if found else None
    # The history a checkpoint holds was saved before its own path was known: each epoch's checkpoint is
    # put back from the files kept, so that a trial resumed at its end still names its last checkpoint.
    kept = epoch_files(files.checkpoints) if resume else {}
    history = [
        dataclasses.replace(EpochMetrics.from_dict(m), checkpoint=kept.get(m["epoch"]))
        for m in (resume["history"] if resume else [])
    ]

    def on_epoch(metrics: EpochMetrics, make_state: Any) -> None:
        nonlocal history
        history.append(metrics)
        if runtime.rank == 0:
            history = files.write_epoch(history, make_state())
        reporter.report({"kind": "epoch", **metrics.to_dict()})

    error = history[-1].diverged_reason if history and history[-1].diverged else None
    if error:  # never resume NaNs
        outcome = TrialOutcome(Status.DIVERGED, len(history), history[-1].step)
    else:
        try:
            outcome = train(spec, runtime, resume=resume, on_epoch=on_epoch)
        except DataError as problem:  # missing or corrupt data: retrying the trial cannot help, so it ends here
            outcome, error = TrialOutcome(Status.FAILED, len(history), history[-1].step if history else 0), str(problem)
        except StaleRun:  # its driver run has ended and a newer one began: it stops, writing nothing
            raise
        except Exception as problem:
            # An error the training code raises comes back on a retry (the same record, data and code): the
            # trial ends here, failed, with the error's line and its traceback in the row. What a retry can
            # fix never reaches this line: a lost worker or node ends the process, and Ray restarts it.
            # Multi-worker trials re-raise: the other ranks wait inside a collective that only Ray Train's
            # restart of the whole group ends.
            if runtime.world_size > 1:
                raise
            outcome = TrialOutcome(Status.FAILED, len(history), history[-1].step if history else 0)
            if disk_full(problem):  # no row can be written either: the driver says it, in one line
                error = f"{STORAGE_FULL} ({str(problem).splitlines()[0]})"
            else:
                frames = "".join(traceback.format_tb(problem.__traceback__)[-8:])  # where, without the message again
                error = f"{type(problem).__name__}: {problem}"[:1500]  # the summary shows its first line
                error += f"\nTraceback (most recent call last, the innermost 8 frames):\n{frames}"
        if outcome.status == Status.DIVERGED:
            error = history[-1].diverged_reason
    started_at = float(run.started_at or time.time())

    def since_start(at: float | None) -> float | None:
        return at - started_at if at else None

    startup_s = since_start(outcome.first_step_at)
    if runtime.rank == 0 and not (error and error.startswith(STORAGE_FULL)):
        files.write_trial(
            history,
            {
                "status": outcome.status,
                "error": error,
                "steps": outcome.steps,
                "startup_s": startup_s,
                "workers_ready_s": since_start(run.worker_started_at),
                "data_ready_s": since_start(outcome.ready_at),
                "wall_time_s": since_start(time.time()),
                "device": device_name(runtime.device),
                "host": socket.gethostname(),
                "node_id": ray.get_runtime_context().get_node_id() if ray.is_initialized() else None,
                "hosts": hosts,
                "checkpoint": history[-1].checkpoint if history else None,
            },
            worker_provenance(run.provenance),
        )
    final = {"kind": "final", "status": outcome.status, "epochs": len(history), "startup_s": startup_s, "error": error}
    reporter.report(final)
    return outcome


def train_worker(config: dict[str, Any]) -> None:
    """The Ray Train worker function; torch.distributed is already initialized by TorchTrainer."""
    # Placement, worker start and process group are done.
    run = dataclasses.replace(TrialRun.from_dict(config), worker_started_at=time.time())
    context = ray.train.get_context()
    torch.set_num_threads(max(1, int(run.cpus_per_worker)))
    runtime = Runtime(ray.train.torch.get_device(), context.get_world_rank(), context.get_world_size())
    # Count distinct Ray nodes (not IPs: simulated nodes on one machine share an IP).
    node_ids: list[str | None] = [None] * runtime.world_size
    torch.distributed.all_gather_object(node_ids, ray.get_runtime_context().get_node_id())
    run_worker(run, runtime, Reporter(ray.train), hosts=len(set(node_ids)))


def tune_trial(config: dict[str, Any]) -> None:
    """The Tune function trainable: one trial, in this process or through a TorchTrainer."""
    run = dataclasses.replace(TrialRun.from_dict(config.get("trial", config)), started_at=time.time())  # Tune nests
    spec = run.spec
    if spec.workers == 1:
        torch.set_num_threads(max(1, int(run.cpus_per_worker)))
        use_cuda = run.use_gpu and torch.cuda.is_available()
        run_worker(run, Runtime(torch.device("cuda" if use_cuda else "cpu")), Reporter(ray.tune))
        return
    from ray.tune.integration.ray_train import TuneReportCallback

    trainer = ray.train.torch.TorchTrainer(
        train_worker,
        train_loop_config=run.to_dict(),
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec.workers,
            use_gpu=run.use_gpu,
            resources_per_worker={
                "CPU": run.cpus_per_worker,
                **({"GPU": run.gpus_per_worker} if run.use_gpu else {}),
            },
        ),
        run_config=ray.train.RunConfig(
            # Deterministic per trial: one folder of Ray Train state per trial, however often it is
            # started (the trial itself continues from its own checkpoints).
            name=spec.trial_id,
            storage_path=join(run.study_root, "train"),
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=run.max_failures, controller_failure_limit=0),
        ),
    )
    trainer.fit()
