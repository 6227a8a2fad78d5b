"""Experiment trackers the driver writes to as trials report, beside the Parquet results: TensorBoard
(study/tensorboard.py), MLflow and Weights & Biases (the `tracking:` section).

One run per trial, named by its trial id and found again by it: a resumed trial continues its run. Its
record's fields are the run's parameters (the swept ones also tags), each epoch's float metrics are
logged with the epoch as the step, and its outcome (final and best metrics, timing) and its sharpness
values come at the end. The study's name groups the runs (MLflow: the experiment and a tag; W&B: the
group). The trackers are views: one that raises is said in one warning line and dropped, and training
goes on."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from analysis.store import TRIAL_OUTCOME, join, resolve, write_atomic
from study.config import StudyConfig
from trainables.trial import SWEEP_FIELDS, EpochMetrics, TrialSpec

# Every float metric of an epoch row (the record, not a list kept here); a value not measured that epoch
# (NaN: no evaluation, no noise probes) is left out, so a metric exists only once written.
EPOCH_METRICS = tuple(f.name for f in dataclasses.fields(EpochMetrics) if f.type in ("float", float, "float | None"))
# A trial row's numbers besides its record (final and best metrics, gap, timing): its outcome.
OUTCOME_VALUES = tuple(f.name for f in TRIAL_OUTCOME if str(f.type) in ("double", "int64"))
# ... and its conditions, as tags: the status and where and with what it ran.
OUTCOME_TAGS = ("status", "device", "host", "git_revision", "torch_version", "ray_version", "python_version")
TAG_PREFIX = "lbstudy."  # the tags this code finds its runs by


class Tracker(Protocol):
    name: str  # said in its warning
    where: str  # its destination: what it holds is kept per tracker and destination
    durable: bool  # what it was given is on disk (or the server) when a call returns; else only after close

    def epoch(self, spec: TrialSpec, step: int, metrics: dict[str, float]) -> None: ...

    def ended(self, spec: TrialSpec, step: int, values: dict[str, float], tags: dict[str, str]) -> None: ...

    def measured(self, spec: TrialSpec, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def finite(values: dict[str, Any], keys: tuple[str, ...] | None = None) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in values.items()
        if (keys is None or k in keys) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def run_parameters(spec: TrialSpec) -> dict[str, str]:
    """The record's fields as text (a tracker's parameters are strings; lists as JSON)."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in spec.to_dict().items()}


def swept_tags(spec: TrialSpec) -> dict[str, str]:
    return {k: v for k, v in run_parameters(spec).items() if k in SWEEP_FIELDS}


class Tracking:
    """The study's trackers, called by the driver; each call reaches every tracker still working.

    What each tracker holds is kept in `<study>/tracking.json` (by tracker and destination): a resumed
    driver logs what a killed one had not (an epoch whose row was written just before the kill, an outcome
    never told), from the results store's rows, and nothing twice. A tracker that failed in an earlier
    driver run catches up the same way."""

    def __init__(
        self,
        trackers: list[Tracker],
        state_file: str | None = None,
        history: Callable[[str], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.trackers = list(trackers)
        self.dropped: list[str] = []  # '<tracker> (<why>)' of each that failed in this driver run
        self.sent: dict[str, dict[str, int]] = {
            key_of(t): {"epochs": 0, "outcomes": 0, "measured": 0} for t in trackers
        }
        self.state_file = state_file
        self.history = history  # trial id -> its epoch rows, from the results store
        self.asked: set[tuple[str, str]] = set()  # (tracker, trial) whose last epoch this driver run asked
        self.saved: dict[str, dict[str, Any]] = {}  # ... and what it surely holds: tracking.json
        if state_file is not None:
            with contextlib.suppress(Exception):  # no file (a first run) or an unreadable one: nothing held
                fs, path = resolve(state_file)
                with fs.open_input_stream(path) as stream:
                    self.saved = json.loads(stream.read().decode())
        self.state: dict[str, dict[str, Any]] = json.loads(json.dumps(self.saved))  # what each was given

    def held(self, tracker: Tracker) -> dict[str, Any]:
        held = self.state.setdefault(key_of(tracker), {})
        for key in ("epochs", "ended", "measured"):
            held.setdefault(key, {})
        return held

    def save(self, closed: bool = False) -> None:
        """tracking.json: what each durable tracker was given, and what the others were given by their last
        close (W&B's service writes its files behind: a driver killed before close loses the tail, which
        the resumed driver logs again from the store)."""
        for tracker in self.trackers:
            if tracker.durable or closed:
                self.saved[key_of(tracker)] = json.loads(json.dumps(self.held(tracker)))
        if self.state_file is not None:
            with contextlib.suppress(Exception):  # at worst a resumed driver logs an epoch again
                write_atomic(self.state_file, json.dumps(self.saved, sort_keys=True).encode())

    def _each(self, call: Callable[[Tracker], None]) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as error:  # a tracker is a view: it never stops a study
                self.trackers.remove(tracker)
                said = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
                self.dropped.append(f"{tracker.name} ({type(error).__name__}: {said[:120]})")
                print(
                    f"warning: {tracker.name}: not written from here on ({type(error).__name__}: {said}); "
                    "training goes on, and the results store has every value",
                    file=sys.stderr,
                    flush=True,
                )
        self.save()  # once per call: a tracker that can say what it holds (last_epoch) needs no finer record

    def _epochs_up_to(self, tracker: Tracker, spec: TrialSpec, last: int, rows: list[dict[str, Any]]) -> None:
        """Log the epochs after the last one `tracker` holds, up to `last`, from `rows` (the store's)."""
        held = self.held(tracker)["epochs"]
        if (key_of(tracker), spec.trial_id) not in self.asked:  # a tracker that can say what it holds is right
            self.asked.add((key_of(tracker), spec.trial_id))
            known = tracker.last_epoch(spec) if hasattr(tracker, "last_epoch") else None
            if known is not None:
                held[spec.trial_id] = known
        for row in sorted(rows, key=lambda r: r["epoch"]):
            epoch = int(row["epoch"])
            if held.get(spec.trial_id, 0) < epoch <= last:
                tracker.epoch(spec, epoch, finite(row, EPOCH_METRICS))
                held[spec.trial_id] = epoch
                self.count(tracker, "epochs")

    def rows_before(self, spec: TrialSpec, epoch: int) -> list[dict[str, Any]]:
        """The trial's stored epoch rows, where some tracker lacks one before `epoch`."""
        lacking = any(self.held(t)["epochs"].get(spec.trial_id, 0) < epoch - 1 for t in self.trackers)
        if not lacking or self.history is None:
            return []
        try:
            return self.history(spec.trial_id)
        except Exception:  # unreadable rows: the curve has a gap, the store still has every row
            return []

    def epoch(self, spec: TrialSpec, result: dict[str, Any]) -> None:
        epoch = int(result["epoch"])
        rows = [*self.rows_before(spec, epoch), result]
        self._each(lambda t: self._epochs_up_to(t, spec, epoch, rows))

    def count(self, tracker: Tracker, what: str) -> None:
        sent = self.sent.setdefault(key_of(tracker), {})
        sent[what] = sent.get(what, 0) + 1

    def ended(self, spec: TrialSpec, row: dict[str, Any]) -> None:
        """A trial's outcome, from its `trials/` row (and any of its epochs a tracker lacks). An outcome named
        as an epoch metric is the trial's average (images_per_s, mfu): `trial_<name>`, so that the metric has
        one value per step."""
        values = {f"trial_{k}" if k in EPOCH_METRICS else k: v for k, v in finite(row, OUTCOME_VALUES).items()}
        tags = {k: str(row[k]) for k in OUTCOME_TAGS if row.get(k) is not None}
        last = int(row.get("epochs_completed") or 0)
        rows = self.rows_before(spec, last + 1)

        def tell(tracker: Tracker) -> None:
            ended = self.held(tracker)["ended"]
            if ended.get(spec.trial_id) != str(row.get("finished_at")):  # a trial trained again ends again
                self._epochs_up_to(tracker, spec, last, rows)
                tracker.ended(spec, last, values, tags)
                ended[spec.trial_id] = str(row.get("finished_at"))
                self.count(tracker, "outcomes")

        self._each(tell)

    def caught_up(self, specs: dict[str, TrialSpec], trials: Any) -> None:
        """Every ended trial of `specs` told, from the `trials/` table (one a killed driver never told)."""
        for row in trials.to_dict("records") if len(trials) else []:
            spec = specs.get(str(row["trial_id"]))
            if spec is not None:
                self.ended(spec, row)

    def measured(self, specs: dict[str, TrialSpec], trials: Any, sharpness: Any) -> None:
        """The sharpness values of the trials in `specs` (frames of the `trials/` and `sharpness/` tables),
        once the study's measurements are done, at each trial's last epoch; a value already told is not
        told again."""
        if sharpness is None or sharpness.empty:
            return
        epochs = dict(zip(trials["trial_id"], trials["epochs_completed"])) if len(trials) else {}
        for trial_id, rows in sharpness.groupby("trial_id"):
            spec = specs.get(str(trial_id))
            values = finite({f"sharpness/{m}": v for m, v in zip(rows["measure"], rows["value"])})
            if spec is None or not values:
                continue
            step = int(epochs.get(trial_id) or 0)

            def tell(tracker: Tracker, spec: TrialSpec = spec, step: int = step, values: dict = values) -> None:
                told = self.held(tracker)["measured"].setdefault(spec.trial_id, {})
                new = {k: v for k, v in values.items() if told.get(k) != v}
                if new:
                    tracker.measured(spec, step, new)
                    told.update(new)
                    self.count(tracker, "measurements")

            self._each(tell)

    def close(self) -> None:
        closing = list(self.trackers)
        self._each(lambda t: t.close())
        self.trackers = [t for t in closing if t in self.trackers]  # those that closed cleanly
        self.save(closed=True)

    def summary(self) -> list[str]:
        """What this driver run sent each tracker (one line each), and the trackers it dropped."""
        lines = []
        for tracker in self.trackers:
            sent = self.sent.get(key_of(tracker), {})
            parts = [f"{n} {what if n != 1 else what.rstrip('s')}" for what, n in sent.items() if n]
            lines.append(
                f"tracking: {tracker.name} ({tracker.where}): "
                + (", ".join(parts) + " sent" if parts else "up to date")
            )
        lines += [f"tracking: {dropped} was dropped: it lacks what came after" for dropped in self.dropped]
        return lines


def key_of(tracker: Tracker) -> str:
    return f"{tracker.name} {tracker.where}"


def study_tracking(
    study: StudyConfig, study_dir: str, uid: str, history: Callable[[str], list[dict[str, Any]]] | None = None
) -> Tracking:
    """The trackers of `study` (its results under `study_dir`, its own id `uid`; `history`: a trial's epoch
    rows, from which a resumed driver logs what a killed one had not)."""
    from study.tensorboard import EpochBoard

    local = "://" not in study_dir
    trackers: list[Tracker] = [EpochBoard(join(study_dir, "tensorboard"))] if local else []
    dropped = []
    for name, configured, make in (
        ("MLflow", study.tracking.mlflow, lambda: MlflowTracker(study, uid)),
        ("W&B", study.tracking.wandb, lambda: WandbTracker(study, uid, study_dir if local else None)),
    ):
        if configured is None:
            continue
        try:
            trackers.append(make())
        except Exception as error:  # a server down at the start: said, and the study trains
            said = str(error).strip().splitlines()[0][:120] if str(error).strip() else ""
            dropped.append(f"{name} ({type(error).__name__}: {said})")
            print(f"warning: {name}: not written ({type(error).__name__}: {said})", file=sys.stderr, flush=True)
    tracking = Tracking(trackers, join(study_dir, "tracking.json"), history)
    tracking.dropped += dropped
    return tracking


def catch_up(tracking: Tracking, specs: dict[str, TrialSpec], trials: Any, sharpness: Any) -> None:
    """Bring every tracker up to what the store holds for the trials of `specs` (frames of the `trials/` and
    `sharpness/` tables): each ended trial's epochs and outcome a tracker lacks, and its sharpness values."""
    tracking.caught_up(specs, trials[trials["trial_id"].isin(list(specs))] if len(trials) else trials)
    tracking.measured(specs, trials, sharpness)


class MlflowTracker:
    """MLflow through its client: a run per trial in the experiment, found again by the trial's tags."""

    name = "MLflow"
    durable = True  # each call returns once the server has it

    def __init__(self, study: StudyConfig, uid: str) -> None:
        # A server that does not answer costs the driver a few seconds, not MLflow's minutes of retries
        # (each call blocks the callback that also prints progress); the user's own settings win.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a line per trial otherwise
        from mlflow.tracking import MlflowClient

        config = study.tracking.mlflow
        assert config is not None
        self.client = MlflowClient(tracking_uri=config.tracking_uri)
        self.study, self.uid = study.name, uid
        name = config.experiment or study.name
        found = self.client.get_experiment_by_name(name)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(name)
        self.where = f"{self.client.tracking_uri} {self.experiment_id}"
        self.runs: dict[str, str] = {}  # trial id -> its open run
        self.ended_runs: dict[str, str] = {}  # ... and those that ended in this driver run

    def run_id(self, spec: TrialSpec) -> str:
        run = self.runs.get(spec.trial_id)
        if run is not None:
            return run
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{TAG_PREFIX}study_uid` = '{self.uid}' and tags.`{TAG_PREFIX}trial_id` = '{spec.trial_id}'"
            ),
            max_results=1,
        )
        if found:  # a resumed trial: its run goes on
            run = found[0].info.run_id
            self.client.update_run(run, status="RUNNING")
        else:
            tags = {
                **swept_tags(spec),
                f"{TAG_PREFIX}study": self.study,
                f"{TAG_PREFIX}study_uid": self.uid,
                f"{TAG_PREFIX}trial_id": spec.trial_id,
            }
            run = self.client.create_run(self.experiment_id, run_name=spec.trial_id, tags=tags).info.run_id
            from mlflow.entities import Param

            params = [Param(k, v[:6000]) for k, v in run_parameters(spec).items()]
            for at in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
                self.client.log_batch(run, params=params[at : at + 100])
        self.runs[spec.trial_id] = run
        return run

    def last_epoch(self, spec: TrialSpec) -> int:
        """The last epoch the trial's run holds (`lr` is logged every epoch)."""
        return max((m.step for m in self.client.get_metric_history(self.run_id(spec), "lr")), default=0)

    def log(self, run: str, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        for at in range(0, len(metrics), 1000):
            self.client.log_batch(run, metrics=metrics[at : at + 1000])

    def epoch(self, spec: TrialSpec, step: int, metrics: dict[str, float]) -> None:
        self.log(self.run_id(spec), step, metrics)

    def ended(self, spec: TrialSpec, step: int, values: dict[str, float], tags: dict[str, str]) -> None:
        run = self.run_id(spec)
        self.log(run, step, values)
        for k, v in tags.items():
            self.client.set_tag(run, k, v[:5000])
        failed = tags.get("status") in ("failed", "diverged")
        self.client.set_terminated(run, status="FAILED" if failed else "FINISHED")
        self.runs.pop(spec.trial_id, None)
        self.ended_runs[spec.trial_id] = run

    def measured(self, spec: TrialSpec, step: int, values: dict[str, float]) -> None:
        run = self.ended_runs.get(spec.trial_id) or self.run_id(spec)
        self.log(run, step, values)
        if run not in self.ended_runs.values():  # a trial that ended in an earlier driver run
            self.client.set_terminated(run, status="FINISHED")
            self.runs.pop(spec.trial_id, None)

    def close(self) -> None:
        for run in self.runs.values():  # trials this driver run did not see end (stopped by Ctrl-C)
            self.client.set_terminated(run, status="KILLED")
        self.runs.clear()


class WandbTracker:
    """W&B runs, one per trial (several open at once in this process), each with an id made from the
    study's id and the trial's, so that a resume continues it (offline: a new folder with the same id,
    which `wandb sync` uploads into the same run)."""

    name = "W&B"
    durable = False

    def __init__(self, study: StudyConfig, uid: str, study_dir: str | None) -> None:
        import wandb

        self.wandb = wandb
        self.config = study.tracking.wandb
        self.study, self.uid, self.dir = study.name, uid, study_dir
        assert self.config is not None
        self.where = f"{self.config.mode} {self.config.entity or ''}/{self.config.project}"
        self.runs: dict[str, Any] = {}
        self.failed: set[str] = set()

    def run_id(self, trial_id: str) -> str:
        return hashlib.sha1(f"{self.uid}/{trial_id}".encode()).hexdigest()[:24]

    def run(self, spec: TrialSpec) -> Any:
        run = self.runs.get(spec.trial_id)
        if run is None:
            assert self.config is not None
            run = self.wandb.init(
                project=self.config.project,
                entity=self.config.entity,
                mode=self.config.mode,
                dir=self.dir,
                id=self.run_id(spec.trial_id),
                resume="allow",
                name=spec.trial_id,
                group=self.study,
                job_type=spec.phase,
                config=spec.to_dict(),
                tags=[f"{k}={v}"[:64] for k, v in swept_tags(spec).items()],
                reinit="create_new",  # one open run per trial, beside the others
                settings=self.wandb.Settings(silent=True, console="off"),
            )
            run.define_metric("epoch")
            run.define_metric("*", step_metric="epoch")  # the epoch is the x axis, across a resume too
            self.runs[spec.trial_id] = run
        return run

    def last_epoch(self, spec: TrialSpec) -> int | None:
        """Offline: the last epoch the run's folders of earlier driver runs hold (W&B's service writes them
        behind, so a killed driver's tail is missing and is logged again, and nothing else is); online:
        unknown (None: tracking.json says)."""
        assert self.config is not None
        if self.config.mode != "offline" or self.dir is None:
            return None
        run_id = self.run_id(spec.trial_id)
        logs = Path(self.dir, "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
        return max((offline_last_epoch(log) for log in logs), default=0)

    def epoch(self, spec: TrialSpec, step: int, metrics: dict[str, float]) -> None:
        self.run(spec).log({**metrics, "epoch": step})

    def ended(self, spec: TrialSpec, step: int, values: dict[str, float], tags: dict[str, str]) -> None:
        # open until the study's measurements are in (close): a run finished and resumed in one
        # driver run would be two offline folders
        self.run(spec).summary.update({**values, **tags})
        if tags.get("status") in ("failed", "diverged"):
            self.failed.add(spec.trial_id)

    def measured(self, spec: TrialSpec, step: int, values: dict[str, float]) -> None:
        self.run(spec).summary.update(values)

    def close(self) -> None:
        for trial_id, run in self.runs.items():
            run.finish(exit_code=1 if trial_id in self.failed else 0)
        self.runs.clear()


def offline_records(log: Path) -> Iterator[Any]:
    """The records (W&B's `Record` protos) of a W&B transaction log (`run-<id>.wandb`), as far as it was
    written whole. The format: a 7-byte header (":W&B", ...), then records in LevelDB's log framing: 32 KiB
    blocks of chunks, each with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data, block, at, parts = log.read_bytes(), 32768, 7, b""
    if not data.startswith(b":W&B"):
        return
    while at + 7 <= len(data):
        if block - at % block < 7:  # too little of the block left for a header: padding
            at += block - at % block
            continue
        length, kind = int.from_bytes(data[at + 4 : at + 6], "little"), data[at + 6]
        if kind == 0:  # zeros: the rest of the block was never written
            at += block - at % block
            continue
        if at + 7 + length > len(data):
            return  # cut by a kill: the record is not whole
        parts += data[at + 7 : at + 7 + length]
        at += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(parts)
            except Exception:  # a damaged record: what came before it stands
                return
            parts = b""
            yield record


def offline_last_epoch(log: Path) -> int:
    """The largest `epoch` in the history records of a W&B transaction log (0: none)."""
    return max(
        (
            int(json.loads(item.value_json))
            for record in offline_records(log)
            if record.WhichOneof("record_type") == "history"
            for item in record.history.item
            if item.key == "epoch"
        ),
        default=0,
    )


def catch_up_study(study: StudyConfig) -> list[str]:
    """--resume of a study with nothing left to train or measure: every tracker brought up to what the store
    holds for each of its trials (a tracker that was down while the study ran gets it all now); returns
    what each was sent (`Tracking.summary`)."""
    from analysis.store import ResultsStore
    from study.checks import study_root, study_uid
    from study.plan import local_path, stored_specs

    store = ResultsStore.for_study(local_path(study.storage), study.name)
    root = study_root(study)
    trials = store.read("trials")
    specs = {trial_id: TrialSpec.from_dict(values) for trial_id, values in stored_specs(trials).items()}
    tracking = study_tracking(study, root, study_uid(root), lambda t: store.read("epochs", t).to_dict("records"))
    try:
        catch_up(tracking, specs, trials, store.read("sharpness"))
    finally:
        tracking.close()
    return tracking.summary()
