"""End-to-end: real local Ray, real Tune trials, real TorchTrainer, results in Parquet."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import ROOT, smallest, tiny_study_yaml
from test_status import status

from analysis.store import trial_schema
from study.config import parse_study
from study.plan import plan_study
from study.sweep import run_study
from trainables.checkpoint import load_checkpoint
from trainables.trial import TrialSpec

pytestmark = pytest.mark.slow
DESIGN_TRIAL_COLUMNS = [
    "trial_id",
    "study",
    "batch_size",
    "mixup_alpha",
    "lr_scaling",
    "base_lr",
    "peak_lr",
    "warmup_epochs",
    "epochs",
    "seed",
    "workers",
    "micro_batch",
    "accumulation_steps",
    "bn_batch_size",
    "weight_decay",
    "augment",
    "dataset",
    "model",
    "width",
    "status",
    "final_test_acc",
    "best_test_acc",
    "gap_acc",
    "gap_loss",
    "steps",
    "train_time_s",
    "images_per_s",
    "startup_s",
    "checkpoint",
    "git_revision",
    "torch_version",
    "ray_version",
    "device",
    "hosts",
    "config",
]
DESIGN_EPOCH_COLUMNS = [
    "trial_id",
    "epoch",
    "lr",
    "train_loss",
    "clean_train_loss",
    "clean_train_acc",
    "test_loss",
    "test_acc",
    "epoch_time_s",
    "images_per_s",
    "grad_norm_rms",
    "param_norm",
]


def test_tiny_sweep_writes_one_row_per_trial_and_epoch(
    ray_session: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = parse_study(smallest(tiny_study_yaml("grid", tmp_path)))
    result = run_study(study)
    trials = pd.read_parquet(Path(result.results_dir) / "trials")
    epochs = pd.read_parquet(Path(result.results_dir) / "epochs")
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    assert set(DESIGN_TRIAL_COLUMNS) <= set(trials.columns) and set(DESIGN_EPOCH_COLUMNS) <= set(epochs.columns)
    assert sorted(zip(trials["batch_size"], trials["mixup_alpha"])) == [(64, 0.0), (64, 1.0), (128, 0.0), (128, 1.0)]
    counts = epochs.groupby("trial_id")["epoch"].apply(sorted)
    assert counts.to_dict() == {t: [1, 2] for t in trials["trial_id"]}
    for column in ("final_test_acc", "final_clean_train_acc", "best_test_acc"):
        assert trials[column].between(0, 1).all()
    assert epochs[["test_acc", "clean_train_acc"]].stack().between(0, 1).all()
    assert (trials["steps"] == 2 * 256 // trials["batch_size"]).all()
    assert trials["startup_s"].gt(0).all() and trials["git_revision"].str.len().gt(6).all()
    assert all(Path(p).exists() for p in trials["checkpoint"])
    # Each table has a fixed schema, so reading the folder keeps every column.
    assert list(trials.columns) == trial_schema(TrialSpec).names
    # The trial's own record went in whole: every TrialSpec field is a column, equal to the plan's value.
    planned = {t.trial_id: t for t in plan_study(study)}
    for row in trials.to_dict("records"):
        assert json.loads(row["spec"]) == planned[row["trial_id"]].to_dict()
        assert (row["peak_lr"], row["bn_batch_size"]) == (planned[row["trial_id"]].peak_lr, row["micro_batch"])
    # Existing results are never overwritten: the same study again, without --resume, is refused.
    from study.sweep import SweepError

    with pytest.raises(SweepError, match="--resume"):
        run_study(study)
    # Resumed from another HOME with measurements added: main trained all 4 again (their ids hashed the
    # data folder and the noise-scale probes) and the report pooled 8 trainings as 2 seeds each.
    monkeypatch.setenv("HOME", str(tmp_path / "another-home"))
    capsys.readouterr()
    measure = "measure: {noise_scale: {}, eps_sharpness: {samples: 64, max_steps: 3}}\n"
    again = run_study(parse_study(smallest(tiny_study_yaml("grid", tmp_path)) + measure), resume=True)
    said = capsys.readouterr().out
    assert "grid: 4 trials, 4 already finished, 0 to run" in said, said
    assert "4 finished trials were trained without measure.noise_scale" in said
    assert sorted(r["trial_id"] for r in again.trials) == sorted(trials["trial_id"])
    assert sorted(pd.read_parquet(Path(result.results_dir) / "trials")["trial_id"]) == sorted(trials["trial_id"])
    sharpness = pd.read_parquet(Path(result.results_dir) / "sharpness")
    assert sorted(sharpness.loc[sharpness["measure"] == "eps_sharpness", "trial_id"]) == sorted(trials["trial_id"])


def test_two_worker_trainer_equals_one_worker_accumulating(ray_session: str, tmp_path: Path) -> None:
    """DDP over gloo in a TorchTrainer vs one worker with 2 accumulation steps: same batches, same update.
    The one-worker reference trains in this process (the Tune path of one-worker trials is every other test's)."""
    from trainables.loop import Runtime, train

    grid = "sweep: {batch_size: [64, 128], mixup_alpha: [0.0, 1.0]}"
    common = "sweep: {batch_size: [64], mixup_alpha: [1.0]}\n"
    two = parse_study(smallest(tiny_study_yaml("two", tmp_path)).replace(grid, common) + "resources: {workers: 2}\n")
    one = parse_study(
        smallest(tiny_study_yaml("one", tmp_path)).replace(grid, common)
        + "resources: {workers: 1, max_micro_batch: 32}\n"
    )
    (row,) = run_study(two).trials
    assert row["status"] == "completed" and (row["micro_batch"], row["accumulation_steps"]) == (32, 1)
    (spec,) = plan_study(one)
    assert (spec.micro_batch, spec.accumulation_steps) == (32, 2)
    single_state: dict = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a one-CPU trial: the same reduction order in every conv
    try:
        train(spec, Runtime(torch.device("cpu")), on_epoch=lambda m, make: single_state.update(s=make()))
    finally:
        torch.set_num_threads(threads)
    distributed = load_checkpoint(row["checkpoint"])["model"]
    single = single_state["s"]["model"]
    names = [n for n in single if "running" not in n and "num_batches" not in n]
    gap = torch.cat([(single[n] - distributed[n]).reshape(-1) for n in names]).norm()
    assert float(gap / torch.cat([single[n].reshape(-1) for n in names]).norm()) < 1e-5


def run_cli(*args: str, address: str | None = None, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if address:
        env["RAY_ADDRESS"] = address
    return subprocess.Popen(
        [sys.executable, "-m", "study.run_sweep", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def test_interrupted_sweep_resumes_without_retraining_or_duplicates(ray_session: str, tmp_path: Path) -> None:
    study_file = tmp_path / "resume.yaml"
    study_file.write_text(
        tiny_study_yaml("resume", tmp_path).replace("epochs: 2,", "epochs: 4,")
        + "resources: {max_concurrent_trials: 1}\n"
    )
    results = tmp_path / "resume" / "results"
    process = run_cli(str(study_file), "--set", "sweep.mixup_alpha=[0.0]", address=ray_session)
    deadline = time.time() + 300
    while not (results / "trials").exists() or not list((results / "trials").glob("*.parquet")):
        assert process.poll() is None, process.stdout.read()
        assert time.time() < deadline, "the first trial did not finish in time"
        time.sleep(0.5)
    # SIGTERM (docker stop, a scheduler, kill) is a Ctrl-C (the same code path: it raises SIGINT), with exit
    # 143: main died with status -6 and Ray's stack dump twice.
    process.send_signal(signal.SIGTERM)
    first_output = process.communicate(timeout=120)[0]
    finished = pd.read_parquet(results / "trials")
    assert len(finished) == 1, first_output
    # It means stop: exit 143, the unfinished trial named, this tool's way to continue, not Tune's.
    assert process.returncode == 143 and "SIGTERM received" not in first_output, first_output[-3000:]
    assert "Stop signal received" not in first_output  # Tune's, before the study's own stopped line
    # What it is doing comes first, before torch and Ray take their seconds to import.
    assert first_output.splitlines()[0] == "resume: 2 trials; checking the data, then starting Ray", first_output
    assert "stopped: 1 trial unfinished" in first_output and "Tuner.restore" not in first_output
    assert "--set 'sweep.mixup_alpha=[0.0]' --resume" in first_output  # shell-quoted, ready to paste
    assert not (results / "report.html").exists() and not (tmp_path / "resume" / "report.html").exists()
    first_id = finished["trial_id"][0]
    first_epochs_mtime = (results / "epochs" / f"{first_id}.parquet").stat().st_mtime_ns

    again = run_cli(str(study_file), "--set", "sweep.mixup_alpha=[0.0]", "--resume", address=ray_session)
    output = again.communicate(timeout=600)[0]
    assert again.returncode == 0, output
    assert "1 already finished, 1 to run" in output
    trials = pd.read_parquet(results / "trials")
    epochs = pd.read_parquet(results / "epochs")
    assert sorted(trials["trial_id"]) == sorted(set(trials["trial_id"])) and len(trials) == 2
    assert set(trials["status"]) == {"completed"}
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert epochs.groupby("trial_id")["epoch"].apply(sorted).to_dict() == {t: [1, 2, 3, 4] for t in trials["trial_id"]}
    # The finished trial was not trained again: its row and its epochs file are untouched.
    assert trials.set_index("trial_id").loc[first_id, "finished_at"] == finished["finished_at"][0]
    assert (results / "epochs" / f"{first_id}.parquet").stat().st_mtime_ns == first_epochs_mtime
    assert f"results: {results}" in output
    end = status(str(tmp_path / "resume"))  # from the store alone, once the study has ended
    assert "2 trials: 2 completed; 0 running, 0 not started; 8/8 epochs" in end.stdout, end.stdout


def test_cli_errors_are_one_line_with_status_2(ray_session: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsweep: {batch_sise: [128]}\n")
    process = run_cli(str(bad))
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 2 and output.strip().count("\n") == 0
    assert "did you mean 'batch_size'" in output

    huge = tmp_path / "huge.yaml"
    huge.write_text(tiny_study_yaml("huge", tmp_path) + "resources: {workers: 1, cpus_per_worker: 64}\n")
    process = run_cli(str(huge), address=ray_session)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 2, output
    assert output.strip().splitlines()[-1].startswith("error: resources: one trial needs 1 worker of")


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path: Path) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "study.run_sweep", "studies/smoke.yaml", "--dry-run", "--storage", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = process.stdout.splitlines()
    # The header, what every trial shares, the column names, one line per trial, the cost, the measurements'.
    assert process.returncode == 0 and "peak_lr 0.05" in lines[1] and len(lines) == 1 + 1 + 1 + 4 + 1 + 1
    assert lines[-2].startswith("cost: 20,480 training images (4 trials x 2 epochs x 2,560)")
    assert lines[-1].startswith("measure: ")
    assert not any(tmp_path.iterdir())
    # It needs neither ray, pandas nor torch (a fast answer): nothing of theirs was imported.
    probe = (
        "import runpy, sys; sys.argv = ['run_sweep', 'studies/smoke.yaml', '--dry-run'];\n"
        "try: runpy.run_module('study.run_sweep', run_name='__main__')\n"
        "except SystemExit: pass\n"
        "print(sorted({'ray', 'pandas', 'pyarrow', 'torch'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


CONNECT = """
import os, sys
os.environ.pop("RAY_ADDRESS", None)
import ray
from study.cluster import TRIAL_RESOURCE, connect_ray
connect_ray(sys.argv[1] if len(sys.argv) > 1 else None)
print(ray.get_runtime_context().gcs_address, ray.cluster_resources().get(TRIAL_RESOURCE, 0))
ray.shutdown()
"""


def test_without_an_address_a_fresh_local_ray_starts_even_beside_a_running_one(ray_session: str) -> None:
    """`ray start` records its cluster in Ray's temp folder; plain ray.init() then joins it, and main crashed
    ('resources must not be provided'). The session's Ray is recorded the same way here: now a fresh
    instance starts without an address, and `--address auto` joins the running one."""
    from ray._private.utils import get_ray_address_file, read_ray_address, write_ray_address

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    recorded = read_ray_address()
    write_ray_address(ray_session)  # as `ray start --head` does
    try:
        joined = subprocess.run(
            [sys.executable, "-c", CONNECT, "auto"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=180
        )
        assert joined.returncode == 0, joined.stderr[-2000:]
        assert joined.stdout.split()[-2] == ray_session
        fresh = subprocess.run(
            [sys.executable, "-c", CONNECT], cwd=ROOT, capture_output=True, text=True, env=env, timeout=180
        )
        assert fresh.returncode == 0, fresh.stderr[-2000:]
        address, trial_resource = fresh.stdout.split()[-2:]
        assert address != ray_session and float(trial_resource) > 0
    finally:
        if recorded:
            write_ray_address(recorded)
        else:
            Path(get_ray_address_file(None)).unlink(missing_ok=True)


def test_the_console_is_quiet_with_progress_and_says_what_went_wrong(ray_session: str, tmp_path: Path) -> None:
    """Before: 369 of 508 lines of a smoke run were Tune's tables. Now: our lines only, unless --verbose.
    Two of its trials diverge (base lr 1000): recorded as such, and the study goes on."""
    study_file = tmp_path / "quiet.yaml"
    study_file.write_text(
        smallest(tiny_study_yaml("quiet", tmp_path)).replace(
            "sweep: {batch_size: [64, 128], mixup_alpha: [0.0, 1.0]}",
            "sweep: {batch_size: [64, 128], mixup_alpha: [0.0], base_lr: [0.05, 1000.0]}",
        )
    )
    process = run_cli(str(study_file), address=ray_session)
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output[-3000:]
    summary = (tmp_path / "quiet" / "summary.txt").read_text()  # the console's end, kept beside the results
    assert summary.startswith("trial_id") and f"results: {tmp_path / 'quiet' / 'results'}" in summary
    lines = [line for line in output.splitlines() if line.strip()]
    assert not any("Trial status" in line or "╭" in line or "Tuner.restore" in line for line in lines), output
    assert sum(1 for line in lines if " epoch " in line and line.startswith("[b")) >= 4 + 2  # 2 diverge at once
    assert any(line.startswith("study: 4/4 trials ended, 0 running, 0 pending") for line in lines), output
    # The end says which trials did not complete, each with its reason.
    assert "2 of 4 trials did not complete:" in output
    assert sum(1 for line in lines if "diverged: train loss" in line) == 2
    assert len(lines) < 45, f"{len(lines)} lines:\n{output}"
    # Divergence is recorded and the study goes on: each diverged trial's row says why, after its first epoch,
    # its epochs so far are kept, and the report lists it.
    results = tmp_path / "quiet" / "results"
    trials = pd.read_parquet(results / "trials")
    epochs = pd.read_parquet(results / "epochs")
    for base_lr, rows in trials.groupby("base_lr"):
        assert set(rows["status"]) == ({"completed"} if base_lr == 0.05 else {"diverged"}), rows
    diverged = trials[trials["status"] == "diverged"]
    assert set(diverged["epochs_completed"]) == {1}
    assert diverged["error"].str.contains("not finite|exploded").all()  # the reason
    assert epochs["trial_id"].isin(diverged["trial_id"]).sum() == 2  # one epoch row each, kept
    assert (tmp_path / "quiet" / "report.html").exists()  # the driver's; built again here to read it
    from analysis.report import write_report

    page = write_report(str(results)).read_text()
    assert "diverged at epoch 1" in page and 'id="trials_table"' in page


def test_a_second_ctrl_c_exits_at_once(ray_session: str, tmp_path: Path) -> None:
    """Also `study.status` (Ray and torch unimportable) on this study while it trains, one trial at a time."""
    study_file = tmp_path / "twice.yaml"
    study_file.write_text(
        tiny_study_yaml("twice", tmp_path).replace("epochs: 2,", "epochs: 200,").replace("[0.0, 1.0]", "[0.0]")
        + "resources: {max_concurrent_trials: 1}\n"
    )
    process = run_cli(str(study_file), address=ray_session)
    deadline = time.time() + 300
    while not (tmp_path / "twice" / "results" / "epochs").exists():  # training has begun
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.3)
    mid = status(str(tmp_path / "twice"))
    assert mid.returncode == 0, mid.stderr[-2000:]
    assert "study twice: 2 trials:" in mid.stdout and "1 running" in mid.stdout and "epochs" in mid.stdout
    assert "  running " in mid.stdout and " ago" in mid.stdout
    process.send_signal(signal.SIGINT)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    started = time.time()
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130 and time.time() - started < 60, output[-3000:]
    assert "--resume" in output.splitlines()[-1] and "Traceback" not in output and "Exception ignored" not in output
    assert "Failed to fetch metrics" not in output
    # Stopped, nothing runs: main said "1 running ... ETA". Now the status says when and how to go on.
    command = output.splitlines()[-1].split("ontinue with: ")[-1]  # "stopped: ... Continue with: <command>"
    assert command == f"python -m study.run_sweep {study_file} --resume", output[-3000:]
    after = status(str(tmp_path / "twice")).stdout
    assert "1 interrupted" in after and "running" not in after and "ETA" not in after, after
    assert f"(stopped: pid {process.pid} on " in after and after.strip().endswith(f"continue with: {command}"), after
    watch = status(str(tmp_path / "twice"), "--watch", "1")  # ends: the study is stopped
    assert watch.returncode == 0 and "interrupted at" in watch.stdout


def test_a_study_sweeping_models_and_remedies_trains_and_measures_each(ray_session: str, tmp_path: Path) -> None:
    """The depth and remedies questions as sweep keys: VGG9 and ResNet-20 at two batch sizes with SGD, and
    beside them (an extra grid) LARS with ghost batch norm at the large batch; measured and drawn apart."""
    from analysis.load import load_results
    from analysis.report import build_figures

    text = (
        smallest(tiny_study_yaml("depth", tmp_path)).replace(
            "sweep: {batch_size: [64, 128], mixup_alpha: [0.0, 1.0]}",
            "sweep:\n  batch_size: [64, 128]\n  mixup_alpha: [0.0]\n  model: [vgg9, resnet20]\n"
            "  also: [{batch_size: [128], optimizer: [lars], ghost_batch: [32], base_lr: [2.0]}]",
        )
        + "measure:\n  hessian: {top_k: 1, samples: 64, trace: false}\n"
        + "  interpolate: {between: batch_size, pairs: [[64, 128]], points: 3, train_samples: 128, test_samples: 128}\n"
    )
    result = run_study(parse_study(text))
    trials = pd.DataFrame(result.trials)
    assert len(trials) == 6 and set(trials["status"]) == {"completed"}, trials[["trial_id", "status"]]
    assert sorted(trials["model"]) == ["resnet20"] * 3 + ["vgg9"] * 3
    lars = trials[trials["optimizer"] == "lars"]
    assert len(lars) == 2 and set(lars["ghost_batch"]) == {32} and set(lars["bn_batch_size"]) == {32}
    assert set(trials.loc[trials["optimizer"] == "sgd", "bn_batch_size"]) == {64, 128}
    results = load_results(result.results_dir)
    assert set(results.sharpness["trial_id"]) == set(trials["trial_id"])
    pairs = results.landscape[["trial_a", "trial_b"]].drop_duplicates()
    info = trials.set_index("trial_id")
    assert len(pairs) == 2  # 64 with 128 within each model, SGD with plain BN only: LARS has no batch-64 partner
    assert all(
        info.loc[a, "model"] == info.loc[b, "model"] and info.loc[a, "optimizer"] == info.loc[b, "optimizer"] == "sgd"
        for a, b in pairs.itertuples(index=False)
    )
    # base_lr differs between the grids too: a compared condition, named in the legend like the others.
    assert set(results.trials["augmentation_label"]) == {
        f"base lr {lr}, {m}, {o}: none"
        for m in ("vgg9", "resnet20")
        for lr, o in (("0.05", "sgd, plain BN"), ("2", "lars, ghost BN 32"))
    }
    names = [name for name, _ in build_figures(results)[0]]
    assert "by_model" in names and "accuracy_gap_vs_batch" in names
