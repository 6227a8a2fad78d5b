"""Node loss: a real two-node cluster (`ray start`), a two-worker trial with one worker on each node; the
worker node's Ray is killed mid-trial, a replacement node joins (as an autoscaler would start one), and
the trial continues from its last checkpoint: every epoch row once, the study completed."""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, alive_node_ids, cluster_env, free_port, start_head, stop_cluster, tiny_study_yaml

pytestmark = pytest.mark.cluster


def node(address: str) -> tuple[subprocess.Popen, str]:
    """A worker node of one CPU with a temp folder of its own: every process of it names that folder, so
    it can be killed whole (its raylet, its workers) while the rest of the cluster runs on."""
    temp = tempfile.mkdtemp(prefix="lbn", dir="/tmp")
    process = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", f"--address={address}", "--node-ip-address=127.0.0.1"]
        + ["--num-cpus=1", f"--temp-dir={temp}", "--block"],
        env=cluster_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, temp


def test_a_multi_worker_trial_survives_the_loss_of_a_node(tmp_path: Path) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    temp = tempfile.mkdtemp(prefix="lbr", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    head = start_head(port, temp, 1)
    workers: list[tuple[subprocess.Popen, str]] = []
    try:
        deadline = time.time() + 120
        while len(alive_node_ids(address)) < 1:
            assert head.poll() is None and time.time() < deadline, "the head did not start"
            time.sleep(1)
        workers.append(node(address))
        while len(alive_node_ids(address)) < 2:
            assert time.time() < deadline, "the worker node did not join"
            time.sleep(1)
        study_file = tmp_path / "loss.yaml"
        study_file.write_text(
            tiny_study_yaml("loss", tmp_path)
            .replace("epochs: 2,", "epochs: 4,")
            .replace("[64, 128], mixup_alpha: [0.0, 1.0]", "[64], mixup_alpha: [0.0]")
            + "resources: {workers: 2, max_failures: 3}\n"
        )
        driver = subprocess.Popen(
            [sys.executable, "-m", "study.run_sweep", str(study_file), "--address", address],
            cwd=ROOT,
            env={**cluster_env(), "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        epochs_dir = tmp_path / "loss" / "results" / "epochs"

        def epochs_done() -> int:
            files = list(epochs_dir.glob("*.parquet")) if epochs_dir.exists() else []
            return int(pd.read_parquet(files[0])["epoch"].max()) if files else 0

        while epochs_done() < 1:
            assert driver.poll() is None, driver.stdout.read()[-3000:]
            assert time.time() < deadline + 300, "the trial did not train"
            time.sleep(0.5)
        lost_at = epochs_done()
        lost, lost_temp = workers[0]
        lost.kill()  # SIGKILL: nothing of the node says goodbye
        stop_cluster([lost], lost_temp)  # then its raylet and workers
        workers.append(node(address))  # the replacement an autoscaler would launch
        output = driver.communicate(timeout=600)[0]
        assert driver.returncode == 0, output[-3000:]
        trials = pd.read_parquet(tmp_path / "loss" / "results" / "trials")
        epochs = pd.read_parquet(epochs_dir)
        assert trials["status"].tolist() == ["completed"] and trials["epochs_completed"].tolist() == [4]
        assert sorted(epochs["epoch"]) == [1, 2, 3, 4] and lost_at < 4  # no gap, no duplicate
        # One worker on each node (one CPU each): the lost node held one, so the trial's workers were started
        # again across the head and the replacement, from the last checkpoint.
        assert trials["hosts"].tolist() == [2]
    finally:
        for process, node_temp in workers:
            stop_cluster([process], node_temp)
        stop_cluster([head], temp)
