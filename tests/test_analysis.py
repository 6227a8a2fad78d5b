"""Unit tests of the analysis package on hand-made DataFrames (no Ray, no training)."""

import math
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from analysis import figures
from analysis.store import trial_row
from analysis.summarize import aggregate_over_seeds, steps_to_target, with_labels


def make_trials() -> pd.DataFrame:
    rows = []
    for batch in (128, 1024, 8192):
        for alpha in (0.0, 1.0):
            for seed, noise in zip((0, 1, 2), (-0.01, 0.0, 0.01)):
                test = 0.9 - 0.02 * np.log2(batch / 128) + 0.02 * alpha + noise
                rows.append(
                    {
                        "trial_id": f"b{batch}-a{alpha:g}-s{seed}",
                        "batch_size": batch,
                        "mixup_alpha": alpha,
                        "augmentation_label": f"mixup a={alpha:g}" if alpha else "none",
                        "lr_scaling": "none",
                        "seed": seed,
                        "status": "completed",
                        "final_test_acc": test,
                        "final_clean_train_acc": 0.99,
                        "final_test_loss": 0.5,
                        "final_clean_train_loss": 0.1,
                        "best_test_acc": test,
                        "peak_lr": 0.1,
                        "workers": 1,
                        "micro_batch": batch,
                        "accumulation_steps": 1,
                        "epochs_completed": 3,
                        "gap_acc": 0.99 - test,
                        "train_time_s": 10.0,
                        "device": "cpu",
                        "error": None,
                    }
                )
    rows.append(
        {
            **rows[-1],
            "trial_id": "b8192-a1-diverged",
            "seed": 3,
            "status": "diverged",
            "final_test_acc": None,
            "best_test_acc": None,
            "gap_acc": None,
        }
    )
    return pd.DataFrame(rows)


def test_trial_row_gap_is_clean_train_minus_test_accuracy_and_test_minus_train_loss() -> None:
    """The gap comes from the last evaluated epoch, not from anything a fixture set."""
    history = [
        {
            "epoch": 1,
            "step": 10,
            "train_loss": 1.5,
            "clean_train_loss": 1.2,
            "clean_train_acc": 0.55,
            "test_loss": 1.4,
            "test_acc": 0.5,
            "epoch_time_s": 2.0,
            "images_per_s": 100.0,
        },
        {
            "epoch": 2,
            "step": 20,
            "train_loss": 0.9,
            "clean_train_loss": 0.3,
            "clean_train_acc": 0.97,
            "test_loss": 0.8,
            "test_acc": 0.81,
            "epoch_time_s": 2.0,
            "images_per_s": 120.0,
        },
        {
            "epoch": 3,
            "step": 30,
            "train_loss": 0.8,
            "clean_train_loss": math.nan,
            "clean_train_acc": math.nan,
            "test_loss": math.nan,
            "test_acc": math.nan,
            "epoch_time_s": 2.0,
            "images_per_s": 140.0,
        },
    ]
    row = trial_row({"trial_id": "t", "milestones": []}, history, {"status": "completed"}, {})
    assert row["gap_acc"] == pytest.approx(0.97 - 0.81) and row["gap_loss"] == pytest.approx(0.8 - 0.3)
    assert row["final_test_acc"] == 0.81 and row["best_epoch"] == 2 and row["epochs_completed"] == 3
    # train_time_s and images_per_s cover the same epochs; steady_images_per_s leaves out the first (warm-up).
    assert row["train_time_s"] == 6.0 and row["images_per_s"] * row["train_time_s"] == pytest.approx(720.0)
    assert row["steady_images_per_s"] == pytest.approx(130.0)


def test_seed_aggregation_mean_interval_and_n() -> None:
    frame = pd.DataFrame(
        {
            "batch_size": [128] * 3,
            "augmentation_label": ["none"] * 3,
            "lr_scaling": ["none"] * 3,
            "value": [1.0, 2.0, 3.0],
        }
    )
    stats = aggregate_over_seeds(frame, "value").iloc[0]
    # mean 2, sd 1, n 3: half-width t_{0.975,2} / sqrt(3) = 4.303 / 1.732
    assert stats["mean"] == 2.0 and stats["n"] == 3
    assert stats["ci_high"] - 2.0 == pytest.approx(4.303 / math.sqrt(3), rel=1e-3)
    single = aggregate_over_seeds(frame.iloc[:1], "value").iloc[0]
    assert single["n"] == 1 and math.isnan(single["ci_low"])


def test_aggregation_skips_diverged_trials_without_metrics() -> None:
    stats = aggregate_over_seeds(make_trials(), "final_test_acc")
    big = stats[(stats["batch_size"] == 8192) & (stats["augmentation_label"] == "mixup a=1")].iloc[0]
    assert big["n"] == 3


def test_steps_to_target_takes_the_first_epoch_at_or_above_it() -> None:
    trials = make_trials().iloc[:2]
    epochs = pd.DataFrame(
        {
            "trial_id": ["b128-a0-s0"] * 3 + ["b128-a0-s1"] * 3,
            "epoch": [1, 2, 3] * 2,
            "step": [390, 780, 1170] * 2,
            "test_acc": [0.5, 0.81, 0.9, 0.5, 0.6, 0.7],
        }
    )
    reached = steps_to_target(trials, epochs, 0.8)
    assert reached[["trial_id", "epochs_to_target", "steps_to_target"]].values.tolist() == [["b128-a0-s0", 2, 780]]


def test_accuracy_figure_has_one_line_per_alpha_rule_on_a_log_batch_axis_in_percent() -> None:
    fig = figures.accuracy_and_gap_vs_batch(make_trials())
    acc = [t for t in fig.data if t.xaxis == "x"]
    assert len(acc) == 2 and {t.name for t in acc} == {"no augmentation, no LR scaling", "mixup a=1, no LR scaling"}
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.tickvals) == [128, 1024, 8192]
    assert max(acc[0].y) > 1  # percent, not fraction
    assert acc[0].error_y.visible


def test_interpolation_figure_colors_axes_and_dashes() -> None:
    landscape = pd.DataFrame(
        [
            {
                "kind": "interp1d",
                "trial_a": "A",
                "trial_b": "B",
                "x": x,
                "y": None,
                "split": s,
                "loss": 1 + x * x,
                "acc": 0.8,
            }
            for x in (-0.5, 0, 0.5, 1, 1.5)
            for s in ("train", "test")
        ]
    )
    trials = pd.DataFrame(
        {
            "trial_id": ["A", "B"],
            "batch_size": [128, 8192],
            "augmentation_label": ["mixup a=1", "mixup a=1"],
            "lr_scaling": ["none", "none"],
            "seed": [0, 0],
        }
    )
    fig = figures.interpolation_figure(landscape, trials, "A", "B")
    # The title names the pair; the grid holds a = 0 and 1, so no warning about it.
    title = fig.layout.title.text
    assert (
        "A = batch 128, mixup a=1, no LR scaling, seed 0 vs B = batch 8192, mixup a=1, no LR scaling, seed 0" in title
    )
    assert "no point at a = 0 or a = 1" not in title
    off_grid = figures.interpolation_figure(landscape[landscape["x"] != 0], trials, "A", "B")
    assert "no point at a = 0 or a = 1" in off_grid.layout.title.text
    by_name = {t.name: t for t in fig.data}
    assert by_name["train loss"].line.color == figures.LOSS_BLUE and by_name["train loss"].line.dash == "solid"
    assert by_name["test accuracy"].line.color == figures.ACC_RED and by_name["test accuracy"].line.dash == "dash"
    assert by_name["test accuracy"].yaxis == "y2" and by_name["train loss"].yaxis == "y"
    assert list(by_name["train accuracy"].y) == [80.0] * 5
    marks = [a.text for a in fig.layout.annotations]
    assert "batch 128" in marks and "batch 8192" in marks


# As the trial record's schema gives them (trainables/trial.py): role and whether tables show the column.
TABLE_ROLES = {
    "trial_id": ("id", True),
    "batch_size": ("swept", True),
    "mixup_alpha": ("derived", False),
    "augmentation_label": ("derived", True),
    "lr_scaling": ("swept", True),
    "seed": ("swept", True),
    "peak_lr": ("derived", True),
    "workers": ("derived", True),
    "micro_batch": ("derived", True),
    "accumulation_steps": ("derived", True),
}


def table_header_and_rows(page: str) -> tuple[list[str], list[list[str]]]:
    header = re.findall(r"<th[^>]*>([^<]*)</th>", page)
    rows = [
        re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in re.findall(r"<tr style=[^>]*>(.*?)</tr>", page, re.S)
    ]
    return header, rows


def test_trials_table_shows_the_swept_keys_that_vary_and_every_derived_one() -> None:
    header, _ = table_header_and_rows(figures.trials_table_html(make_trials(), TABLE_ROLES))
    # The results right after the id; then what differs: lr_scaling is the same for every trial (said
    # above the table, not a column), seed varies, mixup_alpha is shown by its label.
    assert header[:5] == ["trial id", "status", "final test acc", "gap acc", "epochs completed"]
    assert header.index("batch size") < header.index("seed")
    assert "lr scaling" not in header and "mixup alpha" not in header and "augmentation label" in header
    assert {"micro batch", "final test acc"} <= set(header)
    page = figures.trials_table_html(make_trials(), TABLE_ROLES)
    assert "<p>Every trial: " in page and "lr scaling none" in page and "peak lr 0.1" in page


def test_trials_table_keeps_diverged_and_failed_trials_with_full_ids_and_folded_errors() -> None:
    trials = make_trials()
    trials.loc[0, "status"] = "failed"
    trials.loc[0, "error"] = "DataError: no images\nsecond line of a long traceback"
    trials.loc[0, "trial_id"] = "b128-a0-none-s0-a-very-long-trial-identifier-0123456789"
    page = figures.trials_table_html(trials, TABLE_ROLES)
    header, rows = table_header_and_rows(page)
    statuses = [row[header.index("status")] for row in rows]
    assert statuses.count("diverged") == 1 and statuses.count("failed") == 1 and len(rows) == len(trials)
    assert ">b128-a0-none-s0-a-very-long-trial-identifier-0123456789<" in page  # whole, never cut
    assert "<details><summary>DataError: no images</summary><pre>DataError: no images\nsecond line" in page
    assert "onclick='sortTrials(this)'" in page and "function sortTrials" in page


def test_learning_curves_draw_every_completed_trial_even_beside_failed_ones() -> None:
    # Before: 4 failed and 4 completed trials of the same batch sizes drew 1 of the 4 curves.
    completed = make_trials().query("seed == 0 and status == 'completed'")
    failed = completed.assign(trial_id=completed["trial_id"] + "-failed", status="failed", seed=-1)
    trials = pd.concat([failed, completed], ignore_index=True)
    epochs = pd.DataFrame(
        [
            {
                "trial_id": t,
                "epoch": e,
                "clean_train_acc": 0.5,
                "test_acc": 0.4,
                "clean_train_loss": 1.0,
                "test_loss": 1.2,
            }
            for t in completed["trial_id"]
            for e in (1, 2, 3)
        ]
    )
    fig = figures.learning_curves(trials, epochs, batch_sizes=[128, 8192])
    drawn = {(t.xaxis, t.name.rsplit(" (", 1)[0]) for t in fig.data if len(t.x)}  # a row per batch size
    assert len({name for axis, name in drawn if axis == "x"}) == 2 and len(drawn) == 8  # 2 rows x 2 panels x 2


def test_learning_curves_connect_epochs_evaluated_every_five() -> None:
    trials = make_trials().iloc[:1]
    epochs = pd.DataFrame(
        [
            {
                "trial_id": trials["trial_id"].iloc[0],
                "epoch": e,
                "clean_train_acc": 0.5 if e % 5 == 0 else np.nan,  # evaluated every 5 epochs
                "test_acc": 0.4 if e % 5 == 0 else np.nan,
                "clean_train_loss": 1.0 if e % 5 == 0 else np.nan,
                "test_loss": 1.2 if e % 5 == 0 else np.nan,
            }
            for e in range(1, 21)
        ]
    )
    fig = figures.learning_curves(trials, epochs)
    for trace in fig.data:  # only the evaluated epochs, all finite: one connected line each
        assert list(trace.x) == [5, 10, 15, 20] and np.isfinite(np.asarray(trace.y, dtype=float)).all()
    assert fig.layout.xaxis.dtick == 2 and fig.layout.xaxis.tickmode == "linear"  # integer epoch ticks


def test_steps_to_target_figure_is_log_log_with_perfect_scaling() -> None:
    trials = make_trials()
    epochs = pd.DataFrame(
        [
            {"trial_id": t, "epoch": e, "step": e * 50000 // b, "test_acc": 0.3 * e}
            for t, b in zip(trials["trial_id"], trials["batch_size"])
            for e in (1, 2, 3)
        ]
    )
    fig = figures.steps_to_target_figure(trials[trials["status"] == "completed"], epochs, 0.55)
    assert fig.layout.yaxis.type == "log" and fig.layout.xaxis.type == "log"
    assert any(t.name.startswith("perfect scaling") for t in fig.data)


@pytest.mark.slow
def test_analysis_imports_neither_torch_nor_ray() -> None:
    code = "import analysis.report, analysis.figures, sys; print(sorted({'torch', 'ray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_augmentation_labels_come_from_the_trial_record() -> None:
    from analysis.summarize import with_labels
    from study.config import parse_study
    from study.plan import plan_study

    study = parse_study(
        "name: l\nsweep: {batch_size: [128], augmentation: [none, {name: mixup, alpha: 1.0}, "
        "{name: cutmix, alpha: 0.5}, {name: cutout, size: 16}]}"
    )
    labels = [t.augmentation_label for t in plan_study(study)]
    assert labels == ["none", "mixup a=1", "cutmix a=0.5", "cutout 16"]
    old = pd.DataFrame({"mixup_alpha": [0.0, 0.2]})  # a store written before the label was recorded
    assert with_labels(old)["augmentation_label"].tolist() == ["unrecorded", "unrecorded"]


def interpolation_rows(clamp_loss: float) -> pd.DataFrame:
    xs = np.linspace(-0.5, 1.5, 9)
    rows = []
    for split in ("train", "test"):
        for x in xs:
            clamped = 12 if x > 1.2 else 0
            loss = clamp_loss if clamped else 0.1 + (x - 0.5) ** 2
            rows.append(
                {
                    "kind": "interp1d",
                    "trial_a": "b128-a0-s0",
                    "trial_b": "b8192-a0-s0",
                    "x": x,
                    "y": None,
                    "split": split,
                    "loss": float("nan") if x < -0.4 else loss,
                    "acc": 0.9,
                    "bn": "interpolated",
                    "bn_clamped": clamped,
                    "note": None,
                }
            )
    return pd.DataFrame(rows)


def test_interpolation_figure_marks_clamped_and_missing_points_and_keeps_the_curve_readable() -> None:
    fig = figures.interpolation_figure(interpolation_rows(4e16), make_trials(), "b128-a0-s0", "b8192-a0-s0")
    hollow = [t for t in fig.data if t.name.startswith("BN variance clamped")]
    # every clamped point is off the axis here: an arrow at the loss axis's top with its value printed, not a
    # hollow circle level with the accuracy axis's 100% tick (read as 100% accuracy)
    assert [len(t.x) for t in hollow] == [0, 2] and hollow[1].marker.symbol == "triangle-up-open"  # one per a
    assert hollow[1].yaxis == "y" and set(hollow[1].text) == {"4e+16"} and "text" in hollow[1].mode
    title = fig.layout.title.text
    assert "BN statistics interpolated" in title and "2 points with negative BN running variances" in title
    assert "reach loss 4e+16" in title and "loss not finite at a = -0.5 (x at the top of the loss axis" in title
    crosses = [t for t in fig.data if t.name.startswith("loss not finite")]
    assert len(crosses) == 1 and list(crosses[0].x) == [-0.5] and crosses[0].marker.symbol == "x"
    assert crosses[0].yaxis == "y" and list(crosses[0].text) == ["not finite"]  # the loss axis, not accuracy's
    assert fig.layout.yaxis.range[1] < 10  # the unclamped curve fills the axis
    plain = figures.interpolation_figure(interpolation_rows(1.0), make_trials(), "b128-a0-s0", "b8192-a0-s0")
    assert plain.layout.yaxis.range is None and "above the axis" not in plain.layout.title.text


def test_sharpness_figure_shows_a_lone_trials_own_interval() -> None:
    trials = make_trials()
    trials = trials[trials["seed"] == 0]
    sharpness = pd.DataFrame(
        {
            "trial_id": trials["trial_id"],
            "measure": "noise_scale",
            "value": 100.0,
            "ci_low": 80.0,
            "ci_high": np.inf,
            "n_samples": 20,
            "settings": "{}",
        }
    )
    sharpness.loc[sharpness.index[0], "ci_high"] = 130.0
    fig = figures.sharpness_vs_batch(trials, sharpness)
    first = fig.data[0]
    assert first.error_y.visible and list(first.error_y.arrayminus) == [20.0] * len(first.x)
    assert np.isnan(np.asarray(first.error_y.array, dtype=float)).sum() >= 1  # an unbounded end is not drawn...
    assert "upper end is unbounded (not drawn)" in fig.layout.title.text  # ...and is said
    # the title short, its notes small print under it (one long line ran under the toolbar, off a PNG's edge)
    assert fig.layout.title.text.startswith("Sharpness and the other per-trial measures against batch size<br><sup>")


def test_trajectory_and_density_figures_carry_what_a_reader_needs() -> None:
    trials = make_trials()
    path = pd.DataFrame(
        {
            "trial_id": "b128-a0-s0",
            "kind": "path",
            "epoch": [1, 2, 3, 4],
            "x": [-3.0, -2.0, -1.0, 0.0],
            "y": [0.5, -0.2, 0.1, 0.0],
            "loss": [2.0, 1.0, 0.5, 0.1],
        }
    )
    grid = [(x, y) for y in (-1.0, 0.0, 1.0) for x in (-4.0, -2.0, 1.0)]
    surface = pd.DataFrame(
        {
            "trial_id": "b128-a0-s0",
            "kind": "surface",
            "epoch": None,
            "x": [g[0] for g in grid],
            "y": [g[1] for g in grid],
            "loss": np.arange(9.0),
        }
    )
    trajectory = pd.concat([path, surface]).assign(explained_x=0.874, explained_y=0.091, split="train")
    fig = figures.trajectory_figure(trajectory, trials, "b128-a0-s0")
    assert fig.layout.xaxis.title.text.startswith("1st principal component: 87.4%")
    assert fig.layout.yaxis.title.text.startswith("2nd principal component: 9.1%")
    assert list(fig.data[1].text) == ["1", "2", "3", "4"]
    spectrum = pd.DataFrame(
        {
            "trial_id": "b128-a0-s0",
            "eigenvalue": np.linspace(-1, 5, 50),
            "density": np.exp(-(np.linspace(-1, 5, 50) ** 2)),
        }
    )
    density = figures.hessian_density_figure(spectrum, trials)
    assert density.layout.yaxis.type == "log" and min(density.data[0].y) >= 1e-8
    assert density.data[0].name == "batch 128, no augmentation, no LR scaling, seed 0"


def test_the_report_never_overwrites_a_file_it_did_not_write(tmp_path) -> None:
    from analysis.report import ReportError, main, write_report
    from analysis.store import ResultsStore

    store = ResultsStore(str(tmp_path / "s" / "results"))
    from analysis.store import trial_schema
    from trainables.trial import TrialSpec

    store.write("trials", "t0", make_trials().iloc[:1].assign(study="s"), trial_schema(TrialSpec))
    theirs = tmp_path / "s" / "report.html"
    theirs.write_text("<html>a page someone wrote</html>")
    with pytest.raises(ReportError, match="not a report this tool wrote"):
        write_report(store.root)
    assert theirs.read_text() == "<html>a page someone wrote</html>"
    assert main([store.root]) == 2 and theirs.read_text() == "<html>a page someone wrote</html>"
    ours = write_report(store.root, tmp_path / "mine.html")
    assert write_report(store.root, ours) == ours  # its own report is replaced, as before
    (tmp_path / "folder.html").mkdir()
    with pytest.raises(ReportError):
        write_report(store.root, tmp_path / "folder.html")


def test_figure_export_without_kaleido_is_one_line_and_the_html_is_still_written(
    tmp_path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from analysis.report import main
    from analysis.store import ResultsStore, trial_schema
    from trainables.trial import TrialSpec

    find_spec = importlib.util.find_spec  # a machine without kaleido, whether or not this one has it
    without = lambda name, *a: None if name == "kaleido" else find_spec(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", without)
    store = ResultsStore(str(tmp_path / "s" / "results"))
    store.write("trials", "t0", make_trials().iloc[:1].assign(study="s"), trial_schema(TrialSpec))
    assert main([store.root, "--png", str(tmp_path / "figures"), "--format", "svg"]) == 2  # before: a traceback
    err = capsys.readouterr().err.strip()
    # The flags it names exist, and it says that the HTML was written, and where.
    assert err.count("\n") == 0 and f"--png {tmp_path / 'figures'} (--format svg) needs kaleido" in err
    assert f"the HTML report was written: {tmp_path / 's' / 'report.html'}" in err
    assert (tmp_path / "s" / "report.html").exists()


def test_two_d_surfaces_share_one_square_grid_one_colour_scale_and_log_levels() -> None:
    # Before: one figure per trial, each with its own linear scale up to ~250, a square domain stretched 3.5:1.
    trials = make_trials().query("seed == 0 and batch_size in (128, 8192)")
    xs = np.linspace(-1, 1, 11)
    rows = [
        {"kind": "random2d", "trial_a": t, "x": x, "y": y, "split": "train", "loss": sharp * (x * x + y * y) + 0.05}
        for t, sharp in zip(trials["trial_id"], (1.0, 2.0, 20.0, 40.0))
        for x in xs
        for y in xs
    ]
    fig, view = figures.random_direction_figures(pd.DataFrame(rows), trials)
    contours = [t for t in fig.data if t.type == "contour"]
    assert len(contours) == 4 and {t.coloraxis for t in contours} == {"coloraxis"}  # one scale, one bar
    assert len({(t.contours.start, t.contours.end, t.contours.size) for t in contours}) == 1
    start, end = contours[0].contours.start, contours[0].contours.end
    assert start <= np.log10(0.05) < start + 0.1 and end - start == pytest.approx(2.0)  # min to 100 x min
    for i in range(4):  # every panel square: its y axis scaled to its x axis
        yaxis = fig.layout[f"yaxis{i + 1 if i else ''}"]
        assert yaxis.scaleanchor == (f"x{i + 1}" if i else "x") and yaxis.scaleratio == 1
    assert [a.text for a in fig.layout.annotations][:2] == [
        "batch 128, no augmentation, no LR scaling, seed 0",
        "batch 128, mixup a=1, no LR scaling, seed 0",
    ]
    # The 3-D view: the same panels in the same order, one colour scale, every box a cube on the same
    # log height range, from the lowest level to the highest loss of any panel (nothing clipped).
    surfaces = [t for t in view.data if t.type == "surface"]
    assert [t.name for t in surfaces] == [a.text for a in fig.layout.annotations][:4]
    assert {t.coloraxis for t in surfaces} == {"coloraxis"} and view.layout.coloraxis.cmin == start
    scenes = [view.layout[f"scene{i + 1 if i else ''}"] for i in range(4)]
    highest = np.log10(40.0 * 2 + 0.05)
    assert all(s.zaxis.range[0] == start and s.zaxis.range[1] == pytest.approx(highest) for s in scenes)
    assert {s.aspectmode for s in scenes} == {"cube"}
    assert "0.05" in scenes[0].zaxis.ticktext and "50" in scenes[0].zaxis.ticktext  # labelled in loss, not log
    assert float(np.nanmax(surfaces[3].customdata)) == pytest.approx(40.0 * 2 + 0.05)  # hover: the loss itself


def test_two_studies_in_one_report_are_kept_apart_and_labelled_by_study(tmp_path) -> None:
    from analysis.load import load_studies
    from analysis.report import main
    from analysis.store import ResultsStore, epoch_schema, trial_schema
    from trainables.trial import EpochMetrics, TrialSpec

    folders = []
    for name, (device, shift) in {"cpu-run": ("cpu", 0.0), "gpu-run": ("NVIDIA H200", 0.01)}.items():
        store = ResultsStore(str(tmp_path / name / "results"))
        trials = make_trials().query("seed == 0").assign(study=name, device=device)  # the same trial ids in both
        trials["final_test_acc"] += shift
        for row in trials.to_dict("records"):
            store.write("trials", row["trial_id"], [row], trial_schema(TrialSpec))
            epoch = {"trial_id": row["trial_id"], "epoch": 1, "step": 10, "test_acc": row["final_test_acc"]}
            store.write("epochs", row["trial_id"], [epoch], epoch_schema(EpochMetrics))
        folders.append(store.root)
    both = load_studies(folders)
    assert both.study == "cpu-run + gpu-run" and len(both.trials) == 2 * 6
    assert both.trials["trial_id"].is_unique and both.epochs["trial_id"].is_unique  # ids no longer collide
    assert set(both.trials["augmentation_label"]) == {
        f"{study}: {label}" for study in ("cpu-run", "gpu-run") for label in ("none", "mixup a=1")
    }
    fig = figures.accuracy_and_gap_vs_batch(both.trials)
    assert {t.name for t in fig.data if t.showlegend} == {
        f"{study}: {label}, no LR scaling"
        for study in ("cpu-run", "gpu-run")
        for label in ("no augmentation", "mixup a=1")
    }
    out = tmp_path / "both.html"
    assert main([*folders, "-o", str(out)]) == 0
    page = out.read_text()
    assert "Study cpu-run + gpu-run" in page and "cpu-run/b128-a0-s0" in page and "gpu-run/b128-a0-s0" in page


def test_steps_to_target_draws_the_noise_scale_prediction_of_the_critical_batch() -> None:
    """McCandlish et al.: S = S_min (1 + B_crit / B). With B_crit = 1024 and 300 steps at batch 128,
    S_min = 300 / 9 and the prediction at batch 8192 is S_min x 1.125 = 37.5 steps."""
    trials = make_trials().query("seed == 0 and augmentation_label == 'none'")
    epochs = pd.DataFrame(
        [
            {"trial_id": t, "epoch": 1, "step": 300 * 128 // b, "test_acc": 0.99}
            for t, b in zip(trials["trial_id"], trials["batch_size"])
        ]
    )
    sharpness = pd.DataFrame({"trial_id": trials["trial_id"], "measure": "noise_scale", "value": 1024.0})
    fig = figures.steps_to_target_figure(trials, epochs, 0.9, sharpness)
    (prediction,) = [t for t in fig.data if "noise-scale prediction" in t.name]
    assert "B_crit ~ B_simple = 1024" in prediction.name
    assert prediction.y[0] == pytest.approx(300.0) and prediction.y[-1] == pytest.approx(300 / 9 * 1.125)
    assert any(shape.x0 == 1024.0 for shape in fig.layout.shapes)  # B_crit marked
    assert any(a.text == "B_crit 1024" for a in fig.layout.annotations)  # and labelled


def remedies_trials() -> pd.DataFrame:
    """make_trials' grid for two models, each with SGD and with LARS + ghost BN 128 (as a study records them)."""
    frames = []
    for model, shift in (("vgg9", 0.0), ("resnet20", 0.03)):
        for optimizer, ghost, lift in (("sgd", None, 0.0), ("lars", 128, 0.01)):
            frame = make_trials()
            frame = frame.assign(
                trial_id=model + "-" + optimizer + "-" + frame["trial_id"],
                model=model,
                optimizer=optimizer,
                ghost_batch=ghost,
                budget="epochs",
                label_smoothing=0.0,
                final_test_acc=frame["final_test_acc"] + shift + lift,
            )
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_curves_are_told_apart_by_every_compared_key_never_averaged_across_them() -> None:
    from analysis.load import with_condition_labels

    trials = with_condition_labels(remedies_trials())
    assert set(trials["augmentation_label"]) == {
        f"{m}, {o}: {a}"
        for m in ("vgg9", "resnet20")
        for o in ("sgd, plain BN", "lars, ghost BN 128")
        for a in ("none", "mixup a=1")
    }
    assert set(trials["label_within_model"]) == {
        f"{o}: {a}" for o in ("sgd, plain BN", "lars, ghost BN 128") for a in ("none", "mixup a=1")
    }
    # A key that does not vary stays out of the label; a store from before these keys is left as it was.
    assert "epochs" not in " ".join(trials["augmentation_label"])
    assert with_condition_labels(make_trials())["augmentation_label"].equals(make_trials()["augmentation_label"])
    fig = figures.accuracy_and_gap_vs_batch(trials)
    assert len([t for t in fig.data if t.xaxis == "x"]) == 8  # 2 models x 2 optimizers x 2 augmentations


def test_the_by_model_view_has_a_column_per_model_and_one_colour_per_setting() -> None:
    from analysis.load import with_condition_labels

    trials = with_condition_labels(remedies_trials())
    sharpness = pd.DataFrame(
        {
            "trial_id": trials["trial_id"],
            "measure": "hessian_eig1",
            "value": 10.0 + trials["batch_size"] / 1024,
            "ci_low": np.nan,
            "ci_high": np.nan,
        }
    )
    fig = figures.by_model_figure(trials, sharpness)
    titles = [a.text for a in fig.layout.annotations]
    assert titles[:2] == ["resnet20", "vgg9"]  # the column titles
    # Rows: test accuracy, gap, and the one sharpness measure; 4 settings per panel; 2 models.
    assert len(fig.data) == 3 * 2 * 4
    assert sorted(t.name for t in fig.data if t.showlegend) == sorted(
        f"{o}: {a}, no LR scaling"
        for o in ("sgd, plain BN", "lars, ghost BN 128")
        for a in ("no augmentation", "mixup a=1")
    )
    colours: dict[str, set[str]] = {}
    for trace in fig.data:
        colours.setdefault(trace.name, set()).add(trace.line.color)
    assert all(len(c) == 1 for c in colours.values()) and len({c.pop() for c in colours.values()}) == 4
    # The panels hold each model's own numbers: ResNet-20's accuracy is 3 points above VGG9's.
    acc = {
        t.xaxis: t
        for t in fig.data
        if t.name == "sgd, plain BN: no augmentation, no LR scaling" and t.yaxis in ("y", "y2")
    }
    assert acc["x"].y[0] - acc["x2"].y[0] == pytest.approx(3.0)
    assert fig.layout.yaxis.title.text == "test accuracy (%)"


def test_the_trial_table_says_where_each_trial_ran() -> None:
    trials = make_trials().assign(host="gpu-a", node_id="1a2b")
    page = figures.trials_table_html(trials, {"batch_size": ("swept", True)})
    header, _ = table_header_and_rows(page)
    assert "host" not in header and "host gpu-a" in page  # one host: said once above the table
    trials.loc[trials.index[0], "host"] = "gpu-b"
    header, _ = table_header_and_rows(figures.trials_table_html(trials, {"batch_size": ("swept", True)}))
    assert "host" in header


def test_a_figure_that_raises_is_a_note_and_the_report_has_the_others(tmp_path, monkeypatch) -> None:
    """One figure's bug took the whole report down; now the reader gets the rest and is told which is missing."""
    from analysis import figures
    from analysis.report import write_report
    from analysis.store import ResultsStore, trial_schema
    from trainables.trial import TrialSpec

    store = ResultsStore(str(tmp_path / "s" / "results"))
    store.write("trials", "t", make_trials().assign(study="s"), trial_schema(TrialSpec))

    def broken(*args: object) -> None:
        raise KeyError("gap_acc")

    monkeypatch.setattr(figures, "accuracy_and_gap_vs_batch", broken)
    page = write_report(store.root).read_text()
    assert "<li>Figure accuracy_gap_vs_batch: could not be drawn (KeyError: &#x27;gap_acc&#x27;)" in page
    assert 'id="accuracy_gap_vs_batch"' not in page and 'id="trials_table"' in page


def test_every_figure_function_is_drawn_by_the_report() -> None:
    """A figure function written but never added to build_figures would pass its own unit test and be in
    no report: every function of analysis/figures.py that returns a figure is called by report.py, or by a
    figure function that is."""
    import ast

    from conftest import ROOT

    tree = ast.parse((ROOT / "analysis" / "figures.py").read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    makes_figures = {name for name, node in functions.items() if node.returns and "Figure" in ast.unparse(node.returns)}
    report = ast.parse((ROOT / "analysis" / "report.py").read_text())
    reached = {
        node.attr
        for node in ast.walk(report)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "figures"
    }
    frontier = set(reached)
    while frontier:
        calls = {
            node.id
            for name in frontier & set(functions)
            for node in ast.walk(functions[name])
            if isinstance(node, ast.Name) and node.id in functions
        }
        frontier, reached = calls - reached, reached | calls
    assert makes_figures and makes_figures <= reached, f"never drawn by the report: {sorted(makes_figures - reached)}"


def test_random_direction_slices_colour_each_setting_as_every_other_figure_does() -> None:
    """The 1-D slices coloured trials by their order in the figure; now the colour is the setting's (one
    palette function for every figure) and the batch size is the dash."""
    trials = make_trials().query("seed == 0")
    xs = np.linspace(-1, 1, 5)
    rows = [
        {"kind": "random1d", "trial_a": t, "x": x, "split": "train", "loss": x * x}
        for t in trials["trial_id"]
        for x in xs
    ]
    (fig,) = figures.random_direction_figures(pd.DataFrame(rows), trials)
    colours = figures.setting_colours(trials)
    info = with_labels(trials).set_index("trial_id")
    batches = sorted(info["batch_size"].unique())
    for trace, trial_id in zip(fig.data, sorted(trials["trial_id"])):
        row = info.loc[trial_id]
        assert trace.line.color == colours[(row["augmentation_label"], row["lr_scaling"])]
        assert trace.line.dash == figures.DASHES[batches.index(row["batch_size"])]
    assert len({t.line.color for t in fig.data}) == len(colours) < len(fig.data)


def test_steps_to_target_labels_never_overlap_ticks_reach_the_data_and_a_missing_setting_is_said() -> None:
    """Two settings' B_crit labels printed on top of each other; the top data point had no y tick; a setting
    that never reached the target vanished from the figure without a word."""
    trials = make_trials().query("seed == 0")
    mixup = trials["augmentation_label"] != "none"
    epochs = pd.DataFrame(
        [
            # no mixup: 1700 steps at the small batch ... ; mixup: only the small batch reaches the target
            {"trial_id": t, "epoch": 1, "step": 1700 * 128 // b, "test_acc": 0.5 if (m and b > 128) else 0.99}
            for t, b, m in zip(trials["trial_id"], trials["batch_size"], mixup)
        ]
    )
    sharpness = pd.DataFrame(
        {"trial_id": trials["trial_id"], "measure": "noise_scale", "value": np.where(mixup, 1100.0, 1000.0)}
    )
    fig = figures.steps_to_target_figure(trials, epochs, 0.9, sharpness)
    labels = [a for a in fig.layout.annotations if a.text.startswith("B_crit")]
    assert len(labels) == 2 and labels[0].y != labels[1].y  # 1000 and 1100 sit side by side on the axis
    ticks = fig.layout.yaxis.tickvals
    assert max(ticks) >= 1700 / 1.15 and min(ticks) <= min(t.y.min() for t in fig.data if t.mode == "lines+markers")
    title = fig.layout.title.text
    assert "not drawn: mixup a=1, no LR scaling never reached 90% at batch 1024, 8192" in title
    assert figures.log_ticks([300.0, 1700.0])["tickvals"][-1] == 1700.0


def test_learning_curves_put_the_epoch_title_under_the_bottom_row_only() -> None:
    """An exported PNG showed each upper row's 'epoch' over the subplot titles of the row below."""
    trials = make_trials().query("seed == 0")
    rows = [
        {"trial_id": t, "epoch": e, "step": e, "clean_train_acc": 0.5, "clean_train_loss": 1.0}
        | {"test_acc": 0.4, "test_loss": 1.2}
        for t in trials["trial_id"]
        for e in (1, 2)
    ]
    fig = figures.learning_curves(trials, pd.DataFrame(rows))
    titles = {k: fig.layout[k].title.text for k in fig.layout if k.startswith("xaxis")}
    assert titles == {"xaxis": None, "xaxis2": None, "xaxis3": "epoch", "xaxis4": "epoch"}
