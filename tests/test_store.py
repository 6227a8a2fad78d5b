"""The results store through pyarrow filesystems: atomic writes, fixed schemas, non-local filesystems."""

from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest

from analysis.load import load_results
from analysis.store import BASE_COLUMNS, ResultsStore, epoch_schema, trial_schema
from trainables.trial import EpochMetrics, TrialSpec

TRIALS, EPOCHS = trial_schema(TrialSpec), epoch_schema(EpochMetrics)


def test_write_replaces_the_file_and_hides_partials(tmp_path: Path) -> None:
    store = ResultsStore(str(tmp_path / "s" / "results"))
    store.write("epochs", "t1", [{"trial_id": "t1", "epoch": 1, "test_acc": 0.5}], EPOCHS)
    store.write("epochs", "t1", [{"trial_id": "t1", "epoch": e, "test_acc": 0.5} for e in (1, 2)], EPOCHS)
    # A crash between writing and renaming leaves a hidden partial file that readers skip.
    (tmp_path / "s" / "results" / "epochs" / ".t2.deadbeef.tmp").write_bytes(b"PAR1 half a file")
    frame = pd.read_parquet(tmp_path / "s" / "results" / "epochs")
    assert frame["epoch"].tolist() == [1, 2] and list(frame.columns) == EPOCHS.names
    assert store.keys("epochs") == {"t1"}


def test_unknown_columns_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="not in the 'epochs' schema"):
        ResultsStore(str(tmp_path)).write("epochs", "x", [{"trial_id": "x", "made_up": 1}], EPOCHS)
    with pytest.raises(KeyError, match="trial record's schema"):
        ResultsStore(str(tmp_path)).write("epochs", "x", [{"trial_id": "x", "epoch": 1}])


def test_missing_tables_read_as_empty_frames_with_columns(tmp_path: Path) -> None:
    frame = ResultsStore(str(tmp_path / "nothing")).read("trials")
    assert frame.empty and list(frame.columns) == BASE_COLUMNS["trials"]


def test_store_works_through_a_non_local_pyarrow_filesystem(tmp_path: Path) -> None:
    """A SubTreeFileSystem stands in for object storage: no plain path is ever opened by the store."""
    bucket = pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
    store = ResultsStore.for_study("studies", "demo", filesystem=bucket)
    store.write(
        "trials", "t1", [{"trial_id": "t1", "study": "demo", "status": "completed", "final_test_acc": 0.7}], TRIALS
    )
    store.write(
        "landscape", "job1", [{"job": "job1", "kind": "interp1d", "x": 0.0, "split": "train", "loss": 1.0, "acc": 0.5}]
    )
    assert (tmp_path / "bucket" / "studies" / "demo" / "results" / "trials" / "t1.parquet").exists()
    assert store.finished_trials() == {"t1"}
    assert store.read("landscape")["loss"].tolist() == [1.0]
    # The analysis side reads the same store by URI.
    results = load_results((tmp_path / "bucket" / "studies" / "demo" / "results").as_uri())
    assert results.study == "demo" and len(results.landscape) == 1 and results.epochs.empty


def test_joining_a_uri_keeps_its_query_at_the_end() -> None:
    from analysis.store import join, parent
    from trainables.checkpoint import epoch_file

    # The README's storage: `s3://BUCKET/lbstudy?region=us-west-2`; the study's folders go before the query.
    assert (
        join("s3://b/lbstudy?region=us-west-2", "paper", "results") == "s3://b/lbstudy/paper/results?region=us-west-2"
    )
    assert parent("s3://b/lbstudy/paper/results?region=us-west-2") == "s3://b/lbstudy/paper?region=us-west-2"
    assert epoch_file("s3://b/x/checkpoints/t?region=r", 3) == "s3://b/x/checkpoints/t/epoch-0003.pt?region=r"
    assert join("/local/a/", "b") == "/local/a/b" and parent("/local/a/b") == "/local/a"
