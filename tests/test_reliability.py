"""Faults and mistakes, for real: killed workers and drivers, divergence, bad input, unsafe loading."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, smallest, sweep_without_ray, tiny_study_yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_status import status

from study.config import ConfigError, StudyConfig, parse_study
from study.sweep import run_study

SOURCES = [p for package in ("study", "trainables", "analysis") for p in (ROOT / package).glob("*.py")]


def wait_for(condition, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"exited early ({process.returncode}): {process.stdout.read()[-3000:]}")
        assert time.time() < deadline, "timed out"
        time.sleep(0.3)


def epochs_of(results: Path) -> pd.DataFrame:
    folder = results / "epochs"
    return (
        pd.read_parquet(folder)
        if folder.exists() and any(folder.glob("*.parquet"))
        else pd.DataFrame(columns=["trial_id", "epoch"])
    )


def sweep_cli(study_file: Path, address: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "study.run_sweep", str(study_file), *extra],
        cwd=ROOT,
        env={**os.environ, "RAY_ADDRESS": address, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_killed_train_worker_restarts_from_its_checkpoint(ray_session: str, tmp_path: Path) -> None:
    import psutil

    study_file = tmp_path / "fault.yaml"
    study_file.write_text(
        tiny_study_yaml("fault", tmp_path)
        .replace("epochs: 2,", "epochs: 6,")
        .replace("[64, 128], mixup_alpha: [0.0, 1.0]", "[64], mixup_alpha: [0.0]")
        + "resources: {workers: 2, max_failures: 2}\n"
    )
    results = tmp_path / "fault" / "results"
    process = sweep_cli(study_file, ray_session)
    wait_for(lambda: epochs_of(results)["epoch"].max() >= 2 if len(epochs_of(results)) else False, process)
    # Ray titles each actor's process after its class: find the two Train workers of this test's Ray (their
    # raylet names its session; a parallel test's Ray has workers of its own).
    import ray

    session = ray._private.worker._global_node.session_name
    workers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "ray::RayTrainWorker" in " ".join(p.info["cmdline"] or []) and session in " ".join(p.parent().cmdline())
    ]
    assert len(workers) == 2, [p.info["cmdline"] for p in workers]
    os.kill(workers[1].pid, signal.SIGKILL)  # a real signal to a real worker process
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output[-3000:]
    trials = pd.read_parquet(results / "trials")
    epochs = epochs_of(results)
    assert trials["status"].tolist() == ["completed"] and trials["epochs_completed"].tolist() == [6]
    assert sorted(epochs["epoch"]) == [1, 2, 3, 4, 5, 6]  # no gap, no duplicate


@pytest.mark.slow
def test_sigkilled_driver_resumes_with_each_row_once(ray_session: str, tmp_path: Path) -> None:
    study_file = tmp_path / "kill.yaml"
    study_file.write_text(
        tiny_study_yaml("kill", tmp_path)
        .replace("epochs: 2,", "epochs: 5,")
        .replace("mixup_alpha: [0.0, 1.0]", "mixup_alpha: [0.0]")
        + "resources: {max_concurrent_trials: 1}\n"
        + "measure: {hessian: {top_k: 1, samples: 64, trace: false}, noise_scale: {probe_pairs: 3, probe_batch: 32}}\n"
    )
    results = tmp_path / "kill" / "results"
    process = sweep_cli(study_file, ray_session)
    # Kill the driver once the first trial finished and the second is part-way (it has a checkpoint).
    wait_for(
        lambda: (
            (results / "trials").exists()
            and len(list((results / "trials").glob("*.parquet"))) == 1
            and epochs_of(results).groupby("trial_id")["epoch"].max().min() >= 2
            and epochs_of(results)["trial_id"].nunique() == 2
        ),
        process,
    )
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    finished = pd.read_parquet(results / "trials")
    assert len(finished) == 1
    done_id = finished["trial_id"][0]
    partial = epochs_of(results)
    partial_id = next(t for t in partial["trial_id"].unique() if t != done_id)
    partial_epochs = int(partial.loc[partial["trial_id"] == partial_id, "epoch"].max())
    assert partial_epochs < 5
    # Its lock names a dead process: main's study.status said "1 running ... ETA".
    after = status(str(tmp_path / "kill")).stdout
    assert "1 interrupted" in after and "ETA" not in after and "its driver died" in after, after
    assert after.strip().endswith(f"continue with: python -m study.run_sweep {study_file} --resume")
    done_mtime = (results / "epochs" / f"{done_id}.parquet").stat().st_mtime_ns

    again = sweep_cli(study_file, ray_session, "--resume")
    output = again.communicate(timeout=600)[0]
    assert again.returncode == 0, output[-3000:]
    trials = pd.read_parquet(results / "trials")
    epochs = epochs_of(results)
    sharpness = pd.read_parquet(results / "sharpness")
    assert sorted(trials["trial_id"]) == sorted({done_id, partial_id}) and set(trials["status"]) == {"completed"}
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert epochs.groupby("trial_id")["epoch"].apply(sorted).to_dict() == {
        done_id: [1, 2, 3, 4, 5],
        partial_id: [1, 2, 3, 4, 5],
    }
    assert (results / "epochs" / f"{done_id}.parquet").stat().st_mtime_ns == done_mtime  # not retrained
    # The partial trial resumed from its checkpoint: it trained only the epochs it had not finished.
    resumed = re.findall(rf"\[{re.escape(partial_id)}\] epoch (\d+)/5", output)
    assert resumed and int(resumed[0]) > 1 and len(resumed) <= 5 - partial_epochs + 1
    # ... and the resume said so before it started: one line naming the epoch it continues after.
    said = re.search(rf"  {re.escape(partial_id)}: continues after epoch (\d+)/5\n", output)
    assert said and int(said.group(1)) + 1 == int(resumed[0]) and done_id + ": continues" not in output
    # Measurements ran once: one row per trial and measure.
    assert not sharpness.duplicated(["trial_id", "measure"]).any()
    assert sharpness.groupby("measure")["trial_id"].nunique().to_dict() == {"hessian_eig1": 2, "noise_scale": 2}


@pytest.mark.slow
def test_a_failing_trial_is_recorded_as_failed_with_its_error(ray_session: str, tmp_path: Path) -> None:
    (tmp_path / "cifar" / "cifar-10-batches-py").mkdir(parents=True)  # the folder, but not its files
    study = parse_study(
        tiny_study_yaml("fails", tmp_path)
        .replace("dataset: synthetic", f"dataset: cifar10, root: {tmp_path / 'cifar'}")
        .replace("[64, 128], mixup_alpha: [0.0, 1.0]", "[64], mixup_alpha: [0.0]")
        + "resources: {max_failures: 2}\n"
    )
    started = time.perf_counter()
    result = run_study(study)
    (row,) = result.trials
    assert row["status"] == "failed" and "data_batch_1" in row["error"]
    # The trial wrote its own row (the driver's rows for crashed trials have no device) and was not retried:
    # a data error cannot succeed the second time.
    assert row["device"] and time.perf_counter() - started < 60
    assert "failed" in Path(result.report).read_text()


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit status 2, before any Ray work.

BAD_INPUTS = {
    "malformed": ("name: x\nsweep: [1, 2", "malformed YAML at line"),
    "misspelled": ("name: x\nschedule: {epohcs: 3}", "did you mean 'epochs'"),
    "wrong type": ("name: x\nmodel: {width: wide}", "model.width: expected a number"),
    "split": ("name: x\nresources: {workers: 3}\nsweep: {batch_size: [128]}", "cannot be split"),
    "missing root": (
        "name: x\ndata: {dataset: imagefolder, root: /no/such/folder}\nsweep: {batch_size: [128]}",
        "/no/such/folder does not exist",
    ),
    "resources": (
        "name: x\ndata: {dataset: synthetic}\nschedule: {epochs: 1, decay: constant}\n"
        "sweep: {batch_size: [128]}\nresources: {workers: 64}",
        "hold at most",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_status_2(name: str, ray_session: str, tmp_path: Path) -> None:
    text, fragment = BAD_INPUTS[name]
    study_file = tmp_path / "bad.yaml"
    study_file.write_text(text)
    process = subprocess.run(  # its own storage: nothing in HOME, nothing shared with a parallel test
        [sys.executable, "-m", "study.run_sweep", str(study_file), "--storage", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_ADDRESS": ray_session},
    )
    assert process.returncode == 2, process.stdout[-2000:] + process.stderr[-2000:]
    lines = process.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and fragment in lines[-1] and "Traceback" not in process.stderr
    if name == "resources":  # checked against the cluster, once the study's identity is recorded: no lock left
        assert [p.name for p in (tmp_path / "x").iterdir()] == ["study.json"]
    else:
        assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_corrupt_image_is_named_before_any_ray_work(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "test"):
        (tmp_path / "imgs" / split / "cat").mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "imgs" / split / "cat" / "ok.png")
    (tmp_path / "imgs" / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    process = sweep_without_ray(tmp_path / "imgs", "1", tmp_path)
    assert process.returncode == 2 and "broken.png" in process.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_imagefolder_batch_larger_than_the_data_is_refused_before_ray(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / "imgs" / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (32, 32)).save(tmp_path / "imgs" / split / cls / f"{i}.png")
    process = sweep_without_ray(tmp_path / "imgs", "4, 8", tmp_path)
    assert process.returncode == 2
    assert "sweep.batch_size: [8] exceed the 6 training images" in process.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_report_cli_rejects_a_folder_that_is_not_a_store(tmp_path: Path) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "analysis.report", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert process.returncode == 2 and "holds no results" in process.stderr


# The fuzzer: random YAML-shaped structures, some built from the real keys, must either load into a
# valid config or raise ConfigError. Never any other exception.
KEYS = [
    "name",
    "storage",
    "data",
    "model",
    "optim",
    "schedule",
    "sweep",
    "resources",
    "eval",
    "measure",
    "dataset",
    "root",
    "train_subset",
    "width",
    "arch",
    "base_lr",
    "epochs",
    "decay",
    "milestones",
    "warmup_epochs",
    "batch_size",
    "mixup_alpha",
    "lr_scaling",
    "seed",
    "workers",
    "use_gpu",
    "interpolate",
    "hessian",
    "pairs",
    "between",
    "points",
    "range",
    "top_k",
    "eps",
    "noise_scale",
    "every_epochs",
    "max_micro_batch",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10_000, 10_000),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.sampled_from(["cifar10", "synthetic", "vgg9", "step", "auto", "sqrt"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=8), st.booleans())
def test_fuzzed_study_files_load_or_raise_config_error(document: dict, with_name: bool) -> None:
    if with_name:
        document = {"name": "fuzz", **document}
    try:
        study = parse_study(yaml.safe_dump(document, allow_unicode=True))
    except ConfigError as error:
        assert "\n" not in str(error)
        return
    assert isinstance(study, StudyConfig)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzzed_text_loads_or_raises_config_error(text: str) -> None:
    try:
        parse_study(text)
    except ConfigError:
        pass


def test_yaml_and_checkpoints_are_loaded_safely() -> None:
    for path in SOURCES:
        source = path.read_text()
        assert not re.search(r"yaml\.(load|unsafe_load|full_load)\(", source), path
        for call in re.findall(r"torch\.load\(.*", source):
            assert "weights_only=True" in call, (path, call)


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["a-file", "/proc/lbstudy-x"])
def test_storage_that_cannot_be_written_is_one_line_before_ray_starts(tmp_path: Path, storage: str) -> None:
    """main raised FileNotFoundError / NotADirectoryError from the Tuner, after Ray had started."""
    (tmp_path / "a-file").write_text("not a folder")
    path = storage if storage.startswith("/") else str(tmp_path / storage)
    study_file = tmp_path / "study.yaml"
    study_file.write_text(tiny_study_yaml("unwritable", tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "study.run_sweep", str(study_file), "--storage", path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Ray dashboard" not in result.stdout  # refused before Ray started
    assert result.stderr.startswith("error: storage: ") and "cannot be written" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_raising_trial_is_recorded_failed_with_its_error_and_not_retried(ray_session: str, tmp_path: Path) -> None:
    """A trial that dies of something other than its data (here: a checkpoint of another model width left
    in its folder, which the trial resumes from) would meet the same error on every retry: it ends at once,
    failed, its row holding the error's line and traceback, no traceback on the console; the run says so
    and exits 1 (no trial completed)."""
    import torch

    from study.plan import plan_study
    from trainables.checkpoint import save_checkpoint
    from trainables.models import build_model

    study_file = tmp_path / "raises.yaml"
    study_file.write_text(
        tiny_study_yaml("raises", tmp_path).replace("[64, 128]", "[64]").replace("[0.0, 1.0]", "[0.0]")
        + "resources: {max_failures: 2}\n"  # retries allowed: none may happen
    )
    (trial,) = plan_study(parse_study(study_file.read_text()))
    wider = build_model("vgg9", width=0.5).state_dict()  # the study trains width 0.25
    state = {"model": wider, "optimizer": {}, "epoch": 1, "step": 8, "spec": trial.to_dict()}
    save_checkpoint(
        {**state, "torch_rng": torch.get_rng_state(), "history": []},
        str(tmp_path / "raises" / "checkpoints" / trial.trial_id),
        1,
    )
    process = sweep_cli(study_file, ray_session)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 1, output[-3000:]
    rows = pd.read_parquet(tmp_path / "raises" / "results" / "trials")
    assert list(rows["trial_id"]) == [trial.trial_id] and list(rows["status"]) == ["failed"]
    error = rows["error"].iloc[0]
    assert error.startswith("RuntimeError: Error(s) in loading state_dict") and "size mismatch" in error
    assert "Traceback" in error and "Traceback" not in output  # in the row, not thrice on the console
    assert "1 of 1 trials did not complete:" in output and f"{trial.trial_id} failed:" in output
    assert "retry the failed ones with: python -m study.run_sweep" in output and "--resume" in output


@pytest.mark.slow
def test_a_cut_epochs_file_is_restored_from_the_checkpoint_or_its_trial_trains_again(
    ray_session: str, tmp_path: Path
) -> None:
    """A finished study, one trial's epochs file cut to 40%: --resume rebuilds its rows from the history in
    its newest checkpoint (not retrained, the cut file kept). Another trial's file cut and its checkpoints
    gone: it trains again. Neither resume ends with fewer rows than the study had."""
    import shutil

    study_file = tmp_path / "cut.yaml"
    study_file.write_text(smallest(tiny_study_yaml("cut", tmp_path)).replace("[0.0, 1.0]", "[0.0]"))
    results = tmp_path / "cut" / "results"
    first = sweep_cli(study_file, ray_session)
    assert first.wait(timeout=300) == 0, first.stdout.read()[-3000:]
    before = pd.read_parquet(results / "epochs").sort_values(["trial_id", "epoch"], ignore_index=True)
    a, b = sorted(before["trial_id"].unique())

    def cut(trial_id: str) -> None:
        path = results / "epochs" / f"{trial_id}.parquet"
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.4)])

    cut(a)
    again = sweep_cli(study_file, ray_session, "--resume")
    output = again.communicate(timeout=300)[0]
    assert again.returncode == 0, output[-3000:]
    assert f"{a}: its 2 epoch rows restored from its checkpoint" in output and f"[{a}] epoch" not in output
    after = pd.read_parquet(results / "epochs").sort_values(["trial_id", "epoch"], ignore_index=True)
    pd.testing.assert_frame_equal(after, before)  # every row back, value for value
    assert (results / "epochs" / f"_{a}.parquet.unreadable").exists()  # the cut file kept, out of readers' way

    cut(b)
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / b)
    third = sweep_cli(study_file, ray_session, "--resume")
    output = third.communicate(timeout=300)[0]
    assert third.returncode == 0, output[-3000:]
    assert f"{b}: no checkpoint holds its 2 epochs; it trains again" in output and f"[{b}] epoch 2/2" in output
    final = pd.read_parquet(results / "epochs")
    assert len(final) == len(before) and not final.duplicated(["trial_id", "epoch"]).any()
    trials = pd.read_parquet(results / "trials")
    assert sorted(trials["status"]) == ["completed", "completed"]
    assert (results / "trials" / f"_{b}.parquet.superseded").exists()


def test_a_trial_of_an_ended_driver_run_cannot_replace_the_rows_of_the_newer_run(tmp_path: Path) -> None:
    """Fencing: a trial of driver run 1 trains on after its driver was killed; run 2 (the resume) begins
    after its first epoch and writes that trial's rows anew. At its next write the old trial stops (StaleRun),
    and the newer rows stay as run 2 wrote them; no trial row of run 1 appears."""
    import time
    import types

    import torch

    from analysis.store import ResultsStore, StaleRun, begin_run, run_generation
    from study.plan import plan_one
    from trainables.loop import Runtime
    from trainables.ray_train import EPOCHS_SCHEMA, Reporter, run_worker
    from trainables.trial import TrialRun

    spec = plan_one(
        "fenced",
        data={"dataset": "synthetic", "train_subset": 256, "test_subset": 64},
        model={"width": 0.125},
        sweep={"batch_size": 64, "mixup_alpha": 0.0},
        schedule={"epochs": 3, "decay": "constant", "milestones": []},
    )
    root = str(tmp_path / "fenced")
    store = ResultsStore(f"{root}/results")
    newer = [{"trial_id": spec.trial_id, "epoch": 1, "train_loss": 123.0}]  # what run 2 wrote

    def report(metrics: dict) -> None:
        if metrics.get("kind") == "epoch" and metrics["epoch"] == 1:  # the resumed driver begins now
            assert begin_run(root) == 2
            store.write("epochs", spec.trial_id, newer, EPOCHS_SCHEMA)

    old = TrialRun(spec, root, {"git_revision": "t", "config": "{}"}, False, 1.0, 1.0, 0, time.time(), generation=1)
    assert begin_run(root) == 1 and run_generation(root) == 1
    with pytest.raises(StaleRun, match="run 2 has begun"):
        run_worker(old, Runtime(torch.device("cpu")), Reporter(types.SimpleNamespace(report=report)))
    assert store.read("epochs")["train_loss"].tolist() == [123.0]  # run 2's rows, not replaced
    assert store.read("trials").empty
