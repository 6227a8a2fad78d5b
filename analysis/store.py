"""The Parquet results store: `<storage>/<study>/results/<table>/<key>.parquet`.

One file per trial or measurement job, written under a hidden temporary name and then moved into
place, so a crash never leaves half a file that readers pick up (pyarrow skips names starting with
'.') and a re-run replaces a file instead of adding rows. Local paths and URIs (s3://, gs://) go
through the same pyarrow filesystem. Each table has a fixed schema, so `pandas.read_parquet(folder)`
reads a table whole.
"""

from __future__ import annotations

import io
import os
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

F64, I64, STR, BOOL = pa.float64(), pa.int64(), pa.string(), pa.bool_()

TRIAL_PARAMS = [
    ("trial_id", STR),
    ("study", STR),
    ("dataset", STR),
    ("model", STR),
    ("width", F64),
    ("augment", BOOL),
    ("train_subset", I64),
    ("batch_size", I64),
    ("mixup_alpha", F64),
    ("augmentation", STR),
    ("augmentation_alpha", F64),
    ("cutout_size", I64),
    ("lr_scaling", STR),
    ("base_lr", F64),
    ("base_batch_size", I64),
    ("peak_lr", F64),
    ("momentum", F64),
    ("nesterov", BOOL),
    ("weight_decay", F64),
    ("epochs", I64),
    ("warmup_epochs", F64),
    ("decay", STR),
    ("seed", I64),
    ("workers", I64),
    ("micro_batch", I64),
    ("accumulation_steps", I64),
    ("bn_batch_size", I64),
]
EPOCH_METRICS = [
    ("epoch", I64),
    ("step", I64),
    ("lr", F64),
    ("train_loss", F64),
    ("clean_train_loss", F64),
    ("clean_train_acc", F64),
    ("test_loss", F64),
    ("test_acc", F64),
    ("epoch_time_s", F64),
    ("images_per_s", F64),
    ("grad_norm", F64),
    ("local_grad_sq", F64),
    ("grad_sq", F64),
    ("param_norm", F64),
    ("diverged", BOOL),
    ("noise_small_batch", F64),
    ("noise_small_grad_sq", F64),
    ("noise_big_batch", F64),
    ("noise_big_grad_sq", F64),
    ("noise_scale", F64),
    ("noise_population", I64),
    ("noise_units", STR),
    ("mfu", F64),
    ("checkpoint", STR),
]
SCHEMAS: dict[str, pa.Schema] = {
    "trials": pa.schema(
        TRIAL_PARAMS
        + [
            ("status", STR),
            ("error", STR),
            ("epochs_completed", I64),
            ("steps", I64),
            ("final_train_loss", F64),
            ("final_clean_train_loss", F64),
            ("final_clean_train_acc", F64),
            ("final_test_loss", F64),
            ("final_test_acc", F64),
            ("best_test_acc", F64),
            ("best_epoch", I64),
            ("gap_acc", F64),
            ("gap_loss", F64),
            ("train_time_s", F64),
            ("images_per_s", F64),
            ("mfu", F64),
            ("startup_s", F64),
            ("checkpoint", STR),
            ("git_revision", STR),
            ("torch_version", STR),
            ("ray_version", STR),
            ("python_version", STR),
            ("device", STR),
            ("hosts", I64),
            ("config", STR),
            ("spec", STR),
            ("finished_at", STR),
        ]
    ),
    "epochs": pa.schema([("trial_id", STR)] + EPOCH_METRICS),
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
        ]
    ),
    # The Hessian eigenvalue density of a trial on a grid (stochastic Lanczos quadrature); settings
    # hold the quadrature's nodes and weights per run.
    "spectrum": pa.schema([("trial_id", STR), ("eigenvalue", F64), ("density", F64), ("settings", STR)]),
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
        ]
    ),
    # A measurement job that failed: its key, what it measures and the last line of its error. Removed
    # when the job later succeeds.
    "measure_errors": pa.schema(
        [("job", STR), ("table", STR), ("kind", STR), ("trials", STR), ("error", STR), ("failed_at", STR)]
    ),
}
FINAL_STATUSES = ("completed", "diverged")  # a trial in one of these is never trained again


def resolve(uri: str, filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI such as s3://bucket/prefix."""
    if filesystem is not None:
        return filesystem, uri
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


@dataclass
class ResultsStore:
    """The results folder of one study. `uri` is `<storage>/<study>/results` or anything pyarrow can open."""

    uri: str
    filesystem: pafs.FileSystem | None = None

    def __post_init__(self) -> None:
        self.fs, self.root = resolve(self.uri, self.filesystem)

    @classmethod
    def for_study(cls, storage: str, study: str, filesystem: pafs.FileSystem | None = None) -> "ResultsStore":
        return cls(join(storage, study, "results"), filesystem)

    def table_dir(self, table: str) -> str:
        return join(self.root, table)

    def write(self, table: str, key: str, rows: Iterable[dict[str, Any]] | pd.DataFrame) -> str:
        """Replace `<table>/<key>.parquet` with `rows`, atomically, cast to the table's schema."""
        schema = SCHEMAS[table]
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
        folder = self.table_dir(table)
        self.fs.create_dir(folder, recursive=True)
        final = join(folder, f"{key}.parquet")
        partial = join(folder, f".{key}.{uuid.uuid4().hex}.tmp")
        buffer = io.BytesIO()
        pq.write_table(arrow, buffer)
        with self.fs.open_output_stream(partial) as out:
            out.write(buffer.getvalue())
        self.fs.move(partial, final)  # a rename on local disks; readers skip the hidden partial name
        return final

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
                frames.append(pq.read_table(path, filesystem=self.fs).to_pandas())
        if not frames:
            return SCHEMAS[table].empty_table().to_pandas()
        return pd.concat(frames, ignore_index=True)

    def is_store(self) -> bool:
        info = self.fs.get_file_info(self.root)
        return info.type == pafs.FileType.Directory and bool(self.keys("trials") | self.keys("epochs"))

    def finished_trials(self) -> set[str]:
        trials = self.read("trials")
        return set(trials.loc[trials["status"].isin(FINAL_STATUSES), "trial_id"])
