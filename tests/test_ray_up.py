"""`ray up` for real: three hosts on this machine (network, PID, mount and UTS namespaces, each with its
own OpenSSH server; see hosts.py), the shipped cluster-onprem.yaml filled in with their addresses, then
what its header tells a user to do: `ray up` (file mounts, setup and start commands over SSH, the head's
autoscaler starting the workers), `ray dashboard` (the SSH tunnel), `ray job submit --working-dir .` of
a tiny study, and `ray down`. The trials must run on the worker hosts and say so in their provenance;
storage only one host sees (each host's own /tmp) is refused before training, with one line."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, free_port, tiny_study_yaml
from hosts import Host, Hosts, HostsUnavailable, missing_tools

pytestmark = pytest.mark.cluster

RAY = [sys.executable, "-m", "ray.scripts.scripts"]


def copy_project(destination: Path) -> Path:
    """The project as a user's checkout holds it (the files git tracks), for `ray up` to sync."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    return destination


def filled_in(project: Path, cluster_name: str, ips: list[str], key: Path) -> dict:
    """cluster-onprem.yaml with its CHANGE fields filled in for the test hosts. Two more flags: the head
    offers no CPUs, so that every trial must run on a worker host (what the test proves), and each
    worker offers one, so that two trials take one host each on this 2-core machine."""
    config = yaml.safe_load((project / "cluster-onprem.yaml").read_text())
    config["cluster_name"] = cluster_name
    config["provider"] = {**config["provider"], "head_ip": ips[0], "worker_ips": ips[1:]}
    config["auth"] = {"ssh_user": "root", "ssh_private_key": str(key)}
    config["head_start_ray_commands"][-1] += " --num-cpus=0"
    config["worker_start_ray_commands"][-1] += " --num-cpus=1"
    return config


def ray_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    # The user's shell: no test cluster's address or token (this cluster runs without token auth).
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("RAY_AUTH")}
    return subprocess.run([*RAY, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def alive_hosts(dashboard: str, cwd: Path) -> dict[str, str]:
    """node id -> host name of the cluster's alive nodes, through the dashboard (Ray's state API)."""
    listed = ray_cli("list", "nodes", "--address", dashboard, "--format", "json", cwd=cwd, timeout=60)
    if listed.returncode != 0:
        return {}
    start = listed.stdout.find("[")
    nodes = json.loads(listed.stdout[start:]) if start >= 0 else []
    return {node["node_id"]: node["node_name"] for node in nodes if node["state"] == "ALIVE"}


def test_ray_up_runs_a_submitted_study_on_the_worker_hosts() -> None:
    missing = missing_tools()
    assert not missing, f"install {' '.join(missing)} (Debian: openssh-server, rsync, iproute2, util-linux)"
    base = Path(tempfile.mkdtemp(prefix="lbup", dir="/var/tmp"))  # not /tmp: every host has its own /tmp
    project = copy_project(base / "project")
    shared = base / "shared"  # one folder every host sees at the same path, as an NFS mount would be
    shared.mkdir()
    (project / "studies" / "onprem-test.yaml").write_text(
        tiny_study_yaml("onprem", shared).replace("mixup_alpha: [0.0, 1.0]", "mixup_alpha: [0.0]")
    )
    (project / "studies" / "onprem-private.yaml").write_text(tiny_study_yaml("private", Path("/tmp/lbstudy")))
    cluster_name = f"lbup-{os.getpid()}"
    ray_up_files = set(Path("/tmp").glob("ray-config-*")) | set(Path("/tmp").glob("ray_ssh_*"))
    hosts_context = Hosts(base / "hosts", 3)
    try:
        try:
            hosts = hosts_context.start()
        except HostsUnavailable as error:
            pytest.skip(str(error))
        run_study_on(hosts, hosts_context.key, project, shared, cluster_name, base / "cluster.yaml")
    finally:
        hosts_context.close()
        shutil.rmtree(base, ignore_errors=True)
        # What `ray up` left on "the user's machine": its cluster state, config cache and SSH control folders.
        leftovers = set(Path("/tmp").glob(f"cluster-{cluster_name}.*")) | set(Path("/tmp").glob("ray-config-*"))
        for leftover in (leftovers | set(Path("/tmp").glob("ray_ssh_*"))) - ray_up_files:
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


def run_study_on(hosts: list[Host], key: Path, project: Path, shared: Path, name: str, cluster_file: Path) -> None:
    head, workers = hosts[0], hosts[1:]
    cluster_file.write_text(yaml.safe_dump(filled_in(project, name, [host.ip for host in hosts], key)))
    timings: dict[str, float] = {}

    started = time.time()
    up = ray_cli("up", "-y", "--no-config-cache", str(cluster_file), cwd=project)
    timings["ray up (head)"] = time.time() - started
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    # The file mounts and setup commands ran on the head: the project synced and installed in its home.
    assert (head.home / "lbstudy" / "pyproject.toml").exists()
    assert list((head.home / "lbstudy-venv" / "lib").glob("python*/site-packages/*lbstudy*"))  # into the venv

    port = free_port()
    dashboard = f"http://127.0.0.1:{port}"
    tunnel = subprocess.Popen(  # `ray dashboard`: an SSH tunnel to the head's loopback-only dashboard
        [*RAY, "dashboard", "--no-config-cache", "-p", str(port), str(cluster_file)],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while len(nodes := alive_hosts(dashboard, project)) < len(hosts):
            assert time.time() < deadline, f"the workers did not join: {nodes}"
            time.sleep(2)
        timings["every worker joined"] = time.time() - started
        assert sorted(nodes.values()) == sorted(host.ip for host in hosts)  # the head's autoscaler started them

        submit = ["job", "submit", "--address", dashboard, "--working-dir", ".", "--", "python", "-m"]
        refused = ray_cli(*submit, "study.run_sweep", "studies/onprem-private.yaml", cwd=project)
        # Each host has its own /tmp, as servers have their own disks: refused before training, in one line.
        assert refused.returncode != 0, refused.stdout[-3000:]
        said = [line for line in refused.stdout.splitlines() if "is not shared by every node" in line]
        # (`ray job submit` shows the job's log, then its last lines again with the failure.)
        assert len(set(said)) == 1 and "Traceback" not in refused.stdout, refused.stdout[-3000:]
        assert "(NFS), or an object store" in said[0] and all(host.name in said[0] for host in workers)
        assert head.exec("test -e /tmp/lbstudy/private/results/epochs").returncode == 1  # nothing trained

        started = time.time()
        job = ray_cli(*submit, "study.run_sweep", "studies/onprem-test.yaml", cwd=project)
        timings["ray job submit (the study)"] = time.time() - started
        assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
        assert "nodes: lbhost" in job.stdout
    finally:
        os.killpg(tunnel.pid, signal.SIGKILL)
        tunnel.wait(timeout=30)

    trials = pd.read_parquet(shared / "onprem" / "results" / "trials")
    epochs = pd.read_parquet(shared / "onprem" / "results" / "epochs")
    assert sorted(trials["status"]) == ["completed", "completed"]
    assert len(epochs) == 4 and not epochs.duplicated(["trial_id", "epoch"]).any()
    assert set(trials["host"]) <= {host.name for host in workers}, trials["host"].tolist()  # the head has no CPU
    worker_ids = {node_id for node_id, ip in nodes.items() if ip != head.ip}
    assert set(trials["node_id"]) <= worker_ids, (trials["node_id"].tolist(), nodes)
    assert (shared / "onprem" / "report.html").stat().st_size > 10_000

    started = time.time()
    down = ray_cli("down", "-y", str(cluster_file), cwd=project)
    timings["ray down"] = time.time() - started
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    assert head.exec("pgrep -f raylet").returncode == 1  # the head's Ray is stopped

    print("\nwhat ran where (the ray up test):")
    print(trials[["trial_id", "host", "node_id", "wall_time_s"]].to_string(index=False))
    print("nodes: " + ", ".join(f"{ip} {node_id[:8]}" for node_id, ip in sorted(nodes.items(), key=lambda n: n[1])))
    print("wall times: " + ", ".join(f"{step} {seconds:.0f} s" for step, seconds in timings.items()))
