"""Build one self-contained HTML report from a results store.

    python -m analysis.report RESULTS_DIR [-o report.html] [--target-acc 0.8] [--png DIR]

plotly.js is inlined, so the file opens offline. Figures whose data is absent are left out with a
one-line note. `--png` also writes each figure as a PNG (needs kaleido and a Chromium; optional).
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import importlib.util
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from analysis import figures
from analysis.findings import findings_html, paper_findings
from analysis.load import StudyResults, load_studies
from analysis.store import ResultsStore, write_atomic
from analysis.summarize import default_target
from analysis.words import counted


def build_figures(results: StudyResults, target: float | None = None) -> tuple[list[tuple[str, go.Figure]], list[str]]:
    """(name, figure) for every figure the data supports, and a note for each one it does not."""
    trials, epochs, sharpness, landscape = results.trials, results.epochs, results.sharpness, results.landscape
    shown: list[tuple[str, go.Figure]] = []
    notes: list[str] = []

    def draw(name: str, make: Callable[[], Any]) -> list[Any] | None:
        """Figure `name` (a list of them where `make` gives one) from `make`; one that raises is a note and
        None, and the report is built from the others."""
        try:
            made = make()
        except Exception as error:  # a figure's bug must not cost the reader every other figure
            said = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
            notes.append(f"Figure {name}: could not be drawn ({type(error).__name__}: {said}); the others are here.")
            return None
        if isinstance(made, list):
            return made
        shown.append((name, made))
        return [made]

    if "phase" in trials and (trials["phase"] == "sample").any():
        # A search: its samples have their own figures; everything else is about the finals.
        draw("search", lambda: figures.search_figure(trials, epochs))
        if trials.loc[trials["phase"] == "sample", "base_lr"].nunique() > 1:
            draw("best_lr_vs_batch", lambda: figures.best_lr_figure(trials, epochs))
        trials = trials[trials["phase"] != "sample"]
    completed = trials[trials["status"] == "completed"] if len(trials) else trials
    if len(completed):
        draw("accuracy_gap_vs_batch", lambda: figures.accuracy_and_gap_vs_batch(trials))
    else:
        notes.append("Accuracy and gap against batch size: no completed trial yet.")
    if len(trials) and len(epochs):
        draw("learning_curves", lambda: figures.learning_curves(trials, epochs))
    elif len(trials) and trials["epochs_completed"].fillna(0).sum() > 0:
        notes.append(
            f"Learning curves and steps to target: the trials record {int(trials['epochs_completed'].fillna(0).sum())} "
            "epochs, but no epoch row could be read (results/epochs/ is missing, or every file of it unreadable)."
        )
    else:
        notes.append("Learning curves: no epochs recorded yet.")
    pairs = landscape[landscape["kind"] == "interp1d"][["trial_a", "trial_b"]].drop_duplicates()
    for i, (a, b) in enumerate(pairs.itertuples(index=False)):
        draw(f"interpolation_{i + 1}", lambda a=a, b=b: figures.interpolation_figure(landscape, trials, a, b))
    if pairs.empty:
        notes.append("1-D interpolation: not measured (measure.interpolate) or no matching pair completed.")
    if len(sharpness) and len(trials):
        draw("sharpness_vs_batch", lambda: figures.sharpness_vs_batch(trials, sharpness))
    else:
        notes.append("Sharpness against batch size: no per-trial value measured yet (the study's measure section).")
    if len(completed) and "model" in completed and completed["model"].nunique() > 1:
        draw("by_model", lambda: figures.by_model_figure(trials, sharpness))
    if len(results.spectrum) and len(trials):
        draw("hessian_density", lambda: figures.hessian_density_figure(results.spectrum, trials))
    else:
        notes.append("Hessian eigenvalue density: not measured (measure.hessian.density).")
    paths = sorted(results.trajectory["trial_id"].unique()) if len(results.trajectory) else []
    for i, t in enumerate(paths):
        draw(f"trajectory_{i + 1}", lambda t=t: figures.trajectory_figure(results.trajectory, trials, t))
    if not paths:
        notes.append("Optimization trajectories: not measured (measure.trajectory).")
    slices = (
        draw("random_directions", lambda: figures.random_direction_figures(landscape, trials)) if len(landscape) else []
    )
    shown += [(f"random_directions_{i + 1}", fig) for i, fig in enumerate(slices or [])]
    if slices == []:
        notes.append("Random-direction slices: not measured (measure.random_directions).")
    eigen = figures.HESSIAN_EIGENVECTORS
    along = (
        draw("hessian_directions", lambda: figures.random_direction_figures(landscape, trials, eigen))
        if len(landscape)
        else []
    )
    shown += [(f"hessian_directions_{i + 1}", fig) for i, fig in enumerate(along or [])]
    if along == []:
        notes.append("Landscapes along the Hessian's top eigenvectors: not measured (measure.hessian_directions).")
    rule = f"target {100 * target:.0f}% set with --target-acc" if target is not None else None
    target = target if target is not None else (default_target(completed) if len(completed) else math.nan)
    rule = rule or (
        f"target {100 * target:.0f}%: 95% of the lowest best test accuracy over the batch sizes, rounded down "
        "(so that every batch size can reach it); --target-acc sets another"
    )
    if len(completed) and len(epochs) and completed["batch_size"].nunique() > 1 and not math.isnan(target):
        draw("steps_to_target", lambda: figures.steps_to_target_figure(completed, epochs, target, sharpness, rule))
    else:
        notes.append("Steps to target: needs completed trials at two or more batch sizes.")
    for path, why in sorted(results.unreadable.items()):
        notes.append(f"Not read: {path} ({why}); the report is built from the other files.")
    for error in results.measure_errors.sort_values("job").itertuples():
        notes.append(f"Measurement {error.job} failed ({error.trials}): {error.error}")
    return shown, notes


def header(results: StudyResults) -> str:
    trials = results.trials
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none finished yet"
    devices = ", ".join(sorted(trials["device"].dropna().unique())) if len(trials) else "-"
    revisions = ", ".join(sorted(trials["git_revision"].dropna().unique())[:3]) if len(trials) else "-"
    versions = ""
    if len(trials):
        first = trials.iloc[0]
        versions = f"torch {first['torch_version']}, ray {first['ray_version']}, python {first['python_version']}"
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    data = ""
    if len(trials) and "dataset" in trials:
        first = trials.iloc[0]

        def images(n: Any) -> str:
            return "all" if n is None or (isinstance(n, float) and n != n) else f"{int(n):,}"

        data = (
            f"Data: {first['dataset']} from {first.get('data_root', '?')}, training images "
            f"{images(first.get('train_subset'))}, test images {images(first.get('test_subset'))}. "
        )
    return (
        f"<h1>Study {html.escape(results.study)}</h1>"
        f"<p>{html.escape(data)}{counted(len(trials), 'trial')} ({html.escape(status)}); "
        f"devices: {html.escape(devices)}; "
        f"{html.escape(versions)}; code {html.escape(revisions)}.<br>Results: {html.escape(results.root)}; "
        f"report built {now}.</p>"
    )


def render(
    results: StudyResults,
    target: float | None = None,
    built: tuple[list[tuple[str, go.Figure]], list[str]] | None = None,
) -> str:
    """The report's HTML; `built`: build_figures' answer where the caller has it already."""
    shown, notes = built or build_figures(results, target)
    # The answer first: the seed paper's claims with intervals, then the figures they rest on.
    findings = paper_findings(results.trials, results.sharpness, results.landscape, results.trial_roles)
    parts = [header(results), f'<section id="findings">{findings_html(findings)}</section>']
    for i, (name, fig) in enumerate(shown):
        # plotly.js inlined once, in the first figure: the file opens with no network.
        parts.append(
            f'<section id="{name}">'
            + fig.to_html(full_html=False, include_plotlyjs=(i == 0), default_width="100%")
            + "</section>"
        )
    if len(results.trials):
        parts.append(
            '<section id="trials_table">'
            + figures.trials_table_html(results.trials, results.trial_roles)
            + "</section>"
        )
    if notes:
        parts.append("<h2>Not shown</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:auto;padding:1em;color:#222}"
        "section{margin:1.5em 0}h1{font-size:1.6em}"
        "#trials_table{overflow-x:auto}table.trials{border-collapse:collapse;font-size:13px}"
        "table.trials th{cursor:pointer;background:#eee;text-align:left;padding:4px 6px;white-space:nowrap}"
        "table.trials td{padding:3px 6px;border-top:1px solid #ddd;vertical-align:top;white-space:nowrap}"
        "table.trials pre{white-space:pre-wrap;max-width:60em}"
        "table.findings{border-collapse:collapse;font-size:14px}"
        "table.findings th{background:#eee;text-align:left;padding:4px 8px}"
        "table.findings td{padding:4px 8px;border-top:1px solid #ddd;vertical-align:top}"
        "table.findings small{color:#666}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'>{GENERATOR}"
        f"<title>{html.escape(results.study)} report</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )


# Marks a file as this module's: an existing file without it is never overwritten.
GENERATOR = "<meta name='generator' content='lbstudy analysis.report'>"


class ReportError(RuntimeError):
    """The report cannot be written where asked; the message says what to change."""


def written_by_us(path: Path) -> bool:
    with path.open("rb") as f:
        return GENERATOR.encode() in f.read(4096)


@dataclass(frozen=True)
class Export:
    """Static copies of the figures for a paper: one file per figure in `folder`."""

    folder: str | Path
    format: str = "png"  # png | svg | pdf
    width: int = 1200  # pixels (svg, pdf: points)
    height: int | None = None  # None: the figure's own (a two-row figure squeezed into 600 px overlapped)
    font_size: int = 14


EXPORT_FORMATS = ("png", "svg", "pdf")


def export_figures(figures_: list[tuple[str, go.Figure]], export: Export) -> list[Path]:
    """Write each figure as export.format; kaleido (and the Chromium it drives) missing is one ReportError."""
    if importlib.util.find_spec("kaleido") is None:
        raise ReportError(
            f"--png {export.folder} (--format {export.format}) needs kaleido: pip install kaleido (it also needs a "
            "Chromium: plotly_get_chrome, or apt-get install chromium); the HTML report needs neither"
        )
    folder = Path(export.folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in figures_:
        path = folder / f"{name}.{export.format}"
        styled = go.Figure(fig).update_layout(font=dict(size=export.font_size))
        try:
            height = export.height or fig.layout.height or 600
            styled.write_image(path, format=export.format, width=export.width, height=height)
        except Exception as error:  # kaleido's errors (no Chromium, ...) come in many types
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ReportError(f"figure export failed ({first})") from None
        written.append(path)
    return written


def write_report(
    results_dir: str | list[str],
    out: str | Path | None = None,
    target: float | None = None,
    export: Export | None = None,
) -> Path | str:
    """The report of one study's results folder, or of several studies compared (a list of folders); `out`
    may be a URI (s3://...), where it is written as it is."""
    return write_report_and_figures(results_dir, out, target, export)[0]


def write_report_and_figures(
    results_dir: str | list[str],
    out: str | Path | None = None,
    target: float | None = None,
    export: Export | None = None,
) -> tuple[Path | str, list[Path]]:
    """write_report, and the figure files `export` wrote (each figure built once for both)."""
    dirs = [results_dir] if isinstance(results_dir, str) else list(results_dir)
    results = load_studies(dirs)
    built = build_figures(results, target)
    if isinstance(out, str) and "://" in out:  # into object storage (a study's own folder there): one upload
        write_atomic(out, render(results, target, built).encode())
        return out, []
    if out is None:  # beside the results for one local store; in the current folder otherwise
        if len(dirs) > 1:
            out = Path("comparison-report.html")
        elif "://" in dirs[0]:
            out = Path(f"{results.study}-report.html")
        else:
            out = Path(results.root).parent / "report.html"
    out = Path(out)
    if out.exists() and not (out.is_file() and written_by_us(out)):
        raise ReportError(
            f"{out} exists and is not a report this tool wrote; it is left as it is: pass -o with "
            "another path, or move that file"
        )
    write_atomic(str(out.resolve()), render(results, target, built).encode())
    if export is None:
        return out, []
    try:
        return out, export_figures(built[0], export)
    except ReportError as error:  # the HTML is written: say so, and where
        raise ReportError(f"{error}; the HTML report was written: {out}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "results_dir",
        nargs="+",
        help="a study's folder, <storage>/<name>, or its results/ (path or URI); several: one report comparing them",
    )
    parser.add_argument(
        "-o",
        "--output",
        help="the HTML file to write (default: <study folder>/report.html; for several studies comparison-report.html)",
    )
    parser.add_argument(
        "--target-acc",
        type=float,
        help="test accuracy (fraction) for steps-to-target; default: 95%% of the worst batch size's best",
    )
    parser.add_argument("--png", metavar="DIR", help="also write every figure as an image file here (needs kaleido)")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="png", help="the image format for --png DIR")
    parser.add_argument("--width", type=int, default=1200, help="exported figure width (pixels)")
    parser.add_argument(
        "--height", type=int, default=None, help="exported figure height (pixels; default: each figure's own)"
    )
    parser.add_argument("--font-size", type=int, default=14, help="exported figure font size (points)")
    args = parser.parse_args(argv)
    export = Export(args.png, args.format, args.width, args.height, args.font_size) if args.png else None
    stores = [ResultsStore.found(folder) for folder in args.results_dir]
    for given, store in zip(args.results_dir, stores):
        if store is None:
            print(
                f"error: {given} holds no results (no trials/ or epochs/ Parquet files, there or in its results/); "
                "pass the study's folder that run_sweep printed, <storage>/<name>",
                file=sys.stderr,
            )
            return 2
    try:
        folders = [store.uri for store in stores if store is not None]
        path, figure_files = write_report_and_figures(folders, args.output, args.target_acc, export)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    if export is not None:
        print(
            f"figures: {counted(len(figure_files), args.format.upper() + ' file')} in {Path(export.folder).resolve()}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
