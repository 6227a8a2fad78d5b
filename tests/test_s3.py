"""A whole study on an S3 API (moto's server on loopback, configured as a MinIO or Ceph user would, by
AWS_ENDPOINT_URL): results, checkpoints, measurements and the report through the bucket, each object
written in one upload (no temporary object is ever listed), and a driver killed mid-study resumed with
every row once."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest
from conftest import ROOT, free_port, tiny_study_yaml

from analysis.store import ResultsStore


def bucket(env: dict[str, str]) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(
        endpoint_override=env["AWS_ENDPOINT_URL"].removeprefix("http://"),
        scheme="http",
        access_key=env["AWS_ACCESS_KEY_ID"],
        secret_key=env["AWS_SECRET_ACCESS_KEY"],
        region=env["AWS_DEFAULT_REGION"],
    )


def objects(env: dict[str, str], prefix: str) -> list[str]:
    infos = bucket(env).get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def sweep(env: dict[str, str], study_file: Path, *extra: str) -> subprocess.Popen:
    """run_sweep on a fresh local Ray started by the driver (its workers inherit the S3 settings)."""
    environment = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "study.run_sweep",
            str(study_file),
            "--storage",
            "s3://lbstudy/studies?region=us-east-1",
            *extra,
        ],
        cwd=study_file.parent,
        env={**environment, **env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


class Outage:
    """A TCP relay in front of the S3 server whose storage can go down (connections refused, open ones cut)
    and come back on the same port: an outage as a driver and its workers meet it."""

    def __init__(self, target: str) -> None:
        self.target = target.removeprefix("http://").split(":")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.open: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        assert self.listener is not None
        self.listener.close()
        self.listener = None
        for connection in self.open:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
                connection.close()
        self.open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # down
            server = socket.create_connection((self.target[0], int(self.target[1])))
            self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def test_the_results_store_on_s3_writes_each_object_once_and_reads_it_back(
    s3_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in s3_environment.items():
        monkeypatch.setenv(key, value)
    store = ResultsStore("s3://lbstudy/unit/results")
    store.write("measure_errors", "job-a", [{"job": "job-a", "table": "sharpness", "error": "x"}])
    store.write("measure_errors", "job-a", [{"job": "job-a", "table": "sharpness", "error": "y"}])  # replaced
    assert objects(s3_environment, "lbstudy/unit") == ["lbstudy/unit/results/measure_errors/job-a.parquet"]
    assert store.read("measure_errors")["error"].tolist() == ["y"] and store.keys("measure_errors") == {"job-a"}


def test_a_study_on_s3_trains_measures_reports_and_resumes_a_killed_driver(
    s3_environment: dict[str, str], tmp_path: Path
) -> None:
    study_file = tmp_path / "ons3.yaml"
    study_file.write_text(
        tiny_study_yaml("ons3", tmp_path / "unused")
        .replace("epochs: 2,", "epochs: 4,")
        .replace("mixup_alpha: [0.0, 1.0]", "mixup_alpha: [0.0]")
        + "resources: {max_concurrent_trials: 1}\n"
        + "measure:\n  hessian: {top_k: 1, samples: 64, trace: false}\n"
        + "  interpolate: {between: batch_size, pairs: [[64, 128]], points: 3, train_samples: 64, test_samples: 64}\n"
    )
    results = "s3://lbstudy/studies/ons3/results?region=us-east-1"  # as the README writes it

    def read(table: str) -> pd.DataFrame:
        store = ResultsStore("lbstudy/studies/ons3/results", bucket(s3_environment))
        return store.read(table)

    first = sweep(s3_environment, study_file)
    deadline = time.time() + 300
    # Kill the driver once the first trial finished and the second has a checkpoint part-way.
    while not (len(read("trials")) == 1 and read("epochs")["trial_id"].nunique() == 2):
        assert first.poll() is None, first.stdout.read()[-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    done_id = read("trials")["trial_id"][0]
    time.sleep(3)  # the killed driver's trial processes stop with their Ray
    # The resumed driver reaches the storage through a relay that goes down for 20 s once it trains again:
    # main's driver died of it (exit 1 after 379 lines); now the outage costs time, not the study.
    outage = Outage(s3_environment["AWS_ENDPOINT_URL"])
    trained = len(read("epochs"))
    again = sweep({**s3_environment, "AWS_ENDPOINT_URL": outage.endpoint}, study_file, "--resume")
    while len(read("epochs")) == trained:
        assert again.poll() is None and time.time() < deadline + 300, again.stdout.read()[-3000:]
        time.sleep(0.3)
    outage.down()
    time.sleep(20)
    outage.up()
    output = again.communicate(timeout=600)[0]
    assert again.returncode == 0, output[-3000:]
    assert "not answering" in output and "trying again for up to 180 s" in output, output[-3000:]
    # The report lands in the study's storage (a job's driver folder is temporary), with how to fetch it.
    assert "report: s3://lbstudy/studies/ons3/report.html" in output and "fetch it: python -m analysis.report" in output
    assert "lbstudy/studies/ons3/report.html" in objects(s3_environment, "lbstudy/studies/ons3")
    assert "summary: s3://lbstudy/studies/ons3/summary.txt" in output  # the console's end, kept beside
    with bucket(s3_environment).open_input_stream("lbstudy/studies/ons3/summary.txt") as stream:
        assert stream.read().decode().startswith("trial_id")

    trials, history = read("trials"), read("epochs")
    assert len(trials) == 2 and set(trials["status"]) == {"completed"}
    assert not history.duplicated(["trial_id", "epoch"]).any()
    assert history.groupby("trial_id")["epoch"].apply(sorted).to_dict() == {t: [1, 2, 3, 4] for t in trials["trial_id"]}
    assert f"[{done_id}] epoch" not in output  # the finished trial was not trained again
    assert set(read("sharpness")["trial_id"]) == set(trials["trial_id"]) and len(read("landscape")) == 6
    listing = objects(s3_environment, "lbstudy/studies/ons3")
    assert not [o for o in listing if o.endswith(".tmp")], listing
    # Ray Tune keeps its own hidden marker under tune/; what this project writes has no hidden object at all,
    # and never had one: the server saw no request for a temporary object (each is one upload, no rename).
    ours = [o for o in listing if o.split("/")[3] in ("results", "checkpoints", "trajectory")]
    assert not [o for o in ours if o.rsplit("/", 1)[1].startswith(".")], ours
    requests = Path(s3_environment["LBSTUDY_S3_REQUEST_LOG"]).read_text()
    assert "/studies/ons3/results/epochs/" in requests and ".tmp" not in requests
    assert any("/checkpoints/" in o for o in listing) and any("/results/epochs/" in o for o in listing)
    print("\nthe bucket after the killed driver's resume (results, checkpoints):")
    print("\n".join(o for o in ours))

    report = tmp_path / "from-bucket.html"
    built = subprocess.run(
        [sys.executable, "-m", "analysis.report", results, "-o", str(report)],
        cwd=ROOT,
        env={**os.environ, **s3_environment},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    page = report.read_text()
    assert 'id="interpolation_1"' in page and 'id="sharpness_vs_batch"' in page


def test_the_study_lock_on_s3_holds_takes_over_and_follows_the_uris_endpoint(
    s3_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import dataclasses
    import json
    import socket

    from study.lock import LOCK_DIR, StudyLocked, announcements, study_lock

    for key, value in s3_environment.items():
        monkeypatch.setenv(key, value)
    uri = "s3://lbstudy/locks/one?region=us-east-1"
    with study_lock(uri) as took_over:
        assert took_over is None and len(objects(s3_environment, f"lbstudy/locks/one/{LOCK_DIR}")) == 1
        with pytest.raises(StudyLocked, match=rf"in use by pid {os.getpid()} on {socket.gethostname()}"):
            with study_lock(uri):
                pass
    (released,) = announcements(uri)  # kept, marked released: study.status reads how the study stopped
    assert released.released is not None
    # A lock left by a driver of this host that is gone is taken over.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = {**dataclasses.asdict(released), "token": "gone", "pid": int(gone.stdout), "released": None}
    with bucket(s3_environment).open_output_stream(f"lbstudy/locks/one/{LOCK_DIR}/gone.json") as out:
        out.write(json.dumps(stale).encode())
    with study_lock(uri) as took_over:
        assert took_over is not None and f"pid {int(gone.stdout)}" in took_over
    # The endpoint given in the URI, as the data path accepts it, with none in the environment: main's lock
    # went to https://bucket.s3.amazonaws.com instead.
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    endpoint = s3_environment["AWS_ENDPOINT_URL"].removeprefix("http://")
    in_uri = f"s3://lbstudy/locks/two?endpoint_override={endpoint}&scheme=http&region=us-east-1"
    with study_lock(in_uri):
        assert len(objects(s3_environment, f"lbstudy/locks/two/{LOCK_DIR}")) == 1

    # Two drivers of one study started together: one trains it, the other is refused with one line.
    study_file = tmp_path / "race.yaml"
    study_file.write_text(
        tiny_study_yaml("race", tmp_path / "unused")
        .replace("[64, 128], mixup_alpha: [0.0, 1.0]", "[64], mixup_alpha: [0.0]")
        .replace("epochs: 2,", "epochs: 1,")
    )
    drivers = [sweep(s3_environment, study_file) for _ in range(2)]
    outputs = [d.communicate(timeout=600)[0] for d in drivers]
    codes = sorted(d.returncode for d in drivers)
    assert codes == [0, 2], outputs
    refused = outputs[[d.returncode for d in drivers].index(2)]
    assert "is in use by pid" in refused.strip().splitlines()[-1], refused[-2000:]


def test_an_outage_past_the_retries_ends_the_study_in_one_line_with_its_resume_command(
    s3_environment: dict[str, str], tmp_path: Path
) -> None:
    """Storage gone for longer than the retries (8 s here, 180 s by default): one line, exit 1. And storage
    that does not answer at the start: one line, exit 2, before Ray (main: a raw traceback)."""
    study_file = tmp_path / "gone.yaml"
    study_file.write_text(
        tiny_study_yaml("gone", tmp_path / "unused")
        .replace("epochs: 2,", "epochs: 30,")
        .replace("[64, 128], mixup_alpha: [0.0, 1.0]", "[64], mixup_alpha: [0.0]")
        + "resources: {max_failures: 0}\n"  # Tune would restart the trial into the same outage 3 times
    )
    outage = Outage(s3_environment["AWS_ENDPOINT_URL"])
    env = {**s3_environment, "AWS_ENDPOINT_URL": outage.endpoint, "LBSTUDY_STORAGE_RETRY_S": "8"}
    driver = sweep(env, study_file)
    store = ResultsStore("lbstudy/studies/gone/results", bucket(s3_environment))
    deadline = time.time() + 300
    while store.read("epochs").empty:
        assert driver.poll() is None and time.time() < deadline, driver.stdout.read()[-3000:]
        time.sleep(0.3)
    outage.down()
    output = driver.communicate(timeout=300)[0]
    assert driver.returncode == 1, output[-3000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: storage unreachable: s3://lbstudy/studies") and "did not answer for" in last
    assert last.endswith(
        f"once it answers, continue with: python -m study.run_sweep {study_file} --storage "
        "'s3://lbstudy/studies?region=us-east-1' --resume"
    ), last
    again = sweep(env, study_file, "--resume")  # still down: said before Ray starts
    output = again.communicate(timeout=120)[0]
    assert again.returncode == 2 and output.strip().splitlines()[-1].startswith("error: storage: s3://lbstudy"), output
    assert "cannot be reached" in output and "Ray" not in output
