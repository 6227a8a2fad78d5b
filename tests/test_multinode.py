"""Several Ray nodes on one machine (ray.cluster_utils.Cluster): 2-worker trials spread over nodes."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, tiny_study_yaml

from study.cluster import TRIAL_RESOURCE

pytestmark = pytest.mark.cluster


@pytest.fixture
def two_node_cluster():
    from ray.cluster_utils import Cluster

    # Two nodes of one CPU each: a 2-worker trial fits the cluster but no single node.
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 1, "resources": {TRIAL_RESOURCE: 1000}, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_two_worker_trials_spread_over_nodes_into_one_storage(two_node_cluster, tmp_path: Path) -> None:
    study = tmp_path / "nodes.yaml"
    study.write_text(
        tiny_study_yaml("nodes", tmp_path).replace(
            "[64, 128], mixup_alpha: [0.0, 1.0]", "[64], mixup_alpha: [0.0, 1.0]"
        )
        + "resources: {workers: 2}\n"
    )
    env = {**os.environ, "RAY_ADDRESS": two_node_cluster.address}
    process = subprocess.run(
        [sys.executable, "-m", "study.run_sweep", str(study)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    results = tmp_path / "nodes" / "results"
    trials = pd.read_parquet(results / "trials")
    epochs = pd.read_parquet(results / "epochs")
    assert len(trials) == 2 and set(trials["status"]) == {"completed"}
    assert set(trials["hosts"]) == {2} and set(trials["workers"]) == {2}  # one worker on each node
    assert epochs.groupby("trial_id")["epoch"].apply(sorted).to_dict() == {t: [1, 2] for t in trials["trial_id"]}
    assert (tmp_path / "nodes" / "report.html").exists()
