"""The retrying filesystem of object storage (analysis/remote.py); the outage itself: tests/test_s3.py."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest

from analysis.remote import Retrying, StorageUnreachable, retrying, transient, unreachable
from analysis.store import ResultsStore


@pytest.mark.parametrize(
    ("error", "is_outage"),
    [
        (
            OSError(
                "AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Couldn't connect to server"
            ),
            1,
        ),
        (OSError("When reading information for key 'a' in bucket 'b': AWS Error SERVICE_UNAVAILABLE"), 1),
        (OSError("AWS Error SLOW_DOWN during PutObject operation: Please reduce your request rate."), 1),
        (OSError("AWS Error ACCESS_DENIED during HeadObject operation: No response body."), 0),
        (FileNotFoundError("Path does not exist 'b/a'"), 0),
        (OSError("[Errno 28] No space left on device"), 0),
        (ValueError("Connection refused"), 0),  # not an OSError: a bug, never retried
    ],
)
def test_only_network_and_service_failures_count_as_an_outage(error: BaseException, is_outage: int) -> None:
    assert transient(error) is bool(is_outage)


def test_a_results_store_through_the_retrying_filesystem_reads_what_it_wrote(tmp_path: Path) -> None:
    """The handler is a real pyarrow filesystem: Parquet writes, dataset listing and reads go through it."""
    fs = retrying(pafs.LocalFileSystem(), "local test")
    store = ResultsStore(str(tmp_path / "results"), fs)
    store.write("measure_errors", "job-a", [{"job": "job-a", "table": "sharpness", "error": "x"}])
    store.write("measure_errors", "job-b", [{"job": "job-b", "table": "sharpness", "error": "y"}])
    assert sorted(store.read("measure_errors")["error"]) == ["x", "y"]
    assert store.keys("measure_errors") == {"job-a", "job-b"}


def test_an_outage_longer_than_the_retries_names_the_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    import analysis.remote as remote

    monkeypatch.setattr(remote, "RETRY_S", 0.2)
    calls = []

    def refused() -> None:
        calls.append(1)
        raise OSError("AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 7")

    handler = Retrying(pafs.LocalFileSystem(), "s3://bucket/studies")
    with pytest.raises(StorageUnreachable, match=r"storage unreachable: s3://bucket/studies did not answer for"):
        handler.call("read x", refused)
    assert len(calls) >= 2  # tried again before giving up
    wrapped = RuntimeError("Tune: a callback failed")
    wrapped.__cause__ = StorageUnreachable("storage unreachable: s3://bucket/studies did not answer for 180 s")
    assert "s3://bucket/studies" in str(unreachable(wrapped))
