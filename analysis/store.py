"""The Parquet results store: `<storage>/<study>/results/<table>/<key>.parquet`.

One file per trial or measurement job, written atomically (a local file under a hidden temporary name,
then renamed; an object in one upload), so a crash never leaves half a file that readers pick up and a
re-run replaces a file instead of adding rows. Local paths and URIs (s3://, gs://) go
through the same pyarrow filesystem. Each table has a fixed schema, so `pandas.read_parquet(folder)`
reads a table whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import io
import json
import math
import os
import sys
import types
import typing
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

F64, I64, STR, BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()


def arrow_type(hint: Any) -> pa.DataType:
    """The Arrow type of a record field's annotation: int, float, str, bool, X | None, tuple[int, ...]."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return arrow_type(args[0])
    if typing.get_origin(hint) is tuple:
        return pa.list_(arrow_type(args[0]))
    return {int: I64, float: F64, str: STR, bool: BOOL}[hint]


def schema_of(record: type, *, key: list[pa.Field] | None = None, extra: list[pa.Field] | None = None) -> pa.Schema:
    """A table schema from a record dataclass: `key` columns, one per field (its role in the field's
    metadata, for readers such as the report), then `extra` columns. The writers of `trials/` and
    `epochs/` pass the trial side's records (trainables/trial.py) here; analysis never imports them."""
    hints = typing.get_type_hints(record)
    fields = [
        pa.field(f.name, arrow_type(hints[f.name]), metadata=column_metadata(f)) for f in dataclasses.fields(record)
    ]
    names = {f.name for f in fields}
    return pa.schema([k for k in key or [] if k.name not in names] + fields + list(extra or []))


def column_metadata(f: dataclasses.Field) -> dict[str, str]:
    """A record field's role and whether tables show it; for a compared key (a swept field with a legend,
    trainables/trial.py), how legends name its values, as JSON {"format": ..., "values": [[value, text]]}."""
    meta = {"role": str(f.metadata.get("role", "")), "shown": "1" if f.metadata.get("shown") else "0"}
    legend, values = f.metadata.get("legend"), f.metadata.get("legend_values") or {}
    if legend is not None or values:
        meta["legend"] = json.dumps({"format": legend, "values": [[v, text] for v, text in values.items()]})
    return meta


# What a trial's row says besides its conditions (the TrialSpec fields): the outcome, its summary over
# the epoch history, timing and the provenance of every number.
TRIAL_OUTCOME = [
    pa.field("status", STR),  # completed | diverged | failed
    pa.field("error", STR),  # a diverged trial's reason, a failed one's last error line
    pa.field("epochs_completed", I64),
    pa.field("steps", I64),
    pa.field("final_train_loss", F64),
    pa.field("final_clean_train_loss", F64),
    pa.field("final_clean_train_acc", F64),
    pa.field("final_test_loss", F64),
    pa.field("final_test_acc", F64),
    pa.field("best_test_acc", F64),
    pa.field("best_epoch", I64),
    pa.field("gap_acc", F64),  # clean train accuracy - test accuracy, last evaluated epoch
    pa.field("gap_loss", F64),  # test loss - clean train loss
    pa.field("train_time_s", F64),  # training time of every epoch, without evaluation
    pa.field("images_per_s", F64),  # training images / train_time_s: the same epochs
    pa.field("steady_images_per_s", F64),  # the same without the first epoch (compilation, warm-up)
    pa.field("mfu", F64),  # mean over the epochs after the first
    pa.field("startup_s", F64),  # from the trial's start to its first optimizer step, made of:
    pa.field("workers_ready_s", F64),  # multi-worker: to the workers running (placement, start, process group)
    pa.field("data_ready_s", F64),  # to the data on the device and the model built (then the first step)
    pa.field("wall_time_s", F64),  # from the trial's start to its row: start-up, epochs, evaluation, writes
    pa.field("checkpoint", STR),  # the last epoch's checkpoint
    pa.field("git_revision", STR),
    pa.field("torch_version", STR),
    pa.field("ray_version", STR),
    pa.field("python_version", STR),
    pa.field("device", STR),
    pa.field("host", STR),  # where rank 0 ran: its host name and Ray node id
    pa.field("node_id", STR),
    pa.field("hosts", I64),  # distinct Ray nodes of the trial's workers
    pa.field("config", STR),  # the study file, resolved, as JSON
    pa.field("spec", STR),  # the trial's record as JSON, exactly as the trial received it
    pa.field("finished_at", pa.timestamp("s", tz="UTC")),
]
TRIAL_KEY = [pa.field("trial_id", STR)]
# Columns every `trials/` and `epochs/` file has, whatever the record: what an empty table reads as.
BASE_COLUMNS = {"trials": ["trial_id", "study", *(f.name for f in TRIAL_OUTCOME)], "epochs": ["trial_id", "epoch"]}


def trial_schema(record: type) -> pa.Schema:
    return schema_of(record, key=TRIAL_KEY, extra=TRIAL_OUTCOME)


def epoch_schema(record: type) -> pa.Schema:
    return schema_of(record, key=TRIAL_KEY)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def trial_row(
    spec: dict[str, Any], history: list[dict[str, Any]], outcome: dict[str, Any], provenance: dict[str, Any]
) -> dict[str, Any]:
    """One `trials/` row: the record's fields, the outcome (status, error, steps, startup_s, device,
    hosts, checkpoint), the history summarized (final and best metrics, the gap, timing) and provenance."""
    evaluated = [m for m in history if _finite(m.get("test_acc"))]
    last = evaluated[-1] if evaluated else {}
    best = max(evaluated, key=lambda m: m["test_acc"]) if evaluated else {}
    timed = history[1:] if len(history) > 1 else history  # the first epoch includes warm-up

    def rate(epochs: list[dict[str, Any]]) -> float | None:
        seconds = sum(m["epoch_time_s"] for m in epochs)
        return sum(m["images_per_s"] * m["epoch_time_s"] for m in epochs) / seconds if seconds > 0 else None

    mfus = [m["mfu"] for m in timed if _finite(m.get("mfu"))]
    return {
        **spec,
        "milestones": list(spec["milestones"]),
        **provenance,
        "spec": json.dumps({**spec, "milestones": list(spec["milestones"])}),
        "epochs_completed": len(history),
        "steps": history[-1]["step"] if history else 0,
        **outcome,
        "final_train_loss": history[-1]["train_loss"] if history else None,
        "final_clean_train_loss": last.get("clean_train_loss"),
        "final_clean_train_acc": last.get("clean_train_acc"),
        "final_test_loss": last.get("test_loss"),
        "final_test_acc": last.get("test_acc"),
        "best_test_acc": best.get("test_acc"),
        "best_epoch": best.get("epoch"),
        "gap_acc": last["clean_train_acc"] - last["test_acc"] if last else None,
        "gap_loss": last["test_loss"] - last["clean_train_loss"] if last else None,
        "train_time_s": sum(m["epoch_time_s"] for m in history) if history else None,
        "images_per_s": rate(history),
        "steady_images_per_s": rate(timed),
        "mfu": sum(mfus) / len(mfus) if mfus else None,
        "finished_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0),
    }


# Where a measurement row was computed (a landscape's points may come from several nodes), when it was
# written, and which training of its trials it measured (trial id -> that trial row's finished_at, JSON):
# a trial trained again makes the measurement stale (study/measure.py sets it aside and measures again).
WHERE = [("host", STR), ("node_id", STR), ("measured_at", pa.timestamp("s", tz="UTC")), ("trained_at", STR)]

# The measurement tables' schemas; `trials/` and `epochs/` take theirs from the trial record (above).
SCHEMAS: dict[str, pa.Schema] = {
    # ci_low/ci_high: a confidence interval where the measure is an estimate with one (its level and
    # method in settings); settings also name the algorithm and batch that produced the value.
    "sharpness": pa.schema(
        [
            ("trial_id", STR),
            ("measure", STR),
            ("value", F64),
            ("n_samples", I64),
            ("ci_low", F64),
            ("ci_high", F64),
            ("settings", STR),
            ("device", STR),
            # How the report names the value (the measure's plug-in says so, study/measures/): panel title,
            # axis title with units, and whether "lower" or "higher" is flatter ("" where it ranks nothing).
            ("title", STR),
            ("unit", STR),
            ("flatter", STR),
            # whether the value survives rescaling a layer before a BatchNorm ("invariant: ..." / "changes: ...")
            ("invariance", STR),
            *WHERE,
        ]
    ),
    "landscape": pa.schema(
        [
            ("job", STR),
            ("kind", STR),
            ("trial_a", STR),
            ("trial_b", STR),
            ("x", F64),
            ("y", F64),
            ("split", STR),
            ("loss", F64),
            ("acc", F64),
            # interp1d: how BatchNorm statistics were set (interpolated | recomputed),
            # how many negative running variances were clamped to 0, and a note
            # saying why whenever a loss is not finite.
            ("bn", STR),
            ("bn_clamped", I64),
            ("note", STR),
            *WHERE,
        ]
    ),
    # The Hessian eigenvalue density of a trial on a grid (stochastic Lanczos quadrature); settings
    # hold the quadrature's nodes and weights per run.
    "spectrum": pa.schema([("trial_id", STR), ("eigenvalue", F64), ("density", F64), ("settings", STR), *WHERE]),
    # An optimization trajectory on its PCA plane: `path` rows (one per kept epoch: its coordinates and
    # its own loss) and `surface` rows (the loss at theta_final + x d1 + y d2, BN statistics of the final).
    "trajectory": pa.schema(
        [
            ("trial_id", STR),
            ("kind", STR),
            ("epoch", I64),
            ("x", F64),
            ("y", F64),
            ("split", STR),
            ("loss", F64),
            ("acc", F64),
            ("explained_x", F64),
            ("explained_y", F64),
            ("settings", STR),
            *WHERE,
        ]
    ),
    # A measurement job that failed: its key, what it measures and the last line of its error. Removed
    # when the job later succeeds.
    "measure_errors": pa.schema(
        [("job", STR), ("table", STR), ("kind", STR), ("trials", STR), ("error", STR), ("failed_at", STR)]
    ),
}
FINAL_STATUSES = ("completed", "diverged", "stopped")  # never trained again (stopped: early, by a search's ASHA)


def resolve(uri: str, filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI such as s3://bucket/prefix."""
    if filesystem is not None:
        return filesystem, uri
    if "://" in uri:
        from analysis.remote import retrying

        inner, path = pafs.FileSystem.from_uri(uri)
        return retrying(inner, uri.split("?", 1)[0]), path
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


EXPORT_RECORD = "record.json"  # what marks a folder as a CSV export of a store (analysis/export.py)


def is_export(folder: str) -> bool:
    """Whether `folder` is a CSV export of a store (analysis/export.py), which reads as a store."""
    if "://" in folder:
        return False
    return os.path.isfile(os.path.join(folder, EXPORT_RECORD)) and os.path.isfile(os.path.join(folder, "trials.csv"))


def join(base: str, *parts: str) -> str:
    """`base/part/...` for a local path or a URI; a URI's query (`?region=...`) stays at the end."""
    path, mark, query = base.partition("?") if "://" in base else (base, "", "")
    return "/".join([path.rstrip("/"), *parts]) + mark + query


def parent(uri: str) -> str:
    """The folder holding `uri` (a local path or a URI, its query kept)."""
    path, mark, query = uri.partition("?") if "://" in uri else (uri, "", "")
    return path.rstrip("/").rsplit("/", 1)[0] + mark + query


def disk_full(error: BaseException) -> bool:
    """Whether an error is a full disk (or quota): pyarrow says it in words, Python by errno."""
    text = str(error)
    return getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text or "quota" in text


def write_atomic(path: str, data: bytes, filesystem: pafs.FileSystem | None = None) -> str:
    """Write `data` to `path` (a local path or URI) so that no reader ever sees half a file. Returns `path`.

    On a local disk: under a hidden temporary name beside it, then renamed into place (pyarrow skips names
    starting with '.'). On an object store: one upload of the final object, which appears whole when the
    upload completes (a rename there would be a copy plus a delete: twice the writing, and a temporary
    object every listing shows and a crash leaves behind)."""
    fs, inner = resolve(path, filesystem)
    folder, name = inner.rsplit("/", 1)
    fs.create_dir(folder, recursive=True)
    if fs.type_name != "local":
        with fs.open_output_stream(inner) as out:
            out.write(data)
        return path
    partial = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        with fs.open_output_stream(partial) as out:
            out.write(data)
        fs.move(partial, inner)  # a rename on local disks
    except BaseException:  # a full disk, Ctrl-C: the half-written temporary file must not stay behind
        with contextlib.suppress(OSError):
            fs.delete_file(partial)
        raise
    return path


# Fencing: each driver run of a study takes the next generation (under the study lock), and its trials
# carry it; a trial's writer refuses to write once a newer run has begun, so the processes of a killed
# driver that are still finishing an epoch cannot replace what the resumed run wrote.
GENERATION_FILE = "generation"


class StaleRun(RuntimeError):
    """A newer driver run of the study has begun: this trial's process belongs to an ended one."""


def run_generation(study_root: str) -> int:
    """The generation of the study's newest driver run (0 before the first)."""
    fs, path = resolve(join(study_root, GENERATION_FILE))
    try:
        with fs.open_input_stream(path) as stream:
            return int(stream.read().decode() or 0)
    except (FileNotFoundError, ValueError):
        return 0
    except OSError as error:  # pyarrow says "not found" in words on some filesystems
        if "not found" in str(error).lower() or "no such file" in str(error).lower():
            return 0
        raise


def begin_run(study_root: str) -> int:
    """Take the next generation for a driver run that holds the study lock; returns it."""
    generation = run_generation(study_root) + 1
    write_atomic(join(study_root, GENERATION_FILE), str(generation).encode())
    return generation


def check_generation(study_root: str, generation: int) -> None:
    """Raise StaleRun when a run newer than `generation` has begun (generation 0: unfenced, for tests)."""
    current = run_generation(study_root) if generation else 0
    if current > generation:
        raise StaleRun(f"driver run {generation} of {study_root} has ended: run {current} has begun; not writing")


@dataclass
class ResultsStore:
    """The results folder of one study. `uri` is `<storage>/<study>/results` or anything pyarrow can open."""

    uri: str
    filesystem: pafs.FileSystem | None = None
    # Files that could not be read (path -> why): each is named in one warning line, skipped and left on disk.
    unreadable: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fs, self.root = resolve(self.uri, self.filesystem)

    @classmethod
    def for_study(cls, storage: str, study: str, filesystem: pafs.FileSystem | None = None) -> "ResultsStore":
        return cls(join(storage, study, "results"), filesystem)

    def table_dir(self, table: str) -> str:
        return join(self.root, table)

    def write(
        self, table: str, key: str, rows: Iterable[dict[str, Any]] | pd.DataFrame, schema: pa.Schema | None = None
    ) -> str:
        """Replace `<table>/<key>.parquet` with `rows`, atomically, cast to `schema` (by default the table's)."""
        if schema is None and table not in SCHEMAS:
            raise KeyError(f"{table!r} rows take the trial record's schema: pass trainables.ray_train's")
        schema = schema if schema is not None else SCHEMAS[table]
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        unknown = set(frame.columns) - set(schema.names)
        if unknown:
            raise KeyError(f"columns {sorted(unknown)} are not in the {table!r} schema")
        columns = {
            name: frame[name] if name in frame else pd.Series([None] * len(frame), dtype=object)
            for name in schema.names
        }
        arrow = pa.Table.from_pydict(
            {n: pa.array(list(columns[n]), type=schema.field(n).type, from_pandas=True) for n in schema.names},
            schema=schema,
        )
        buffer = io.BytesIO()
        pq.write_table(arrow, buffer)
        return write_atomic(join(self.table_dir(table), f"{key}.parquet"), buffer.getvalue(), self.fs)

    def remove(self, table: str, key: str) -> None:
        """Delete `<table>/<key>.parquet` if it exists (only for records this store's writers own)."""
        path = join(self.table_dir(table), f"{key}.parquet")
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            self.fs.delete_file(path)

    def keys(self, table: str) -> set[str]:
        selector = pafs.FileSelector(self.table_dir(table), allow_not_found=True)
        return {
            info.base_name[: -len(".parquet")]
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
            and info.base_name.endswith(".parquet")
            and not info.base_name.startswith((".", "_"))
        }

    def read(self, table: str, key: str | None = None) -> pd.DataFrame:
        """One table (or one file of it) as a DataFrame; empty with the schema's columns when absent."""
        keys = [key] if key is not None else sorted(self.keys(table))
        frames = []
        for k in keys:
            path = join(self.table_dir(table), f"{k}.parquet")
            if self.fs.get_file_info(path).type == pafs.FileType.File:
                try:
                    frames.append(pq.read_table(path, filesystem=self.fs).to_pandas())
                except (pa.ArrowException, OSError) as error:  # truncated, overwritten, not Parquet at all
                    self._skip(path, error)
        if not frames:
            if table in SCHEMAS:
                return SCHEMAS[table].empty_table().to_pandas()
            return pd.DataFrame({c: pd.Series(dtype=object) for c in BASE_COLUMNS[table]})
        return pd.concat(frames, ignore_index=True)

    def _skip(self, path: str, error: Exception) -> None:
        if path not in self.unreadable:
            self.unreadable[path] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            print(
                f"warning: {path} cannot be read ({self.unreadable[path]}); skipped and left as it is",
                file=sys.stderr,
                flush=True,
            )

    def set_aside_unreadable(self, table: str) -> list[str]:
        """Rename the unreadable files of `table` to `_<key>.parquet.unreadable` (kept, never deleted), so
        that what writes that key again does not replace them. Returns the new paths."""
        self.read(table)
        moved = []
        for path in [p for p in self.unreadable if p.startswith(self.table_dir(table) + "/")]:
            moved.append(self.set_aside(path, "unreadable"))
            del self.unreadable[path]
        return moved

    def set_aside(self, path: str, why: str) -> str:
        """Keep a file of the store under `_<name>.<why>` beside it: out of every reader's way (pyarrow's
        dataset reading, so pandas.read_parquet of a table folder, skips names starting with '_'; so does
        `keys`), never deleted. Returns the new path."""
        folder, name = path.rsplit("/", 1)
        moved = f"{folder}/_{name}.{why}"
        self.fs.move(path, moved)
        return moved

    def newest_schema(self, table: str) -> pa.Schema | None:
        """The schema of the table's most recently written readable file (None without files): what the
        record that wrote the table says of its columns."""
        infos = [
            info
            for info in self.fs.get_file_info([join(self.table_dir(table), f"{k}.parquet") for k in self.keys(table)])
            if info.type == pafs.FileType.File
        ]
        for info in sorted(infos, key=lambda i: (i.mtime_ns or 0, i.path), reverse=True):
            try:
                return pq.read_schema(info.path, filesystem=self.fs)
            except (pa.ArrowException, OSError):
                continue
        return None

    def roles(self, table: str) -> dict[str, tuple[str, bool]]:
        """column -> (its role in the record that wrote the table: swept, derived, fixed; whether tables show
        it), from the newest file's schema (trainables/trial.py defines them); empty without files."""
        schema = self.newest_schema(table)
        meta = {f.name: f.metadata or {} for f in schema} if schema is not None else {}
        return {name: (m.get(b"role", b"").decode(), m.get(b"shown") == b"1") for name, m in meta.items()}

    def legends(self, table: str) -> dict[str, dict[str, Any]] | None:
        """The compared keys (column -> {"format", "values"}, in the record's order) from the newest file's
        schema; None for files written before the record said so."""
        schema = self.newest_schema(table)
        if schema is None or not any(f.metadata and b"role" in f.metadata for f in schema):
            return None
        legends = {f.name: json.loads(f.metadata[b"legend"]) for f in schema if f.metadata and b"legend" in f.metadata}
        return legends or None

    def is_store(self) -> bool:
        info = self.fs.get_file_info(self.root)
        return info.type == pafs.FileType.Directory and bool(self.keys("trials") | self.keys("epochs"))

    @staticmethod
    def found(location: str) -> ResultsStore | None:
        """The results store at a study's folder (<storage>/<name>) or at its results/ folder itself, so
        every command takes either (path or URI), a CSV export included (analysis.load reads it as a store);
        None where neither holds one."""
        if is_export(location):
            return ResultsStore(location)
        for candidate in (location, join(location, "results")):
            store = ResultsStore(candidate)
            if store.is_store():
                return store
        return None

    def finished_trials(self) -> set[str]:
        trials = self.read("trials")
        return set(trials.loc[trials["status"].isin(FINAL_STATUSES), "trial_id"])
