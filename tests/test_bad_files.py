"""Corrupt, truncated and hostile files: a clear answer, never a silently smaller result (issue 15)."""

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, sweep_without_ray

from analysis.store import ResultsStore, epoch_schema, trial_schema
from study.bench_data import write_cifar10_format
from trainables.data import DataError, load_dataset
from trainables.trial import EpochMetrics, TrialSpec

EPOCHS, TRIALS = epoch_schema(EpochMetrics), trial_schema(TrialSpec)


# ---------------------------------------------------------------------------------------------
# Archives and images


def image_tar(images_per_split: int = 50) -> bytes:
    """An uncompressed tar of train/<class>/*.png and test/<class>/*.png, tiny PNGs."""
    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(png, format="PNG")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for split in ("train", "test"):
            for i in range(images_per_split):
                info = tarfile.TarInfo(f"data/{split}/{('cat', 'dog')[i % 2]}/{i:03d}.png")
                info.size = len(png.getvalue())
                tar.addfile(info, io.BytesIO(png.getvalue()))
    return out.getvalue()


def member_offset(raw: bytes, index: int) -> int:
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return tar.getmembers()[index].offset


def one_line_error(root: Path) -> str:
    with pytest.raises(DataError) as caught:
        load_dataset("imagefolder", root)
    message = str(caught.value)
    assert "\n" not in message and str(root) in message, message
    return message


def test_a_complete_archive_loads_every_image(tmp_path: Path) -> None:
    archive = tmp_path / "ok.tar.gz"
    archive.write_bytes(gzip.compress(image_tar()))
    data = load_dataset("imagefolder", archive)
    assert (len(data.train), len(data.test)) == (50, 50)


def test_a_corrupt_header_in_the_middle_is_an_error_not_a_smaller_dataset(tmp_path: Path) -> None:
    # Before: tarfile stopped quietly at the bad header and 60 of 100 images loaded, without a word.
    raw = bytearray(image_tar())
    offset = member_offset(bytes(raw), 60)
    raw[offset + 148 : offset + 156] = b"garbage!"  # the header's checksum field
    archive = tmp_path / "flipped.tar.gz"
    archive.write_bytes(gzip.compress(bytes(raw)))
    assert "corrupt or cut short" in one_line_error(archive)


def test_an_archive_that_ends_early_is_an_error(tmp_path: Path) -> None:
    compressed = gzip.compress(image_tar())
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(compressed[: len(compressed) // 2])  # before: an EOFError traceback
    message = one_line_error(truncated)
    assert "ends early" in message or "cut short" in message
    raw = image_tar()
    cut = tmp_path / "cut.tar"  # uncompressed, cut inside a member's header
    cut.write_bytes(raw[: member_offset(raw, 30) + 100])
    assert "cut short" in one_line_error(cut)


def test_random_bytes_are_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(os.urandom(5000))  # before: a five-line message
    assert "not a readable .tar/.tar.gz archive" in one_line_error(junk)


def test_a_decompression_bomb_is_named_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    # PIL refuses images over 2 x MAX_IMAGE_PIXELS; a lower limit makes a small image one (a real
    # 20000 x 10000 PNG is the same error at the default limit).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for split in ("train", "test"):
        (tmp_path / "imgs" / split / "cat").mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "imgs" / split / "cat" / "big.png")
    with pytest.raises(DataError, match="big.png is too large to decode safely"):
        load_dataset("imagefolder", tmp_path / "imgs")


@pytest.mark.slow
def test_a_bad_archive_is_exit_2_before_ray_starts(tmp_path: Path) -> None:
    archive = tmp_path / "junk.tar.gz"
    archive.write_bytes(os.urandom(5000))
    process = sweep_without_ray(archive, "1", tmp_path)
    assert process.returncode == 2, process.stderr[-2000:]
    assert process.stderr.strip().splitlines() == [process.stderr.strip().splitlines()[-1]]
    assert "junk.tar.gz is not a readable" in process.stderr


# ---------------------------------------------------------------------------------------------
# CIFAR's pickles


def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path: Path) -> None:
    write_cifar10_format(tmp_path, per_batch=4)

    class Payload:
        def __reduce__(self):  # what a hostile file does: call os.system on load
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps({b"data": Payload()}))
    with pytest.raises(DataError, match="data_batch_3 is not a CIFAR batch file .*posix.system is not allowed"):
        load_dataset("cifar10", tmp_path, download=False)
    assert not (tmp_path / "ran").exists()


def test_cifar_files_that_differ_from_the_published_ones_are_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_cifar10_format(tmp_path, per_batch=4)  # random images: not CIFAR's md5s
    data = load_dataset("cifar10", tmp_path, download=False)
    assert len(data.train) == 20
    assert "differ from the published CIFAR files (md5)" in capsys.readouterr().err
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="lacks test_batch"):
        load_dataset("cifar10", tmp_path, download=False)


# ---------------------------------------------------------------------------------------------
# The results store


def test_an_unreadable_result_file_is_named_once_skipped_and_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ResultsStore(str(tmp_path / "s" / "results"))
    for trial in ("t1", "t2"):
        store.write("epochs", trial, [{"trial_id": trial, "epoch": 1, "test_acc": 0.5}], EPOCHS)
    bad = tmp_path / "s" / "results" / "epochs" / "t2.parquet"
    bad.write_bytes(bad.read_bytes()[:40])  # before: pandas raised ArrowInvalid and nothing was read
    assert store.read("epochs")["trial_id"].tolist() == ["t1"]
    assert bad.exists() and str(bad) in store.unreadable
    assert capsys.readouterr().err.count("cannot be read") == 1
    assert store.read("epochs")["trial_id"].tolist() == ["t1"] and "cannot" not in capsys.readouterr().err
    moved = store.set_aside_unreadable("epochs")
    assert moved == [str(bad.with_name(f"_{bad.name}.unreadable"))] and Path(moved[0]).exists() and not bad.exists()
    assert store.read("epochs")["trial_id"].tolist() == ["t1"] and not store.unreadable


def test_the_report_is_built_from_what_is_readable_and_lists_the_rest(tmp_path: Path) -> None:
    from analysis.report import write_report

    store = ResultsStore(str(tmp_path / "s" / "results"))
    row = {"trial_id": "t1", "study": "s", "batch_size": 128, "augmentation_label": "none", "lr_scaling": "none"}
    store.write("trials", "t1", [{**row, "seed": 0, "status": "completed", "final_test_acc": 0.5}], TRIALS)
    store.write("trials", "t2", [{**row, "trial_id": "t2", "seed": 1, "status": "completed"}], TRIALS)
    bad = tmp_path / "s" / "results" / "trials" / "t2.parquet"
    bad.write_bytes(b"PAR1 and then nothing")
    page = write_report(store.root).read_text()
    assert f"Not read: {bad}" in page and bad.exists()
    assert pd.read_parquet(tmp_path / "s" / "results" / "trials" / "t1.parquet")["trial_id"].tolist() == ["t1"]


# ---------------------------------------------------------------------------------------------
# Data errors inside a trial


def test_a_trial_whose_data_cannot_load_ends_failed_by_itself_without_a_retry(tmp_path: Path) -> None:
    """Before: the DataError propagated, Tune retried the trial max_failures times, then the driver wrote it."""
    import time
    import types

    import torch

    from study.plan import plan_one
    from trainables.loop import Runtime
    from trainables.ray_train import Reporter, run_worker
    from trainables.trial import TrialRun

    spec = plan_one(
        "nodata",
        data={"dataset": "imagefolder", "root": str(tmp_path / "absent")},
        sweep={"batch_size": 8, "mixup_alpha": 0.0},
        schedule={"epochs": 1, "decay": "constant"},
    )
    reports: list[dict] = []
    run = TrialRun(
        spec,
        str(tmp_path / "study"),
        {"git_revision": "test", "config": "{}"},
        use_gpu=False,
        cpus_per_worker=1.0,
        gpus_per_worker=1.0,
        max_failures=0,
        started_at=time.time(),
    )
    # The reporter's interface is one call, report(metrics): here a list stands in for Tune's session.
    outcome = run_worker(run, Runtime(torch.device("cpu")), Reporter(types.SimpleNamespace(report=reports.append)))
    assert outcome.status == "failed"  # returned, not raised: nothing for Tune to retry
    (row,) = ResultsStore(str(tmp_path / "study" / "results")).read("trials").to_dict("records")
    assert row["status"] == "failed" and "does not exist" in row["error"] and row["device"].startswith("cpu")
    assert reports[-1] == {"kind": "final", "status": "failed", "epochs": 0, "startup_s": None, "error": row["error"]}


def test_no_code_turns_rays_token_authentication_off() -> None:
    for package in ("study", "trainables", "analysis"):
        for path in (ROOT / package).glob("*.py"):
            text = path.read_text()
            assert "RAY_AUTH_MODE" not in text and "dashboard_host" not in text, path


@pytest.mark.slow
def test_cifar_files_missing_are_exit_2_on_the_driver_before_ray(tmp_path: Path) -> None:
    """Before: each trial tried to load (and download) the data itself, three times, then exit 0."""
    (tmp_path / "cifar" / "cifar-10-batches-py").mkdir(parents=True)  # the folder, not its files: no download
    process = sweep_without_ray(tmp_path / "cifar", "128", tmp_path, dataset="cifar10")
    assert process.returncode == 2 and process.stderr.strip().count("\n") == 0, process.stderr[-2000:]
    assert "lacks data_batch_1" in process.stderr


@pytest.mark.slow
def test_a_study_in_which_no_trial_completed_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    from study.run_sweep import exit_status

    failed = {"status": "failed", "error": "DataError: no images\nTraceback ..."}
    diverged = {"status": "diverged", "error": "train loss nan"}
    assert exit_status([failed, {**failed, "error": "other"}]) == 1
    assert "no trial completed (2 failed); the first said: DataError: no images" in capsys.readouterr().err
    assert exit_status([failed, diverged]) == 1  # failed and diverged, in any mix
    assert "no trial completed (1 diverged, 1 failed)" in capsys.readouterr().err
    assert exit_status([diverged, diverged]) == 1  # results, but none of what the study was run for
    assert exit_status([failed, {"status": "completed", "error": None}]) == 0
    assert exit_status([diverged, {"status": "completed", "error": None}]) == 0


def test_the_end_of_a_run_lists_the_nodes_that_trained_its_trials() -> None:
    from study.run_sweep import nodes_line

    rows = [
        {"host": "gpu-a", "node_id": "1a2b3c4d5e6f"},
        {"host": "gpu-a", "node_id": "1a2b3c4d5e6f"},
        {"host": "gpu-b", "node_id": "9f8e7d6c5b4a"},
        {"host": None, "node_id": None},  # a trial the driver recorded (it failed before it could write)
    ]
    assert nodes_line(rows) == "nodes: ? 1 trial, gpu-a (1a2b3c4d) 2 trials, gpu-b (9f8e7d6c) 1 trial"
