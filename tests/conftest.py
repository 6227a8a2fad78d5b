from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest-xdist each test process gets one of the cores: torch's own threads (and those of the Ray
    # workers and drivers it starts, which inherit this) would otherwise oversubscribe them, and OpenMP
    # threads that spin-wait on a taken core made a test take 2-3x as long beside another as alone.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


# Tiers are derived from what a test uses, so a new test cannot land in the wrong one by a forgotten mark.
SLOW_FIXTURES = {"ray_session", "shared_cifar"}  # a local Ray; the 60,000 real images
CLUSTER_FIXTURES = {"s3_environment", "mlflow_server"}  # servers of their own


@pytest.hookimpl(tryfirst=True)  # before -m selects by them
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if CLUSTER_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.cluster)
        if item.get_closest_marker("cluster") or SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
        if "shared_cifar" in item.fixturenames:  # one pytest-xdist worker decodes the images once, into its cache
            item.add_marker(pytest.mark.xdist_group("cifar"))
    # Slow tests first (in file order): under pytest-xdist the short ones then fill in at the end, instead of
    # one long test running there alone.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Decoded-image caches go to a per-session folder unless the caller chose one (CI may reuse it).
    os.environ.setdefault("LBSTUDY_CACHE", str(tmp_path_factory.mktemp("lbstudy-cache")))


@pytest.fixture
def shared_cifar() -> Path:
    if not SHARED_CIFAR.exists():
        pytest.skip(f"real CIFAR-10 JPEGs not found at {SHARED_CIFAR} (see shared/data/README.md)")
    return SHARED_CIFAR


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (2 CPUs, like this machine); yields its address."""
    import ray

    from study.cluster import TRIAL_RESOURCE, TRIAL_RESOURCE_AMOUNT

    # address="local": without it ray.init joins the cluster recorded in Ray's temp folder, which a test in
    # another pytest-xdist process may have just written (and then refuses num_cpus): CI met it.
    ray.init(
        address="local",
        num_cpus=2,
        resources={TRIAL_RESOURCE: TRIAL_RESOURCE_AMOUNT},
        include_dashboard=False,
        log_to_driver=False,
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def tiny_study_yaml(name: str, storage: Path, **extra: str) -> str:
    """A study that trains in seconds: synthetic data, VGG9 at width 0.25, small subsets."""
    text = f"""
name: {name}
storage: {storage}
data: {{dataset: synthetic, train_subset: 512, test_subset: 256}}
model: {{width: 0.25}}
optim: {{base_lr: 0.05}}
schedule: {{epochs: 2, decay: constant, milestones: []}}
sweep: {{batch_size: [64, 128], mixup_alpha: [0.0, 1.0]}}
eval: {{train_eval_samples: 256}}
"""
    for key, value in extra.items():
        text += f"{key}: {value}\n"
    return text


def smallest(study_yaml: str) -> str:
    """A tiny study at the smallest model and data that still exercise every path (VGG9 width 0.125, 256
    training and 128 test images): for tests whose claims hold whatever the model learns and however fast
    it trains (not the ones that kill a run part-way or compare what a model learned)."""
    for old, new in (
        ("model: {width: 0.25}", "model: {width: 0.125}"),
        ("train_subset: 512, test_subset: 256", "train_subset: 256, test_subset: 128"),
        ("train_eval_samples: 256", "train_eval_samples: 128"),
    ):
        assert study_yaml.count(old) == 1, old
        study_yaml = study_yaml.replace(old, new)
    return study_yaml


def sweep_without_ray(
    root: Path, batch_sizes: str, tmp_path: Path, dataset: str = "imagefolder"
) -> subprocess.CompletedProcess:
    """run_sweep on a study of `dataset` at `root`, pointed at a Ray that does not exist: data mistakes
    must be answered (exit 2, one line) before Ray is ever reached."""
    study_file = tmp_path / "s.yaml"
    study_file.write_text(
        f"name: x\nstorage: {tmp_path}\ndata: {{dataset: {dataset}, root: {root}}}\n"
        f"schedule: {{epochs: 1, decay: constant}}\nsweep: {{batch_size: [{batch_sizes}]}}\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "study.run_sweep", str(study_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_ADDRESS": "127.0.0.1:1"},
    )


def chromium_flags(tmp_path: Path) -> list[str]:
    """Headless Chromium with networking off (a report must open offline); skips where it is absent."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (.ci/run installs Debian's chromium package)")
    return [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--proxy-server=127.0.0.1:9",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--virtual-time-budget=10000",
    ]


def copy_code(destination: Path) -> Path:
    """A copy of the three packages, for tests that change the code the way a contributor would."""
    import shutil

    for package in ("study", "trainables", "analysis"):
        shutil.copytree(ROOT / package, destination / package, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def run_copy(copy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python ARGS` on a copy of the code, with a fresh local Ray that runs the copy (no RAY_ADDRESS)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(copy)
    return subprocess.run([sys.executable, *args], cwd=copy, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def s3_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real S3 API on loopback (moto's standalone server) with one bucket, `lbstudy`; yields the
    environment that points pyarrow (so every driver, Ray worker and reader started with it) at it, as a
    MinIO or Ceph user would set it: AWS_ENDPOINT_URL, credentials and a region. The server's request log
    (every method and object path) is at LBSTUDY_S3_REQUEST_LOG."""
    import socket
    import time

    import pyarrow.fs as pafs

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("s3") / "requests.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "the S3 server did not start"
                time.sleep(0.2)
        env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "lbstudy-test",
            "AWS_SECRET_ACCESS_KEY": "lbstudy-test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "LBSTUDY_S3_REQUEST_LOG": str(log),
        }
        pafs.S3FileSystem(
            endpoint_override=f"127.0.0.1:{port}",
            scheme="http",
            access_key=env["AWS_ACCESS_KEY_ID"],
            secret_key=env["AWS_SECRET_ACCESS_KEY"],
            region="us-east-1",
            allow_bucket_creation=True,
        ).create_dir("lbstudy")
        yield env
    finally:
        server.terminate()
        server.wait(timeout=10)


RAY_TOKEN = secrets.token_hex(32)  # the test clusters' own token (Ray's token authentication)


def cluster_env() -> dict[str, str]:
    """The environment of a test cluster's processes and drivers: its token, no RAY_ADDRESS."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": RAY_TOKEN}


def stop_cluster(processes: list[subprocess.Popen], temp: str) -> None:
    """End a test cluster started with `ray start --block`: those processes, then anything left of it (its
    processes name its temp folder), never another Ray on this machine."""
    import signal

    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and temp.encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            continue


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_head(port: int, temp: str, cpus: int, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A test cluster's head (`ray start --head --block` on 127.0.0.1, the trial resource, no dashboard),
    its processes all naming `temp` (short: Ray's socket paths must stay under 108 bytes)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--node-ip-address=127.0.0.1"]
        + [f"--port={port}", f"--num-cpus={cpus}", '--resources={"lbstudy_trial": 10000}', f"--temp-dir={temp}"]
        + ["--include-dashboard=false", *extra, "--block"],
        env=env or cluster_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def alive_node_ids(address: str) -> list[str]:
    """The test cluster's alive nodes, asked by a fresh driver (empty while it cannot connect)."""
    script = (
        f"import ray, json; ray.init(address={address!r}, logging_level='ERROR', log_to_driver=False); "
        "print('ANSWER', json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=cluster_env())
    answers = [line[len("ANSWER ") :] for line in out.stdout.splitlines() if line.startswith("ANSWER ")]
    return json.loads(answers[-1]) if out.returncode == 0 and answers else []
