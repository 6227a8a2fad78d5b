"""Joining or starting the Ray cluster that sweeps and measurements run on (shared by both CLIs)."""

from __future__ import annotations

import logging
import os

# Multi-worker trials hold this custom resource instead of a CPU, so that the Tune trial itself never
# takes a core its TorchTrainer's workers need (which deadlocks a small machine silently).
TRIAL_RESOURCE = "lbstudy_trial"
TRIAL_RESOURCE_AMOUNT = 10_000


def connect_ray(address: str | None, verbose: bool = False) -> str | None:
    """Join `address` (or RAY_ADDRESS; `auto` = the cluster running on this machine), else start a fresh
    local Ray with the trial resource; returns the dashboard URL.

    Without an address Ray itself would join whatever cluster `ray start` left running here (its
    address is recorded in Ray's temp folder) and then refuse our resources; a study asks for
    that explicitly with `--address auto`.
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        context = None
    elif address:
        context = ray.init(address=address, logging_level=logging.INFO if verbose else logging.WARNING)
    else:
        # Ray 2.60 serves gRPC on every interface (it resolves 127.0.0.1 to the reachable address), so
        # what guards a local study is Ray's token authentication, on by default: nothing here turns it
        # off. The dashboard listens on 127.0.0.1 (ray.init's default). Ray's WARNING that it is on
        # (before every run) is left out: the dashboard line says it, and how to get the token.
        quiet_token_notice()
        context = ray.init(
            address="local",
            resources={TRIAL_RESOURCE: TRIAL_RESOURCE_AMOUNT},
            logging_level=logging.INFO if verbose else logging.WARNING,
        )
    url = getattr(context, "dashboard_url", None) if context is not None else None
    return f"http://{url}" if url and not url.startswith("http") else url


class _TokenNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled for this Ray cluster" not in record.getMessage()


def quiet_token_notice() -> None:
    """Drop Ray's 'Token authentication is enabled' WARNING (only that one: a token missing or refused
    still says so). Setting Ray's auth-mode variable to "token" instead would change how Ray starts: its
    client reads the mode once, so a local start then failed with InvalidAuthToken."""
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _TokenNotice) for f in logger.filters):
        logger.addFilter(_TokenNotice())


def alive_nodes() -> list[dict[str, float]]:
    import ray

    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def nodes_not_seeing(folder: str, timeout_s: float = 120.0) -> list[str]:
    """The alive nodes that do not see `folder` as this driver does ('host (node id)' each): a marker is
    written here and looked for by a task pinned to every node. Empty on a one-node cluster."""
    import uuid
    from pathlib import Path

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return []
    marker = Path(folder) / f".lbstudy-shared-{uuid.uuid4().hex}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("")
    try:
        probe = ray.remote(num_cpus=0)(sees)  # a free task: it runs on a node whose CPUs are all taken
        refs = [
            probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(str(marker))
            for node in nodes
        ]
        answers = ray.get(refs, timeout=timeout_s)
    finally:
        marker.unlink(missing_ok=True)
    return [f"{host} ({node[:8]})" for node, (seen, host) in zip(nodes, answers) if not seen]


def sees(path: str) -> tuple[bool, str]:
    """Whether this node has `path`, and its host name."""
    import socket

    return os.path.exists(path), socket.gethostname()


def autoscaling() -> bool:
    """Whether an autoscaler may add nodes to the connected cluster (`ray up` of cluster.yaml, Ray's fake
    multi-node cluster): its monitor reports configured node types. A Ray without one (ray.init, a plain
    `ray start --head`) has a read-only monitor that names each node after its id."""
    import json

    from ray._private.state import state

    # Through the same GCS accessor as ray.nodes() (ray.experimental.internal_kv's client is unset in a
    # process whose Ray was shut down and started again by Tune).
    raw = state._connect_and_get_accessor().get_internal_kv(b"", b"__autoscaling_status")
    report = (json.loads(raw) if raw else {}).get("autoscaler_report") or {}
    return any(not str(kind).startswith("node_") for kind in (report.get("node_type_mapping") or {}).values())


def autoscaled_node_types(config: str = "~/ray_bootstrap_config.yaml") -> dict[str, dict[str, float]]:
    """node type -> resources, from the autoscaling config `ray up` leaves on the head (where the driver of
    `ray job submit` runs); empty elsewhere. What nodes may come: GPU ones make `use_gpu: auto` mean GPUs."""
    import yaml

    path = os.path.expanduser(config)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        types = (yaml.safe_load(f) or {}).get("available_node_types") or {}
    return {name: dict(kind.get("resources") or {}) for name, kind in types.items()}
