"""Read a study's results store (local path or URI) into DataFrames; a study still running is fine."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.store import EXPORT_RECORD, SCHEMAS, ResultsStore, is_export  # pandas + pyarrow: no torch, no ray
from analysis.summarize import stored_config

TABLES = ("trials", "epochs", "sharpness", "landscape", "spectrum", "trajectory", "measure_errors")


@dataclass(frozen=True)
class StudyResults:
    root: str
    trials: pd.DataFrame
    epochs: pd.DataFrame
    sharpness: pd.DataFrame
    landscape: pd.DataFrame
    spectrum: pd.DataFrame
    trajectory: pd.DataFrame
    measure_errors: pd.DataFrame
    # trials column -> (role, shown) as the trial record defines them (analysis.store.ResultsStore.roles)
    trial_roles: dict[str, tuple[str, bool]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # files skipped: path -> why

    @property
    def study(self) -> str:
        names = list(dict.fromkeys(self.trials["study"].dropna().astype(str))) if len(self.trials) else []
        return " + ".join(names) if names else "(no trials yet)"


def load_export(folder: str) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The tables of a CSV export (missing ones empty) and its record.json; the study file goes back into
    every trial row's `config`, as the store holds it."""
    record = json.loads((Path(folder) / EXPORT_RECORD).read_text())
    tables = {}
    for table in TABLES:
        path = Path(folder) / f"{table}.csv"
        if path.is_file():
            tables[table] = pd.read_csv(path)
        else:  # as the store gives a missing table: empty, with its columns
            tables[table] = SCHEMAS[table].empty_table().to_pandas() if table in SCHEMAS else pd.DataFrame()
    if "config" in record and len(tables["trials"]):
        tables["trials"]["config"] = record["config"]
    return tables, record


def load_results(results_dir: str) -> StudyResults:
    """Every table of the store (or of a CSV export of one: analysis/export.py); a missing table comes back
    empty with its columns."""
    if is_export(results_dir):
        tables, record = load_export(results_dir)
        tables["trials"] = with_condition_labels(tables["trials"], record.get("legends"))
        roles = {k: (v[0], bool(v[1])) for k, v in record.get("roles", {}).items()}
        return StudyResults(results_dir, **tables, trial_roles=roles)
    store = ResultsStore(results_dir)
    tables = {name: store.read(name) for name in TABLES}
    tables["trials"] = with_condition_labels(tables["trials"], store.legends("trials"))
    # Trials still training have epoch rows but no trial row yet: keep their epochs visible.
    return StudyResults(store.root, **tables, trial_roles=store.roles("trials"), unreadable=dict(store.unreadable))


# How stores written before the record named its compared keys (schema metadata "legend") label them.
LEGACY_LEGENDS: dict[str, dict[str, Any]] = {
    "model": {"format": "{value}", "values": []},
    "optimizer": {"format": "{value}", "values": []},
    "ghost_batch": {"format": "ghost BN {value}", "values": [[None, "plain BN"]]},
    "budget": {"format": None, "values": [["steps", "train longer"], ["epochs", "fixed epochs"]]},
    "label_smoothing": {"format": "label smoothing {value}", "values": []},
}


def value_text(value: Any) -> str:
    """As trainables.trial.value_text writes it: 0.1, 128 for 128.0 (Parquet reads nullable ints as floats),
    null for None and NaN."""
    if value is None or (isinstance(value, float) and value != value):
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def condition_part(key: str, value: Any, legend: dict[str, Any]) -> str:
    """How a legend names one value of a compared key (its record's `legend` metadata)."""
    for known, text in legend.get("values", []):
        if value_text(value) == value_text(known) or value == known:
            return text
    return (legend.get("format") or "{key} {value}").format(key=key, value=value_text(value))


def searched_keys(trials: pd.DataFrame) -> list[str]:
    """The keys a study's search tuned (from its resolved config): among its finals each is the group's
    winner, a result rather than a condition."""
    space = (stored_config(trials).get("search") or {}).get("space") or {}
    return [key for key, dist in space.items() if dist is not None]


def with_condition_labels(trials: pd.DataFrame, legends: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """`augmentation_label` prefixed by the values of every compared key that varies in the study
    ('resnet20, lars, ghost BN 128: mixup a=1'), and `label_within_model`, the same without the model
    (for the by-model views, where the model is the panel). The compared keys are the record's
    (`legends`, from the store: every swept key but seed and those drawn otherwise), less the keys a
    search tuned."""
    if "augmentation_label" not in trials or trials.empty:
        return trials
    legends = LEGACY_LEGENDS if legends is None else legends
    searched = searched_keys(trials)
    varying = [
        k for k in legends if k in trials and k not in searched and trials[k].map(value_text).nunique(dropna=False) > 1
    ]
    if not varying:
        return trials
    parts = {k: trials[k].map(lambda v, k=k: condition_part(k, v, legends[k])) for k in varying}

    def joined(keys: list[str]) -> pd.Series:
        if not keys:
            return trials["augmentation_label"].astype(str)
        prefix = parts[keys[0]]
        for k in keys[1:]:
            prefix = prefix + ", " + parts[k]
        return prefix + ": " + trials["augmentation_label"].astype(str)

    return trials.assign(
        augmentation_label=joined(varying), label_within_model=joined([k for k in varying if k != "model"])
    )


# Columns that hold a trial id, per table: prefixed with the study when several studies are compared.
TRIAL_ID_COLUMNS = {
    "trials": ("trial_id",),
    "epochs": ("trial_id",),
    "sharpness": ("trial_id",),
    "landscape": ("trial_a", "trial_b"),
    "spectrum": ("trial_id",),
    "trajectory": ("trial_id",),
    "measure_errors": (),
}


def load_studies(results_dirs: list[str]) -> StudyResults:
    """Several studies as one (for example two runs of a study file on different devices): each trial id
    becomes `<study>/<trial_id>` and each augmentation label `<study>: <label>`, so figures draw every
    study's curves apart and label them by study. One folder is simply `load_results`."""
    if len(results_dirs) == 1:
        return load_results(results_dirs[0])
    parts = [load_results(d) for d in results_dirs]
    names: list[str] = []
    for part in parts:  # a study name seen twice (the same study file run twice) gets #2, #3, ...
        name = part.study
        names.append(name if name not in names else f"{name}#{names.count(name) + 1}")
    tables = {}
    for table, id_columns in TRIAL_ID_COLUMNS.items():
        frames = []
        for name, part in zip(names, parts):
            frame = getattr(part, table).copy()
            for column in id_columns:
                frame[column] = frame[column].map(lambda t, n=name: f"{n}/{t}" if isinstance(t, str) else t)
            if table == "trials" and len(frame):
                frame["study"] = name
                if "augmentation_label" in frame:
                    frame["augmentation_label"] = name + ": " + frame["augmentation_label"].astype(str)
            frames.append(frame)
        tables[table] = pd.concat(frames, ignore_index=True)
    return StudyResults(
        " + ".join(p.root for p in parts),
        **tables,
        trial_roles=parts[0].trial_roles,
        unreadable={k: v for p in parts for k, v in p.unreadable.items()},
    )
