"""Nodes that come and go: on a cluster whose autoscaler adds nodes (cluster.yaml's head holds no CPU),
trials that fit nowhere yet wait for the nodes it launches instead of being refused, `use_gpu: auto`
counts the GPU nodes it may launch, and idle nodes leave. The end-to-end test runs Ray's own fake
multi-node autoscaler (CPU-only node types shaped like cluster.yaml's)."""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, alive_node_ids, cluster_env, free_port, start_head, stop_cluster, tiny_study_yaml

from study.checks import SweepError
from study.cluster import autoscaled_node_types
from study.config import parse_study
from study.sweep import AUTOSCALED_CONCURRENCY, check_fits, resolve_use_gpu


def test_an_autoscaling_cluster_waits_for_its_nodes_and_auto_counts_the_gpus_they_bring() -> None:
    coming = autoscaled_node_types(str(ROOT / "cluster.yaml"))  # what `ray up` leaves on the head
    assert coming["gpu_worker"]["GPU"] == 1 and coming["head"]["CPU"] == 0
    study = parse_study("name: t")
    head = [{"CPU": 0.0, "lbstudy_trial": 10000.0}]
    assert resolve_use_gpu(study, head, list(coming.values())) and not resolve_use_gpu(study, head)
    assert check_fits(study, True, head, scales=True) == AUTOSCALED_CONCURRENCY
    limited = parse_study("name: t\nresources: {max_concurrent_trials: 3}")
    assert check_fits(limited, True, head, scales=True) == 3
    with pytest.raises(SweepError, match="add nodes"):  # a cluster that cannot grow is still told at once
        check_fits(study, True, head)
    assert autoscaled_node_types("/nonexistent/bootstrap.yaml") == {}


@pytest.mark.cluster
def test_trials_on_a_fake_autoscaling_cluster_start_worker_nodes_that_leave_when_idle(tmp_path: Path) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    config = {
        "cluster_name": "lbstudy-fake",
        "max_workers": 2,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.1,  # 6 s: an idle worker node leaves soon after the trials end
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": address,
        },
        "auth": {"ssh_user": "ubuntu"},
        # cluster.yaml's shape on CPUs: a head without CPUs that holds the trial resource, a worker pool
        # that starts at 0.
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "cpu_worker": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2},
        },
        "head_node_type": "ray.head.default",
        **{k: [] for k in ("cluster_synced_files", "rsync_exclude", "rsync_filter", "initialization_commands")},
        **{k: [] for k in ("setup_commands", "head_setup_commands", "worker_setup_commands")},
        **{k: [] for k in ("head_start_ray_commands", "worker_start_ray_commands")},
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
    }
    config_file = tmp_path / "fake-cluster.json"
    config_file.write_text(json.dumps(config))
    temp = tempfile.mkdtemp(prefix="lbr", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    head = start_head(
        port,
        temp,
        0,
        f"--autoscaling-config={config_file}",
        env={**cluster_env(), "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"},
    )
    try:
        deadline = time.time() + 120
        while len(alive_node_ids(address)) != 1:
            assert head.poll() is None and time.time() < deadline, "the head did not start"
            time.sleep(1)
        (head_id,) = alive_node_ids(address)
        study_file = tmp_path / "scaled.yaml"
        study_file.write_text(
            tiny_study_yaml("scaled", tmp_path)
            .replace("mixup_alpha: [0.0, 1.0]", "mixup_alpha: [0.0]")
            .replace("epochs: 2,", "epochs: 1,")
            + "resources: {use_gpu: false}\n"
        )
        run = subprocess.run(
            [sys.executable, "-m", "study.run_sweep", str(study_file), "--address", address],
            cwd=ROOT,
            env=cluster_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "waiting for the autoscaler" in run.stdout
        trials = pd.read_parquet(tmp_path / "scaled" / "results" / "trials")
        assert len(trials) == 2 and set(trials["status"]) == {"completed"}
        assert head_id not in set(trials["node_id"])  # the head holds no CPU: launched nodes trained them
        # Idle worker nodes leave: the cluster is back to its head alone (the autoscaler's doing, polled).
        while alive_node_ids(address) != [head_id]:
            assert time.time() < deadline + 300, f"worker nodes did not leave: {alive_node_ids(address)}"
            time.sleep(2)
    finally:
        stop_cluster([head], temp)
