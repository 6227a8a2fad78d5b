"""Experiment trackers for real: MLflow against a `mlflow server` started here on loopback (SQLite backend,
local artifact folder) and queried back through MLflow's client; W&B in offline mode, read back from the
files it writes; TensorBoard from its event files. One run per trial across a killed-and-resumed driver."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import free_port, tiny_study_yaml
from test_reliability import epochs_of, sweep_cli, wait_for
from test_tensorboard import scalars

from study.config import ConfigError, parse_study
from study.plan import plan_study
from study.tracking import EPOCH_METRICS, Tracking, offline_records, study_tracking

mlflow = pytest.importorskip("mlflow", reason="the [mlflow] extra is not installed")
wandb = pytest.importorskip("wandb", reason="the [wandb] extra is not installed")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server on loopback; yields its URI."""
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        + ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--default-artifact-root", str(folder / "art")],
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "server.log", "w"),  # noqa: SIM115 - the server's own log, read on failure
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            raise AssertionError(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield uri
    process.terminate()
    process.wait(timeout=30)


def key(item: object) -> str:
    """An item's key: W&B writes a key with a "/" (and some others) as its parts."""
    return item.key or "/".join(item.nested_key)


def wandb_runs(folder: Path) -> dict[str, dict]:
    """Every offline W&B run under `folder`, by run id: its name, group, config, history and summary,
    folded over its offline folders (one per driver run) in the order they were written."""
    runs: dict[str, dict] = {}
    for log in sorted(folder.glob("wandb/offline-run-*/run-*.wandb")):
        assert log.read_bytes().startswith(b":W&B"), log
        for record in offline_records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = runs.setdefault(record.run.run_id, {"folders": 0, "history": [], "summary": {}})
                run["folders"] += 1
                run.update(name=record.run.display_name, group=record.run.run_group, project=record.run.project)
                run["config"] = {i.key: json.loads(i.value_json) for i in record.run.config.update}
                run["tags"] = list(record.run.tags)
            elif kind == "history":
                run["history"].append({key(i): json.loads(i.value_json) for i in record.history.item})
            elif kind == "summary":
                run["summary"].update({key(i): json.loads(i.value_json) for i in record.summary.update})
    return runs


def tracked_study(tmp_path: Path, uri: str, name: str = "tracked") -> str:
    return tiny_study_yaml(name, tmp_path) + (
        f"tracking: {{mlflow: {{tracking_uri: '{uri}'}}, wandb: {{project: lbstudy-test, mode: offline}}}}\n"
    )


def mlflow_runs(uri: str, experiment: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(uri)  # search_runs asks the global one
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    return mlflow.search_runs([found.experiment_id], output_format="pandas")


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def epoch_result(e: int) -> dict:
    return {
        "kind": "epoch",
        "epoch": e,
        "train_loss": 2.0 / e,
        "test_acc": 0.1 * e,
        "lr": 0.1,
        "noise_scale": float("nan"),
    }


def test_two_driver_runs_continue_one_run_per_trial_in_mlflow_and_wandb(mlflow_server: str, tmp_path: Path) -> None:
    """The trackers as the driver calls them, for two trials over a driver run that stopped after epoch 2
    and a second that resumes: the trackers' own servers and files are read back."""
    study = parse_study(tracked_study(tmp_path, mlflow_server, "twice"))
    specs = plan_study(study)[:2]
    study_dir = str(tmp_path / "twice")
    for epochs in ((1, 2), (3, 4)):  # the first driver run, then the resumed one
        tracking = study_tracking(study, study_dir, uid="u1")
        assert [t.name for t in tracking.trackers] == ["TensorBoard", "MLflow", "W&B"]
        for e in epochs:
            for spec in specs:
                tracking.epoch(spec, epoch_result(e))
        tracking.close()
    row = {"status": "completed", "epochs_completed": 4, "final_test_acc": 0.4, "best_test_acc": 0.4, "gap_acc": 0.1}
    tracking = study_tracking(study, study_dir, uid="u1")
    for spec in specs:
        tracking.ended(spec, {**row, "device": "cpu"})
    sharpness = pd.DataFrame({"trial_id": [specs[0].trial_id], "measure": ["hessian_eig1"], "value": [12.5]})
    trials = pd.DataFrame({"trial_id": [s.trial_id for s in specs], "epochs_completed": [4, 4]})
    tracking.measured({s.trial_id: s for s in specs}, trials, sharpness)
    tracking.close()

    runs = mlflow_runs(mlflow_server, "twice")
    assert sorted(runs["tags.mlflow.runName"]) == sorted(s.trial_id for s in specs)  # one run per trial
    first = runs[runs["tags.mlflow.runName"] == specs[0].trial_id].iloc[0]
    assert first["params.batch_size"] == str(specs[0].batch_size) and first["params.peak_lr"] == str(specs[0].peak_lr)
    assert first["tags.batch_size"] == str(specs[0].batch_size)  # swept values are tags too
    assert first["tags.lbstudy.study"] == "twice" and first["status"] == "FINISHED"
    assert first["tags.status"] == "completed" and first["tags.device"] == "cpu"
    assert history(mlflow_server, first["run_id"], "train_loss") == [(1, 2.0), (2, 1.0), (3, 2 / 3), (4, 0.5)]
    assert "metrics.noise_scale" not in runs  # never measured: never logged
    assert first["metrics.final_test_acc"] == 0.4 and first["metrics.sharpness/hessian_eig1"] == 12.5

    wandb_by_id = wandb_runs(tmp_path / "twice")
    assert sorted(r["name"] for r in wandb_by_id.values()) == sorted(s.trial_id for s in specs)
    run = next(r for r in wandb_by_id.values() if r["name"] == specs[0].trial_id)
    assert run["folders"] == 3 and run["group"] == "twice" and run["project"] == "lbstudy-test"
    assert run["config"]["batch_size"] == specs[0].batch_size and f"batch_size={specs[0].batch_size}" in run["tags"]
    assert [h["epoch"] for h in run["history"]] == [1, 2, 3, 4]
    assert [h["train_loss"] for h in run["history"]] == pytest.approx([2.0, 1.0, 2 / 3, 0.5])
    assert run["summary"]["final_test_acc"] == 0.4 and run["summary"]["sharpness/hessian_eig1"] == 12.5
    assert {"train_loss", "test_acc", "lr", "noise_scale"} <= set(EPOCH_METRICS)


def test_a_tracker_that_fails_warns_once_and_the_others_go_on(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    class Broken:
        name, where, durable = "Broken", "nowhere", True

        def epoch(self, *args: object) -> None:
            raise ConnectionError("server went away\nsecond line")

    (tmp_path / "tensorboard").write_text("a file where the folder should be")  # TensorBoard cannot write
    study = parse_study(tiny_study_yaml("t", tmp_path))
    spec = plan_study(study)[0]
    tracking = Tracking([Broken(), *study_tracking(study, str(tmp_path), uid="u").trackers])
    for e in (1, 2, 3):
        tracking.epoch(spec, epoch_result(e))
    err = capsys.readouterr().err
    assert err.count("warning: Broken: not written from here on (ConnectionError: server went away)") == 1
    assert err.count("warning: TensorBoard: not written from here on") == 1 and "second line" not in err
    assert tracking.trackers == []


@pytest.mark.slow
def test_a_tracker_without_its_client_is_one_line_before_ray(tmp_path: Path) -> None:
    """The extras' check: with the client unimportable, the study file is refused and says what to install."""
    text = tiny_study_yaml("x", tmp_path) + "tracking: {wandb: {mode: offline}}\n"
    code = (
        "import sys; sys.modules['wandb'] = None\n"
        "import importlib.util; real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'wandb' else real(n, *a)\n"
        f"from study.config import parse_study; parse_study({text!r})"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert "pip install -e '.[wandb]'" in run.stderr, run.stderr[-2000:]
    with pytest.raises(ConfigError, match="tracking.wandb.project"):
        parse_study(tiny_study_yaml("x", tmp_path) + "tracking: {wandb: {project: 'team/project'}}\n")
    with pytest.raises(ConfigError, match="unknown key 'neptune'"):
        parse_study(tiny_study_yaml("x", tmp_path) + "tracking: {neptune: {}}\n")


def test_a_killed_and_resumed_sweep_is_one_run_per_trial_in_every_tracker(
    ray_session: str, mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real sweep killed (SIGKILL) part-way through its second trial, then --resume: TensorBoard, MLflow
    and W&B each hold one run per trial whose steps are its epochs 1..5, once each, and its outcome."""
    # W&B's service of this test process (an earlier test's runs) would be shared by the drivers through
    # the environment: a killed driver's open run would stay "in use" there. Each driver gets its own.
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    study_file = tmp_path / "tracked.yaml"
    study_file.write_text(
        tracked_study(tmp_path, mlflow_server)
        .replace("epochs: 2,", "epochs: 5,")
        .replace("[64, 128], mixup_alpha: [0.0, 1.0]", "[64, 128], mixup_alpha: [0.0]")
        + "resources: {max_concurrent_trials: 1}\n"
        + "measure: {hessian: {top_k: 1, samples: 64, trace: false}}\n"
    )
    results = tmp_path / "tracked" / "results"
    process = sweep_cli(study_file, ray_session)
    wait_for(
        lambda: (
            (results / "trials").exists()
            and len(list((results / "trials").glob("*.parquet"))) == 1
            and epochs_of(results)["trial_id"].nunique() == 2
            and epochs_of(results).groupby("trial_id")["epoch"].max().min() >= 2
        ),
        process,
    )
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    again = sweep_cli(study_file, ray_session, "--resume")
    output = again.communicate(timeout=600)[0]
    assert again.returncode == 0, output[-3000:]
    assert "warning:" not in output, output[-3000:]
    trial_ids = sorted(pd.read_parquet(results / "trials")["trial_id"])
    assert len(trial_ids) == 2

    board = tmp_path / "tracked" / "tensorboard"
    assert sorted(p.name for p in board.iterdir()) == trial_ids  # one TensorBoard run per trial
    for trial_id in trial_ids:
        assert [step for step, _ in scalars(board / trial_id)["train_loss"]] == [1, 2, 3, 4, 5]

    runs = mlflow_runs(mlflow_server, "tracked")
    assert sorted(runs["tags.mlflow.runName"]) == trial_ids and set(runs["status"]) == {"FINISHED"}
    for _, run in runs.iterrows():
        assert [step for step, _ in history(mlflow_server, run["run_id"], "train_loss")] == [1, 2, 3, 4, 5]
        assert run["metrics.final_test_acc"] > 0 and run["metrics.sharpness/hessian_eig1"] > 0

    for _, run in runs.iterrows():  # the epoch's rate and the trial's average are two metrics (main: one, twice)
        assert [step for step, _ in history(mlflow_server, run["run_id"], "images_per_s")] == [1, 2, 3, 4, 5]
        assert run["metrics.trial_images_per_s"] > 0

    wandb_by_id = wandb_runs(tmp_path / "tracked")
    assert sorted(r["name"] for r in wandb_by_id.values()) == trial_ids  # the resumed trial kept its run id
    for run in wandb_by_id.values():
        # W&B's service writes behind: what a SIGKILL cut is logged again by the resumed driver, which reads
        # what the killed one's folder holds, so `wandb sync` of all folders uploads each epoch once.
        assert sorted(h["epoch"] for h in run["history"]) == [1, 2, 3, 4, 5]
        assert run["summary"]["final_test_acc"] > 0 and run["summary"]["sharpness/hessian_eig1"] > 0


def test_a_tracker_down_while_the_study_ran_is_caught_up_by_resume(mlflow_server: str, tmp_path: Path) -> None:
    """Main: one warning line, then `--resume` said "nothing to do" and MLflow never got the runs."""
    from test_identity import pinned_store

    study_file = pinned_store(tmp_path)  # a finished study of 2 trials x 2 epochs
    plain = study_file.read_text()

    def resume(uri: str) -> subprocess.CompletedProcess:
        study_file.write_text(plain + f"tracking: {{mlflow: {{tracking_uri: '{uri}'}}}}\n")
        command = [sys.executable, "-m", "study.run_sweep", str(study_file), "--resume"]
        return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])

    down = resume(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert down.returncode == 0, down.stderr[-2000:]
    assert "tracking: MLflow (" in down.stdout and "was dropped: it lacks what came after" in down.stdout
    assert f"send it what it lacks with: python -m study.run_sweep {study_file} --resume" in down.stdout
    up = resume(mlflow_server)
    assert up.returncode == 0, up.stderr[-2000:]
    assert f"tracking: MLflow ({mlflow_server} " in up.stdout and "4 epochs, 2 outcomes sent" in up.stdout, up.stdout
    runs = mlflow_runs(mlflow_server, "pinned")
    assert sorted(runs["tags.mlflow.runName"]) == ["b128-a0-none-s0-224784", "b64-a0-none-s0-c58bf8"]
    for _, run in runs.iterrows():
        assert [step for step, _ in history(mlflow_server, run["run_id"], "train_loss")] == [1, 2]
        assert run["tags.status"] == "completed" and run["status"] == "FINISHED"
    again = resume(mlflow_server)
    assert "MLflow" in again.stdout and "up to date" in again.stdout.split("MLflow", 1)[1].splitlines()[0]
