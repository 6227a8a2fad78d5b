"""A study's results as a handful of CSV files: small enough to commit beside a paper or a README, and read
back by every command that reads a store (analysis.load.load_export), so the report and the findings are rebuilt from
them alone.

    python -m analysis.export STUDY_DIR OUT_DIR

OUT_DIR gets one CSV per table that holds rows (trials, epochs, sharpness, landscape, ...) and
`record.json`: the trial record's roles and legends (what the Parquet files' schemas carry), and where the
export came from. Each trial row keeps its conditions and provenance (git revision, device, versions,
times); the two columns that repeat the whole study file per trial (`config`, `spec`) are kept once, in
`record.json`, and the checkpoint paths (files that stay behind) are left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from analysis.load import TABLES
from analysis.store import EXPORT_RECORD, ResultsStore, is_export

PER_TRIAL_JSON = ("config", "spec")  # the study file and the trial record, once per trial in the store
LEFT_OUT = ("checkpoint",)  # paths of files that do not travel with the export


def export(study_dir: str, out: Path) -> list[Path]:
    """Write the CSV export of the store at `study_dir` (a study's folder or its results/) into `out`."""

    store = ResultsStore.found(study_dir)
    if store is None or is_export(store.uri):
        raise ValueError(f"{study_dir} holds no results (no trials/ or epochs/ Parquet files)")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    raw_trials = store.read("trials")
    for table in TABLES:  # as stored: the report labels the trials again when it reads them back
        frame = raw_trials if table == "trials" else store.read(table)
        if frame.empty:
            continue
        frame = frame.drop(columns=[c for c in (*PER_TRIAL_JSON, *LEFT_OUT) if c in frame])
        path = out / f"{table}.csv"
        frame.to_csv(path, index=False)
        written.append(path)
    first = raw_trials.iloc[0] if len(raw_trials) else {}
    record = {
        "exported_from": store.uri,
        "roles": {k: list(v) for k, v in store.roles("trials").items()},
        "legends": store.legends("trials"),
        **{column: first[column] for column in PER_TRIAL_JSON if column in raw_trials},
    }
    (out / EXPORT_RECORD).write_text(json.dumps(record, indent=1, default=str) + "\n")
    return [*written, out / EXPORT_RECORD]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("study_dir", help="a study's folder, <storage>/<name>, or its results/ (path or URI)")
    parser.add_argument("out_dir", help="the folder to write the CSV files and record.json into")
    args = parser.parse_args(argv)
    try:
        paths = export(args.study_dir, Path(args.out_dir))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in paths)
    print(f"exported {len(paths)} files, {size / 1024:.0f} KB, to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
