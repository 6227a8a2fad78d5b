"""cluster.yaml (AWS) and cluster-onprem.yaml (your own servers) are valid for Ray's own launcher (checked
offline) and keep the dashboard private."""

import copy

import tomllib
import yaml
from conftest import ROOT


def load_cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_launcher_schema_offline() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(load_cluster()))  # fills AWS defaults from Ray's package, no cloud
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"


def test_cluster_has_an_autoscaling_gpu_worker_type() -> None:
    config = load_cluster()
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    gpu = [t for t in workers if t.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu and gpu[0]["min_workers"] == 0 and gpu[0]["max_workers"] >= 1
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("lbstudy_trial", 0) > 0  # multi-worker trials hold it instead of a CPU


def test_every_node_installs_the_project_with_its_pinned_torch() -> None:
    config = load_cluster()
    commands = " ".join(config["setup_commands"])
    assert "pip install -e ~/lbstudy" in commands and config["file_mounts"]["~/lbstudy"] == "."
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_cap = next(d for d in dependencies if d.startswith("torch>")).split("<=")[1]
    assert f"torch=={torch_cap}" in commands


def test_dashboard_is_not_exposed_publicly() -> None:
    config = load_cluster()
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in (ROOT / "cluster.yaml").read_text()
    # Every node in one group the user creates (SSH from their CIDR, all ports only inside the group): Ray's
    # own default group would open SSH to 0.0.0.0/0. The placeholder fails `ray up` until it is set.
    for node in config["available_node_types"].values():
        assert node["node_config"]["SecurityGroupIds"] == ["sg-CHANGE-ME"]
    clusters = (ROOT / "docs" / "clusters.md").read_text()
    assert "--port 22 --cidr YOUR.ADDRESS/32" in clusters and "--source-group lbstudy" in clusters


def load_onprem() -> dict:
    return yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text())


def test_onprem_cluster_passes_rays_launcher_schema_with_every_worker_joining() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load_onprem()
    prepared = prepare_config(copy.deepcopy(config))  # Ray's local provider: one node type, the given IPs
    validate_config(prepared)
    assert prepared["provider"]["type"] == "local" and config["provider"]["head_ip"]
    (node_type,) = prepared["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == len(config["provider"]["worker_ips"]) == 2
    assert config["auth"]["ssh_user"] and config["auth"]["ssh_private_key"]


def test_onprem_servers_install_the_same_project_and_keep_the_dashboard_private() -> None:
    onprem, aws = load_onprem(), load_cluster()
    assert onprem["file_mounts"] == aws["file_mounts"]
    # The same pip installs, on-prem into the venv (current Debian and Ubuntu refuse --user installs).
    installs = [c for c in onprem["setup_commands"] if " -m pip install " in c]
    assert [c.replace("~/lbstudy-venv/bin/python ", "python3 ") for c in installs] == aws["setup_commands"]
    head = " ".join(onprem["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and '"lbstudy_trial": 10000' in head
    assert "0.0.0.0" not in (ROOT / "cluster-onprem.yaml").read_text()
    for page in ("README.md", "docs/clusters.md"):
        text = (ROOT / page).read_text()
        assert "ray up cluster-onprem.yaml" in text and "ray down cluster-onprem.yaml" in text, page
