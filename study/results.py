"""From what trials report to rows of the results store (driver side, no torch)."""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from analysis.store import EPOCH_METRICS, ResultsStore

EPOCH_COLUMNS = [name for name, _ in EPOCH_METRICS]


def provenance() -> dict[str, Any]:
    """Versions and git revision of the code that runs the study."""
    import ray
    import torch

    root = Path(__file__).resolve().parents[1]
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        revision = (revision + ("-dirty" if dirty else "")) if revision else "unknown"
    except (OSError, subprocess.SubprocessError):
        revision = "unknown"
    return {
        "git_revision": revision,
        "torch_version": torch.__version__,
        "ray_version": ray.__version__,
        "python_version": sys.version.split()[0],
    }


def epoch_rows(trial_id: str, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"trial_id": trial_id, **{k: m.get(k) for k in EPOCH_COLUMNS}} for m in history]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def trial_row(
    params: dict[str, Any],
    history: list[dict[str, Any]],
    final: dict[str, Any] | None,
    prov: dict[str, Any],
    config_json: str,
    *,
    spec_json: str | None = None,
    status: str | None = None,
    error: str | None = None,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """One `trials/` row: conditions, status, final and best metrics, the gap, timing and provenance."""
    evaluated = [m for m in history if _finite(m.get("test_acc"))]
    last = evaluated[-1] if evaluated else {}
    best = max(evaluated, key=lambda m: m["test_acc"]) if evaluated else {}
    row: dict[str, Any] = {
        **params,
        **prov,
        "config": config_json,
        "spec": spec_json,
        "checkpoint": checkpoint,
        "error": error,
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    row.update(
        {
            "status": status or (final or {}).get("status", "failed"),
            "epochs_completed": len(history),
            "steps": (final or {}).get("steps", history[-1]["step"] if history else 0),
            "final_train_loss": history[-1]["train_loss"] if history else None,
            "final_clean_train_loss": last.get("clean_train_loss"),
            "final_clean_train_acc": last.get("clean_train_acc"),
            "final_test_loss": last.get("test_loss"),
            "final_test_acc": last.get("test_acc"),
            "best_test_acc": best.get("test_acc"),
            "best_epoch": best.get("epoch"),
            "gap_acc": last["clean_train_acc"] - last["test_acc"] if last else None,
            "gap_loss": last["test_loss"] - last["clean_train_loss"] if last else None,
            "train_time_s": sum(m["epoch_time_s"] for m in history) if history else None,
            "images_per_s": _mean_rate(history),
            "mfu": _mean_mfu(history),
        }
    )
    for key in ("startup_s", "device", "hosts"):
        row[key] = (final or {}).get(key)
    return row


def _mean_mfu(history: list[dict[str, Any]]) -> float | None:
    values = [m["mfu"] for m in (history[1:] if len(history) > 1 else history) if _finite(m.get("mfu"))]
    return sum(values) / len(values) if values else None


def _mean_rate(history: list[dict[str, Any]]) -> float | None:
    # Total images over total time, skipping the first epoch when there are more (it includes warm-up).
    epochs = history[1:] if len(history) > 1 else history
    time_s = sum(m["epoch_time_s"] for m in epochs)
    return sum(m["images_per_s"] * m["epoch_time_s"] for m in epochs) / time_s if time_s > 0 else None


class TrialRecorder:
    """Keeps each trial's epochs file equal to what it reported: one row per epoch, never twice."""

    def __init__(self, store: ResultsStore):
        self.store = store
        self.history: dict[str, list[dict[str, Any]]] = {}

    def _known(self, trial_id: str) -> list[dict[str, Any]]:
        if trial_id not in self.history:
            existing = self.store.read("epochs", trial_id)
            self.history[trial_id] = existing.drop(columns="trial_id").to_dict("records")
        return self.history[trial_id]

    def epoch(self, trial_id: str, metrics: dict[str, Any]) -> None:
        # A restarted worker re-reports epochs after its checkpoint: replace, never duplicate.
        rows = [m for m in self._known(trial_id) if m["epoch"] < metrics["epoch"]]
        rows.append({k: metrics.get(k) for k in EPOCH_COLUMNS})
        self.history[trial_id] = rows
        self.store.write("epochs", trial_id, epoch_rows(trial_id, rows))

    def attach_checkpoint(self, trial_id: str, path: str) -> None:
        """Record `path` as the checkpoint of the trial's latest epoch."""
        rows = self._known(trial_id)
        if rows and rows[-1].get("checkpoint") != path:
            rows[-1] = {**rows[-1], "checkpoint": path}
            self.store.write("epochs", trial_id, epoch_rows(trial_id, rows))

    def final(
        self,
        trial_id: str,
        params: dict[str, Any],
        final: dict[str, Any],
        prov: dict[str, Any],
        config_json: str,
        spec_json: str,
        checkpoint: str | None,
    ) -> dict[str, Any]:
        # The worker's history is authoritative for the metrics; the checkpoint paths are the driver's.
        paths = {m["epoch"]: m.get("checkpoint") for m in self._known(trial_id)}
        history = [{**m, "checkpoint": paths.get(m["epoch"])} for m in json.loads(final["history"])]
        self.history[trial_id] = history
        self.store.write("epochs", trial_id, epoch_rows(trial_id, history))
        row = trial_row(
            params,
            history,
            final,
            prov,
            config_json,
            spec_json=spec_json,
            checkpoint=checkpoint,
            error=final.get("error"),  # a diverged trial's reason
        )
        self.store.write("trials", trial_id, [row])
        return row

    def failed(
        self, trial_id: str, params: dict[str, Any], prov: dict[str, Any], config_json: str, spec_json: str, error: str
    ) -> dict[str, Any]:
        row = trial_row(
            params, self._known(trial_id), None, prov, config_json, spec_json=spec_json, status="failed", error=error
        )
        self.store.write("trials", trial_id, [row])
        return row
