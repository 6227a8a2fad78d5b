"""Running a study on the connected Ray cluster: checks before Ray (storage, data, resources), the Tune
run of every unfinished trial (one-worker trials in the Tune trial itself, multi-worker trials through a
Ray Train TorchTrainer), the driver's progress lines, then measurements and the report.
The CLI around it is study/run_sweep.py."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from analysis.store import ResultsStore, begin_run, join, trial_row
from analysis.words import counted
from study.checks import SweepError, check_fresh, study_root, study_uid
from study.cluster import TRIAL_RESOURCE, alive_nodes, autoscaled_node_types, autoscaling, nodes_not_seeing
from study.config import StudyConfig
from study.measure import Measurements, slot_resource
from study.plan import local_path, plan_finals, plan_study, unmeasurable_note, with_stored_ids
from study.progress import PROGRESS_EVERY_S, SweepProgress
from study.search import make_grouped_asha
from study.tracking import Tracking, catch_up, study_tracking
from trainables.data import DataError, load_dataset
from trainables.trial import Status, TrialRun, TrialSpec


@dataclass(frozen=True)
class SweepResult:
    study: StudyConfig
    results_dir: str
    trials: list[dict[str, Any]]
    dashboard_url: str | None
    report: str | None = None
    interrupted: bool = False  # stopped by Ctrl-C: no measurements, no report
    unfinished: tuple[str, ...] = ()  # planned trials without a final row
    tracking: tuple[str, ...] = ()  # what each tracker was sent, and those dropped (Tracking.summary)


# ---------------------------------------------------------------------------------------------
# Resources


def resolve_use_gpu(study: StudyConfig, nodes: list[dict[str, float]], coming: list[dict[str, float]] = ()) -> bool:
    """`auto`: GPUs where a node has them, or where the autoscaler may launch (`coming`) nodes that do."""
    has_gpu = any(node.get("GPU", 0) > 0 for node in [*nodes, *coming])
    if study.resources.use_gpu == "auto":
        return has_gpu
    if study.resources.use_gpu and not has_gpu:
        raise SweepError(
            "resources.use_gpu: true, but no node of this Ray cluster has a GPU; "
            "set it to auto or false, or add GPU nodes"
        )
    return bool(study.resources.use_gpu)


def worker_bundle(study: StudyConfig, use_gpu: bool) -> dict[str, float]:
    return {"CPU": study.resources.cpus_per_worker, **({"GPU": study.resources.gpus_per_worker} if use_gpu else {})}


def workers_fitting(node: dict[str, float], bundle: dict[str, float]) -> int:
    # The small tolerance keeps fractions honest: 1.0 / 0.1 is 9.999999999999998 in floating point.
    return min(math.floor(node.get(k, 0) / v + 1e-9) for k, v in bundle.items() if v > 0)


# Trials started at once on an autoscaling cluster when the study sets no limit: all of them, in effect (the
# autoscaler launches nodes for the pending ones up to its max_workers).
AUTOSCALED_CONCURRENCY = 1_000_000


def check_fits(study: StudyConfig, use_gpu: bool, nodes: list[dict[str, float]], scales: bool = False) -> int:
    """Raise SweepError unless one trial can ever be placed; return how many trials fit at once. On a
    cluster whose autoscaler adds nodes (`scales`), trials that fit nowhere yet are its demand: they wait
    for the nodes it launches (cluster.yaml's head holds no CPU), as many at once as the study allows."""
    bundle = worker_bundle(study, use_gpu)
    workers = study.resources.workers
    per_node = [workers_fitting(node, bundle) for node in nodes]
    # One-worker trials run on one node; a TorchTrainer may spread its workers over nodes.
    capacity = max(per_node, default=0) if workers == 1 else sum(per_node)
    if scales:
        if capacity < workers:
            print(
                f"no node holds a trial's {counted(workers, 'worker')} of {bundle} yet: waiting for the autoscaler",
                flush=True,
            )
        return study.resources.max_concurrent_trials or AUTOSCALED_CONCURRENCY
    if capacity < workers:
        offered = ", ".join(f"{{CPU: {n.get('CPU', 0):g}, GPU: {n.get('GPU', 0):g}}}" for n in nodes)
        raise SweepError(
            f"resources: one trial needs {counted(workers, 'worker')} of {bundle}, but the cluster's nodes "
            f"({offered}) hold at most {capacity}; lower resources.workers or "
            "resources.cpus_per_worker / gpus_per_worker, or add nodes"
        )
    return max(1, sum(per_node) // workers)


# ---------------------------------------------------------------------------------------------
# Ray Tune


def planned(trial: Any) -> TrialRun:
    """The run of one planned trial (Tune nests its dict under the grid-search key)."""
    return TrialRun.from_dict(trial.config["trial"])


def trial_name(trial: Any) -> str:
    return planned(trial).spec.trial_id


def make_progress_callback(
    store: ResultsStore,
    todo: list[TrialSpec],
    prov: dict[str, Any],
    measurements: Measurements | None = None,
    slots_per_trial: float = 1.0,
    concurrency: int = 1,
    tracking: Tracking | None = None,
) -> Any:
    """The driver's part: print each trial's epochs and the study's progress with an ETA, record a trial
    that failed (a trial writes its own rows, but one that raised cannot say so), and measure each trial
    that completed while the others train (`measurements`, given the slots a trial holds); tell the
    experiment trackers (`tracking`) each epoch and outcome."""
    import ray.tune

    from trainables.ray_train import TRIALS_SCHEMA, worker_provenance

    class Progress(ray.tune.Callback):
        def __init__(self) -> None:
            self.study = SweepProgress(
                {t.trial_id: t.epochs for t in todo},
                time.time(),
                concurrency=concurrency,
                kind_of={t.trial_id: t.batch_size for t in todo},
            )
            self.said_at = time.time()
            # The line comes on a timer of its own: Tune calls back only when something happens, and it
            # was silent for a minute between epochs. The lock keeps the ticker and the callbacks apart.
            self.lock = threading.RLock()
            self.ticking = threading.Event()
            self.tracking = tracking or Tracking([])
            if measurements is not None:
                measurements.reserved = self.reserved

        def __getstate__(self) -> dict[str, Any]:
            """Tune pickles its callbacks with the experiment's state: the ticker's lock and event and the
            trackers' clients stay with the live driver."""
            return {k: v for k, v in self.__dict__.items() if k not in ("lock", "ticking", "tracking")}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.__dict__.update(state)
            self.lock, self.ticking, self.tracking = threading.RLock(), threading.Event(), Tracking([])

        def setup(self, **info: Any) -> None:
            self.ticking.set()
            threading.Thread(target=self.tick, name="study-progress", daemon=True).start()

        def tick(self) -> None:
            while self.ticking.is_set():
                time.sleep(1.0)
                with contextlib.suppress(Exception):  # a line missed is better than a driver stopped
                    self.say_progress()

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            self.ticking.clear()

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            with self.lock:
                self.study.start(trial_name(trial), time.time())

        def reserved(self) -> float:
            """Measurement slots the unfinished trials of this run hold or will take (training first)."""
            unfinished = len(self.study.epochs_of) - len(self.study.ended)
            return min(concurrency, unfinished) * slots_per_trial

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            if measurements is not None:
                with self.lock:
                    measurements.poll()
            self.say_progress()  # every PROGRESS_EVERY_S, epochs or not

        def say_progress(self, force: bool = False) -> None:
            """The study's line, on a timer and whenever a trial ends; measurements running beside are said
            in the same line."""
            with self.lock:
                if force or time.time() - self.said_at >= PROGRESS_EVERY_S:
                    line = self.study.line(time.time())
                    if measurements is not None and measurements.jobs:
                        line += "; " + measurements.line().replace("measure: ", "measurements: ", 1)
                    print(line, flush=True)
                    self.said_at = time.time()

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            trial_id = trial_name(trial)
            if result.get("kind") == "epoch":
                with self.lock:
                    self.study.epoch(trial_id, int(result["epoch"]), time.time())
                self.tracking.epoch(planned(trial).spec, result)
                print(
                    f"[{trial_id}] epoch {result['epoch']}/{planned(trial).spec.epochs}: "
                    f"train loss {result['train_loss']:.4f}, test acc {result['test_acc']:.4f}, "
                    f"{result['images_per_s']:,.0f} img/s",
                    flush=True,
                )
                self.say_progress()
            elif result.get("kind") == "final":
                self.tell_trackers(planned(trial).spec)
                with self.lock:
                    self.study.end(trial_id)
                    if measurements is not None and result.get("status") == Status.COMPLETED:
                        measurements.plan()  # its own measurements, and the pairs it completes
                seconds, epochs = result["startup_s"], result["epochs"]
                # A trial that failed in training does not report when its first step was: unknown, not NaN s.
                known = seconds is not None and math.isfinite(seconds)
                startup = f"start-up {seconds:.1f} s" if known else "start-up unknown"
                print(
                    f"[{trial_id}] {result['status']} after {epochs} epoch{'' if epochs == 1 else 's'} ({startup})",
                    flush=True,
                )
                self.say_progress(force=True)

        def tell_trackers(self, spec: TrialSpec) -> None:
            """A trial's outcome, from the row it wrote (none: the trackers hear nothing, the store has it)."""
            with contextlib.suppress(Exception):
                rows = store.read("trials", spec.trial_id).to_dict("records")
                if rows:
                    self.tracking.ended(spec, rows[0])

        def record_end(self, spec: TrialSpec, status: str, error: str) -> None:
            """The row of a trial that could not write its own (stopped by ASHA, or raised), from its epochs."""
            history = store.read("epochs", spec.trial_id).drop(columns="trial_id").to_dict("records")
            outcome = {"status": status, "error": error, "checkpoint": None}
            row = trial_row(spec.to_dict(), history, outcome, worker_provenance(prov))
            store.write("trials", spec.trial_id, [row], TRIALS_SCHEMA)
            self.tracking.ended(spec, row)
            print(f"[{spec.trial_id}] {status}: {error}", flush=True)
            with self.lock:
                self.study.end(spec.trial_id)
            self.say_progress(force=True)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            # A trial ends without its own row only when a scheduler (ASHA) stopped it after an epoch.
            spec = planned(trial).spec
            if spec.trial_id not in store.keys("trials"):
                final = trial.last_result or {}
                if final.get("kind") == "final" and final.get("status") == Status.FAILED:  # its storage is full
                    self.record_end(spec, Status.FAILED, str(final.get("error")))  # raises DiskFull there too
                    return
                last = self.study.last_epoch.get(spec.trial_id, 0)
                self.record_end(spec, Status.STOPPED, f"stopped early by ASHA after epoch {last}")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            spec = planned(trial).spec
            if spec.trial_id in store.finished_trials():  # it wrote its row, then something else failed
                return
            # Tune writes the traceback to the trial's local folder before calling back (storage later).
            path = trial.error_file
            lines = Path(path).read_text().strip().splitlines() if path and Path(path).exists() else []
            message = lines[-1][:2000] if lines else "the trial raised an error; see the Ray logs"
            self.record_end(spec, Status.FAILED, message)

    return Progress()


def trial_config(
    study: StudyConfig, spec: TrialSpec, use_gpu: bool, prov: dict[str, Any], generation: int = 0
) -> dict[str, Any]:
    """What a trial gets (a TrialRun, as Tune's param space holds it): its record, where to write, the
    provenance its row carries, its resources and the driver run it belongs to."""
    return TrialRun(
        spec,
        study_root(study),
        prov,
        use_gpu,
        study.resources.cpus_per_worker,
        study.resources.gpus_per_worker,
        study.resources.max_failures,
        generation=generation,
    ).to_dict()


def provenance(study: StudyConfig) -> dict[str, Any]:
    """The study's side of every trial row's provenance: the code's git revision and the study file."""
    root = Path(__file__).resolve().parents[1]
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        revision = (revision + ("-dirty" if dirty else "")) if revision else "unknown"
    except (OSError, subprocess.SubprocessError):
        revision = "unknown"
    if revision == "unknown":  # a copy without .git (`ray job submit --working-dir` uploads one): as submitted
        revision = os.environ.get("LBSTUDY_GIT_REVISION") or "unknown"
    return {"git_revision": revision, "config": json.dumps(study.to_dict(), sort_keys=True)}


def check_shared_storage(study: StudyConfig) -> None:
    """Local storage on a cluster: every node must see the study folder where the driver does, since each
    trial writes its results and checkpoints from the node it runs on (else they scatter over disks)."""
    if "://" in study.storage:
        return
    missing = nodes_not_seeing(study_root(study))
    if missing:
        raise SweepError(
            f"storage: {study_root(study)} is not shared by every node ({', '.join(missing)} cannot see it); "
            "use a folder every node mounts at the same path (NFS), or an object store (--storage s3://...)"
        )


def run_study(
    study: StudyConfig, *, resume: bool = False, dashboard_url: str | None = None, verbose: bool = False
) -> SweepResult:
    """Run (or resume) every unfinished trial of `study` on the connected Ray cluster; with a `search:`
    section, its samples first and then the winners of every group with the final seeds."""
    check_fresh(study, resume)
    store = ResultsStore.for_study(local_path(study.storage), study.name)
    for table in ("trials", "epochs"):  # a trial whose row cannot be read is unfinished: it continues
        for path in store.set_aside_unreadable(table):
            print(f"{path}: unreadable, kept under this name; its trial continues from its checkpoints", flush=True)
            if table == "epochs":
                restore_epoch_rows(study, store, path.rsplit("/_", 1)[1].removesuffix(".parquet.unreadable"))
    nodes = alive_nodes()
    check_shared_storage(study)
    scales = autoscaling()
    use_gpu = resolve_use_gpu(study, nodes, list(autoscaled_node_types().values()) if scales else [])
    fits = check_fits(study, use_gpu, nodes, scales=scales)
    prov = provenance(study)
    generation = begin_run(study_root(study))  # under the study lock: the trials of older runs stop writing
    # A trial the store holds under another id (a store of an earlier version) keeps that id.
    stored = store.read("trials")
    first = with_stored_ids(plan_study(study), stored)
    unmeasurable = unmeasurable_note(first, stored, store.finished_trials())
    if unmeasurable:
        print(unmeasurable, flush=True)
    phases = [("search sample" if study.search else "trial", first)]
    done: list[TrialSpec] = []
    # Measured as trials complete, beside the training of the others (study/measure.py says the priority).
    measurements = Measurements(study, store, autoscaled=scales) if study_has_measurements(study) else None
    if measurements is not None:
        measurements.expect(first)  # the total its progress line counts against, from the start
        measurements.plan()  # trials completed by earlier runs
    history = lambda trial_id: store.read("epochs", trial_id).to_dict("records")  # noqa: E731
    tracking = study_tracking(study, study_root(study), study_uid(study_root(study)), history)
    try:
        while phases:
            label, plan = phases.pop(0)
            asha = study.search and study.search.asha and label != "final"
            scheduler = make_grouped_asha(study) if asha else None
            run = TrainingRun(label, plan, use_gpu, fits, generation, scheduler, measurements, tracking)
            if not run_trials(study, store, run, prov, verbose):
                # Stopped (Ctrl-C): no measurements, no report; the caller says how to continue.
                unfinished = tuple(t.trial_id for t in done + plan if t.trial_id not in store.finished_trials())
                return SweepResult(study, store.uri, [], dashboard_url, interrupted=True, unfinished=unfinished)
            done += plan
            if study.search and label != "final":
                stored = store.read("trials")
                phases.append(("final", with_stored_ids(plan_finals(study, stored, store.read("epochs")), stored)))
        if measurements is not None:
            measurements.plan()
            outcome = measurements.finish()
            if outcome.failed:
                print(outcome.summary(), file=sys.stderr)
        trials = store.read("trials")
        catch_up(tracking, {t.trial_id: t for t in done}, trials, store.read("sharpness"))  # a killed driver's too
    finally:  # every tracker's runs end with the driver run, however it ended
        tracking.close()
    rows = trials[trials["trial_id"].isin([t.trial_id for t in done])].to_dict("records")
    from analysis.report import ReportError, write_report

    report = None
    try:
        # A study on object storage keeps its report there too (a `ray job submit` driver's folder is temporary).
        out = join(study_root(study), "report.html") if "://" in study.storage else None
        report = write_report(store.uri, out) if rows else None
    except ReportError as error:
        print(f"report: not written: {error}", file=sys.stderr)
    return SweepResult(
        study, store.uri, rows, dashboard_url, str(report) if report else None, tracking=tuple(tracking.summary())
    )


def restore_epoch_rows(study: StudyConfig, store: ResultsStore, trial_id: str) -> None:
    """A finished trial whose epochs file cannot be read gets its rows back from the history its newest
    checkpoint holds; where no checkpoint holds them all, its trial row is set aside too (kept as
    `<id>.parquet.superseded`), so that it trains again and its rows come back from training. A resume
    never ends with fewer rows than it began with. (An unfinished trial's rows come back as it continues.)"""
    from trainables.ray_train import TrialFiles

    trials = store.read("trials", trial_id) if trial_id in store.keys("trials") else None
    if trials is None or trials.empty:
        return
    row = trials.iloc[0]
    spec = TrialSpec.from_dict(json.loads(row["spec"]))
    epochs = int(row["epochs_completed"] or 0)
    if TrialFiles(spec, study_root(study)).restore_epochs(epochs):
        print(f"{trial_id}: its {epochs} epoch rows restored from its checkpoint", flush=True)
        return
    kept = store.set_aside(join(store.table_dir("trials"), f"{trial_id}.parquet"), "superseded")
    print(f"{trial_id}: no checkpoint holds its {epochs} epochs; it trains again (its row kept as {kept})", flush=True)


@dataclass(frozen=True)
class TrainingRun:
    """One Tune run of a study: which trials, on what, under which driver run, measured by whom."""

    label: str  # what one trial of it is called: "trial", "search sample", "final"
    plan: list[TrialSpec]
    use_gpu: bool
    fits: int  # trials that fit on the cluster at once
    generation: int = 0  # the driver run's (analysis.store.begin_run)
    scheduler: Any = None  # ASHA for a search's samples
    measurements: Measurements | None = None
    tracking: Tracking | None = None  # TensorBoard, MLflow, W&B (study/tracking.py)


def continued_from(root: str, todo: list[TrialSpec]) -> list[str]:
    """One line per trial to run that has a checkpoint: the epoch it continues after (its newest checkpoint
    file; one that proves unreadable is skipped for the one before, which the trial says)."""
    from trainables.checkpoint import epoch_files

    lines = []
    for t in todo:
        saved = epoch_files(join(root, "checkpoints", t.trial_id))
        if saved:
            lines.append(f"  {t.trial_id}: continues after epoch {max(saved)}/{t.epochs}")
    return lines


def run_trials(study: StudyConfig, store: ResultsStore, run: TrainingRun, prov: dict[str, Any], verbose: bool) -> bool:
    """One Tune run over the unfinished trials of `run.plan`; False when a Ctrl-C stopped it."""
    import ray
    import ray.tune

    from trainables.ray_train import tune_trial

    label, plan, use_gpu, fits, generation = run.label, run.plan, run.use_gpu, run.fits, run.generation
    concurrency = min(study.resources.max_concurrent_trials or fits, fits, max(1, len(plan)))
    finished = store.finished_trials()
    todo = [t for t in plan if t.trial_id not in finished]
    print(
        f"{study.name}: {counted(len(plan), label)}, {len(plan) - len(todo)} already finished, "
        f"{len(todo)} to run, up to {concurrency} at a time{' on GPUs' if use_gpu else ''}",
        flush=True,
    )
    for line in continued_from(study_root(study), todo):
        print(line, flush=True)
    if not todo:
        return True
    if study.resources.workers == 1:
        trial_resources = worker_bundle(study, use_gpu)
    elif ray.cluster_resources().get(TRIAL_RESOURCE, 0) > 0:
        trial_resources = {"CPU": 0.0, TRIAL_RESOURCE: 1.0}
    else:  # a cluster started without our custom resource: the trial takes a sliver of a CPU
        trial_resources = {"CPU": 0.01}
    # Each unfinished trial continues from its own newest checkpoint: resuming does not depend on
    # Tune's experiment state, which a killed driver may not have saved.
    configs = [trial_config(study, t, use_gpu, prov, generation) for t in todo]
    # A new Tune run per attempt: nothing of an earlier one is overwritten.
    run_name = "run-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    progress = make_progress_callback(
        store, todo, prov, run.measurements, measurement_slots(study, use_gpu), concurrency, run.tracking
    )
    tuner = ray.tune.Tuner(
        ray.tune.with_resources(tune_trial, trial_resources),
        param_space={"trial": ray.tune.grid_search(configs)},
        tune_config=ray.tune.TuneConfig(
            max_concurrent_trials=concurrency,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
            scheduler=run.scheduler,
            # A finished trial's process, torch already imported, starts the next one (start-up 2.0 -> 0.9 s here).
            reuse_actors=True,
        ),
        run_config=ray.tune.RunConfig(
            name=run_name,
            storage_path=join(study_root(study), "tune"),
            callbacks=[progress, no_tune_tensorboard()],
            failure_config=ray.tune.FailureConfig(max_failures=study.resources.max_failures),
            verbose=1 if verbose else 0,  # Tune's own tables only when asked (--verbose)
        ),
    )
    try:
        with quiet_tune(verbose):
            return fit_unless_interrupted(tuner)
    finally:  # the ticker and the TensorBoard writers end with the fit, however it ended
        progress.on_experiment_end([])


def no_tune_tensorboard() -> Any:
    """Stands in for Tune's TensorBoard logger, which Tune adds unless one is given: its steps are Tune
    iterations, which start again at 1 on a resume. The driver writes TensorBoard by epoch instead
    (study/tensorboard.py)."""
    from ray.tune.logger import TBXLoggerCallback

    class NoTuneTensorBoard(TBXLoggerCallback):
        def __init__(self) -> None:  # no SummaryWriter: nothing is written
            self._trial_writer = {}
            self._trial_result = {}

        def log_trial_start(self, trial: Any) -> None:
            pass

        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            pass

        def log_trial_end(self, trial: Any, failed: bool = False) -> None:
            pass

    return NoTuneTensorBoard()


class _NoRestoreHint(logging.Filter):
    """Tune's 'Resume experiment with: Tuner.restore(...)' is not how a study continues (run_sweep --resume
    is); its 'Failed to fetch metrics ... FileNotFoundError' after a Ctrl-C before any trial reported
    is about Tune's own result files, which the study never reads (its rows are in the store); its 'Stop
    signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune' comes before the study's own 'stopped'
    line, which says how to continue."""

    LEFT_OUT = ("Tuner.restore", "Failed to fetch metrics", "Stop signal received")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(said in message for said in self.LEFT_OUT)


class _NotActionable(logging.Filter):
    """Tune's 'Processing trial results took 0.7 s, which may be a performance bottleneck. Please consider
    reporting results less frequently': a trial reports once an epoch, and the time is the driver's own
    writing of the study's rows and trackers; nothing a user can act on (--verbose shows it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "may be a performance bottleneck" not in record.getMessage()


@contextlib.contextmanager
def quiet_tune(verbose: bool) -> Iterator[None]:
    """Tune's console output off unless asked: its tables, experiment box, TensorBoard hint into Ray's
    session folder and INFO lines (the study prints its own progress). Tune's legacy engine is the one
    that honours verbose=0 fully; RAY_AIR_NEW_OUTPUT selects it for this fit only."""
    if verbose:
        yield
        return
    tune_logger, level = logging.getLogger("ray.tune"), logging.getLogger("ray.tune").level
    slow_logger, not_actionable = logging.getLogger("ray.tune.utils.util"), _NotActionable()  # warn_if_slow's
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    tune_logger.setLevel(logging.WARNING)
    slow_logger.addFilter(not_actionable)
    try:
        yield
    finally:
        tune_logger.setLevel(level)
        slow_logger.removeFilter(not_actionable)
        if previous is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous


def fit_unless_interrupted(tuner: Any) -> bool:
    """Run the Tuner; False when a Ctrl-C stopped it. Tune stops at the first SIGINT and puts back the
    handler it found, ours: a second Ctrl-C then goes to the handler installed before (the CLI's, which
    exits at once), else raises KeyboardInterrupt. Raising is only a fallback: Tune's clean-up may be
    running a finalizer then, which swallows the exception and prints it as 'Exception ignored'."""
    if threading.current_thread() is not threading.main_thread():  # signals belong to the main thread
        tuner.fit()
        return True
    previous = signal.getsignal(signal.SIGINT)

    def second_interrupt(signum: int, frame: Any) -> None:
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, frame)
        raise KeyboardInterrupt

    # filters act on the logger a record starts at, not on its parents: each logger gets it
    loggers = [logging.getLogger(n) for n in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis")]
    hint = _NoRestoreHint()
    signal.signal(signal.SIGINT, second_interrupt)
    for tune_logger in loggers:
        tune_logger.addFilter(hint)
    try:
        tuner.fit()
    finally:
        interrupted = signal.getsignal(signal.SIGINT) is second_interrupt
        signal.signal(signal.SIGINT, previous)
        for tune_logger in loggers:
            tune_logger.removeFilter(hint)
    return not interrupted


def measurement_slots(study: StudyConfig, use_gpu: bool) -> float:
    """What one trial holds in measurement slots (one per GPU on a GPU cluster, else one per CPU)."""
    import ray

    workers = study.resources.workers
    if slot_resource(ray.cluster_resources()) == "GPU":
        return workers * study.resources.gpus_per_worker if use_gpu else 0.0
    return workers * study.resources.cpus_per_worker


def study_has_measurements(study: StudyConfig) -> bool:
    m = study.measure
    return any(getattr(m, f.name) is not None for f in dataclasses.fields(m))


def check_data(study: StudyConfig) -> str | None:
    """Load the data once on the driver before any Ray work: a missing root, a failed download (once, not
    per trial and retry) or a corrupt archive or image is one line and exit 2; downloads and decodes
    are then cached for the trials on this machine. Returns the data's content fingerprint (None: data
    defined by the code, synthetic, or not on this machine)."""
    if study.data.dataset in FILE_DATASETS and "://" not in study.data.root:
        data = load_dataset(
            study.data.dataset,
            local_path(study.data.root),
            train_subset=study.data.train_subset,
            test_subset=study.data.test_subset,
        )
        if data.changed:  # said once, by the driver: the model sees 32x32 RGB images only
            print(f"data: {study.data.root}: {data.changed}", flush=True)
        too_big = [b for b in study.sweep.batch_size if b > len(data.train)]
        if too_big:
            raise DataError(
                f"sweep.batch_size: {too_big} exceed the {len(data.train)} training images of "
                f"{study.data.root}; lower the batch sizes or use more images"
            )
        return data.fingerprint()
    return None


FILE_DATASETS = ("cifar10", "cifar100", "imagefolder")  # what check_data loads on the driver (synthetic: no files)
