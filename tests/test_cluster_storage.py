"""Local storage on a cluster must be the same folder on every node: a real two-node Ray cluster started
with `ray start`, whose worker node runs in its own mount namespace with a private, empty tmpfs over the
study's storage folder (as a second server without the NFS mount would see it). The study is refused
before any training, with one line; a folder both nodes see passes the same check."""

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT, alive_node_ids, cluster_env, free_port, start_head, stop_cluster, tiny_study_yaml

pytestmark = pytest.mark.slow


def test_local_storage_a_node_cannot_see_is_refused_before_training(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed: no mount namespace for the second node")
    hidden, shared = tmp_path / "hidden", tmp_path / "shared"
    hidden.mkdir()
    shared.mkdir()
    temp = tempfile.mkdtemp(prefix="lbr", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    port = free_port()
    address = f"127.0.0.1:{port}"
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]
    head = start_head(port, temp, 1)
    nodes = [head]
    try:
        deadline = time.time() + 120
        while len(alive_node_ids(address)) < 1:
            assert head.poll() is None and time.time() < deadline, "the head did not start"
            time.sleep(1)
        join = " ".join(
            [*ray_cli, "start", f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1"]
            + [f"--temp-dir={temp}", "--block"]
        )
        worker = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                f"mount -t tmpfs tmpfs {hidden} && exec {join}",
            ],
            env=cluster_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        nodes.append(worker)
        while len(alive_node_ids(address)) < 2:
            assert worker.poll() is None and time.time() < deadline, "the second node did not join"
            time.sleep(1)

        study_file = tmp_path / "scattered.yaml"
        study_file.write_text(tiny_study_yaml("scattered", hidden))
        refused = subprocess.run(
            [sys.executable, "-m", "study.run_sweep", str(study_file), "--address", address],
            cwd=ROOT,
            env=cluster_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
        line = refused.stderr.strip().splitlines()[-1]
        assert "is not shared by every node" in line and "(NFS), or an object store" in line, line
        assert not (hidden / "scattered" / "results" / "epochs").exists()  # refused before any training

        code = (
            f"import ray; ray.init(address={address!r}); from study.cluster import nodes_not_seeing; "
            f"print(nodes_not_seeing({str(hidden)!r}), nodes_not_seeing({str(shared)!r}))"
        )
        both = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=cluster_env(), capture_output=True, text=True, timeout=120
        )
        missing, seen = both.stdout.strip().splitlines()[-1].split("] [")
        assert missing.count("(") == 1 and seen == "]", both.stdout[-2000:] + both.stderr[-2000:]
    finally:
        stop_cluster(nodes, temp)
        shutil.rmtree(temp, ignore_errors=True)
