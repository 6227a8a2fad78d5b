"""`python -m study.status`: where a study stands, from its store alone, with Ray and torch unimportable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, tiny_study_yaml

from analysis.store import ResultsStore, epoch_schema, trial_schema
from study.checks import record_identity
from study.config import parse_study
from study.lock import study_lock
from study.plan import plan_study
from trainables.trial import EpochMetrics, TrialSpec

BLOCKED_STATUS = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "ray"):
            raise ImportError(f"study.status imported {name}")
sys.meta_path.insert(0, Block())
sys.argv = ["study.status", *sys.argv[1:]]
runpy.run_module("study.status", run_name="__main__")
"""


def status(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_STATUS, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )


def epoch_rows(trial_id: str, epochs: int) -> list[dict]:
    return [
        {"trial_id": trial_id, "epoch": e, "step": 10 * e, "train_loss": 1.0, "epoch_time_s": 4.0, "diverged": False}
        for e in range(1, epochs + 1)
    ]


@pytest.mark.slow
def test_status_of_a_study_in_progress_and_of_a_finished_one(tmp_path: Path) -> None:
    text = tiny_study_yaml("watched", tmp_path) + "measure:\n  eps_sharpness: {samples: 64}\n"
    study = parse_study(text)
    record_identity(study)
    planned = plan_study(study)  # 4 trials of 2 epochs
    store = ResultsStore.for_study(str(tmp_path), "watched")
    done, failed, running = planned[0], planned[1], planned[2]
    for spec, status_ in ((done, "completed"), (failed, "failed")):
        store.write("epochs", spec.trial_id, epoch_rows(spec.trial_id, 2), epoch_schema(EpochMetrics))
        store.write("trials", spec.trial_id, [{**spec.to_dict(), "status": status_}], trial_schema(TrialSpec))
    store.write("epochs", running.trial_id, epoch_rows(running.trial_id, 1), epoch_schema(EpochMetrics))
    started = time.perf_counter()
    command = "python -m study.run_sweep /studies/watched.yaml --resume"
    with study_lock(str(tmp_path / "watched"), command):  # a driver runs it: this process
        answer = status(str(tmp_path / "watched"))
    assert answer.returncode == 0, answer.stderr[-2000:]
    out = answer.stdout
    assert "study watched: 4 trials: 1 completed, 1 failed; 1 running, 1 not started; 5/8 epochs" in out
    assert f"running {running.trial_id}: epoch 1/2, " in out and " ago" in out
    assert "measurements: 0 written, 0 failed, 1 to do" in out  # eps-sharpness of the completed trial
    assert f"driver: pid {os.getpid()} on " in out and re.search(r"last heard \d+ s ago", out), out
    assert "ETA ~12 s of training (3 epochs at 4.0 s each as recorded, 1 at a time" in out
    assert time.perf_counter() - started < 30
    # The driver let go: nothing runs, whatever the files say; when it stopped and how to go on instead.
    stopped = status(str(tmp_path / "watched")).stdout
    assert "1 interrupted, 1 not started; 5/8 epochs" in stopped and "ETA" not in stopped
    assert f"(stopped: pid {os.getpid()} on " in stopped and stopped.strip().endswith(f"continue with: {command}")
    # The results folder works as well; a folder that is not a study is one line, exit 2.
    assert status(str(tmp_path / "watched" / "results")).stdout.splitlines()[0] == stopped.splitlines()[0]
    wrong = status(str(tmp_path))
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "no study results there" in wrong.stderr
