"""One function per figure; each returns a plotly Figure. Accuracies are shown in percent."""

from __future__ import annotations

import html
import textwrap
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from analysis import words
from analysis.summarize import (
    GROUP,
    aggregate_over_seeds,
    best_per_group,
    sharpness_table,
    steps_to_target,
    with_labels,
)

LOSS_BLUE, ACC_RED = "#1f77b4", "#d62728"
PALETTE = qualitative.D3 + qualitative.Dark24
# How `sharpness/` files written before each row named its measure (title, unit, flatter) label them.
LEGACY_SHOWN = {
    "hessian_eig1": ("Hessian top eigenvalue", "lambda_max (loss / weight^2)", "lower"),
    "hessian_trace": ("Hessian trace", "trace (loss / weight^2)", "lower"),
    "eps_sharpness": ("epsilon-sharpness", "100 (max f - f) / (1 + f)  (%)", "lower"),
    "noise_scale": ("gradient noise scale B_simple", "B_simple (examples)", ""),
}


def measures_shown(table: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(measure, panel title, y-axis title) for every measure the table holds, in name order: each row names
    its own (the measure's plug-in wrote it), so a measure is never written but left undrawn. The title
    says which way is flatter where the measure ranks flatness."""
    shown = []
    for measure, rows in table.groupby("measure", sort=True):
        named = rows.dropna(subset=["title"]) if "title" in rows else rows.iloc[:0]
        if len(named):
            title, unit, flatter = (str(named[c].iloc[-1]) for c in ("title", "unit", "flatter"))
        else:
            title, unit, flatter = LEGACY_SHOWN.get(str(measure), (str(measure), "value", ""))
        shown.append((str(measure), f"{title} ({flatter} = flatter)" if flatter else title, unit))
    return shown


LAYOUT = dict(
    template="plotly_white",
    font=dict(size=13),
    legend=dict(orientation="h", y=-0.2, x=0),
    margin=dict(l=70, r=70, t=70, b=90),
)


DASHES = ("solid", "dash", "dot", "dashdot")  # batch sizes in increasing order, where colour is the setting


def setting_colours(trials: pd.DataFrame) -> dict[tuple[str, str], str]:
    """One colour per setting (augmentation label x lr rule) of the study's trials, the same in every
    figure that draws settings: assigned in the settings' sorted order over all trials, not per figure
    (a figure missing one setting would otherwise shift every colour after it)."""
    labelled = with_labels(trials)
    if labelled.empty or "lr_scaling" not in labelled:
        return {}
    settings = sorted(set(zip(labelled["augmentation_label"].astype(str), labelled["lr_scaling"].astype(str))))
    return {setting: PALETTE[i % len(PALETTE)] for i, setting in enumerate(settings)}


def curve_label(augmentation: str, rule: str) -> str:
    """'mixup a=1, linear LR scaling'; 'no augmentation, no LR scaling' rather than 'none, lr none'
    (other compared conditions lead the augmentation label: 'lars: no augmentation, ...')."""
    prefix, _, arm = augmentation.rpartition(": ")
    arm = "no augmentation" if arm == "none" else arm
    rule_text = "no LR scaling" if rule == "none" else f"{rule} LR scaling"
    return f"{prefix + ': ' if prefix else ''}{arm}, {rule_text}"


def _batch_axis(fig: go.Figure, batch_sizes: list[int], **where: int) -> None:
    """A log2 batch-size axis labelled with the actual batch sizes."""
    ticks = sorted(set(int(b) for b in batch_sizes))
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[str(t) for t in ticks], title_text="batch size", **where)


def accuracy_and_gap_vs_batch(trials: pd.DataFrame) -> go.Figure:
    """Test accuracy and generalization gap against batch size, mean and 95% interval over seeds."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("test accuracy", "generalization gap (train - test accuracy)"),
        horizontal_spacing=0.12,
    )
    done = with_labels(trials[trials["status"] == "completed"])
    colours = setting_colours(trials)
    for col, value in ((1, "final_test_acc"), (2, "gap_acc")):
        stats = aggregate_over_seeds(done, value)
        for (aug, rule), curve in stats.groupby(["augmentation_label", "lr_scaling"], sort=True):
            curve = curve.sort_values("batch_size")
            has_ci = curve["n"].gt(1).any()
            fig.add_trace(
                go.Scatter(
                    x=curve["batch_size"],
                    y=100 * curve["mean"],
                    mode="lines+markers",
                    name=curve_label(aug, rule),
                    legendgroup=f"{aug}-{rule}",
                    showlegend=col == 1,
                    line=dict(color=colours.get((aug, rule), PALETTE[0])),
                    error_y=dict(
                        type="data",
                        symmetric=False,
                        array=100 * (curve["ci_high"] - curve["mean"]),
                        arrayminus=100 * (curve["mean"] - curve["ci_low"]),
                        visible=bool(has_ci),
                    ),
                    customdata=curve["n"],
                    hovertemplate="batch %{x}<br>%{y:.2f}%<br>n=%{customdata}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        _batch_axis(fig, list(done["batch_size"]), row=1, col=col)
    fig.update_yaxes(title_text="test accuracy (%)", row=1, col=1)
    fig.update_yaxes(title_text="gap (percentage points)", row=1, col=2)
    n_seeds = int(done.groupby(GROUP)["seed"].nunique().max()) if len(done) else 0
    # The title promises an interval only where one is drawn (two seeds or more).
    spread = f"mean and 95% interval over up to {n_seeds} seeds" if n_seeds > 1 else "one seed: no interval"
    fig.update_layout(title=f"Accuracy and generalization gap against batch size ({spread})", **LAYOUT)
    return fig


DRAWN_STATUSES = ("completed", "diverged")  # trials a figure draws; failed ones appear in the table only


def epoch_axis(fig: go.Figure, last_epoch: int, **where: int) -> None:
    """An epoch axis with integer ticks (about ten of them at most)."""
    step = max(1, int(np.ceil(max(1, last_epoch) / 10)))
    fig.update_xaxes(title_text="epoch", tickmode="linear", tick0=0 if step > 1 else 1, dtick=step, **where)


def learning_curves(trials: pd.DataFrame, epochs: pd.DataFrame, batch_sizes: list[int] | None = None) -> go.Figure:
    """Train and test accuracy/loss against epoch, a row per batch size, with and without mixup (figure 6).

    Completed and diverged trials only (a failed trial never takes a completed one's place); points are
    the evaluated epochs, connected (with eval.every_epochs > 1 the others have no value); a diverged
    trial says at which epoch. A setting has its colour of every figure (setting_colours); the batch
    size is the row."""
    drawn = trials[trials["status"].isin(DRAWN_STATUSES)]
    sizes = sorted(drawn["batch_size"].unique())
    chosen = sorted(batch_sizes or sizes[:: max(1, len(sizes) - 1)]) or [None]
    titles = [f"batch {b}: {what}" for b in chosen for what in ("accuracy", "loss")]
    fig = make_subplots(rows=len(chosen), cols=2, subplot_titles=titles, horizontal_spacing=0.1, vertical_spacing=0.12)
    colours = setting_colours(trials)
    picked = with_labels(drawn[drawn["batch_size"].isin(chosen)])
    picked = picked.assign(failed_first=picked["status"] != "completed").sort_values(
        ["batch_size", "augmentation_label", "failed_first", "seed"]
    )
    picked = picked.drop_duplicates(["batch_size", "augmentation_label", "lr_scaling"])  # one trial of each
    last_epoch, in_legend = 1, set()
    for i, (_, trial) in enumerate(picked.iterrows()):
        row = chosen.index(trial["batch_size"]) + 1
        curve = epochs[epochs["trial_id"] == trial["trial_id"]].sort_values("epoch")
        setting = (str(trial["augmentation_label"]), str(trial["lr_scaling"]))
        label = curve_label(*setting)
        if trial["status"] == "diverged":
            at = int(curve["epoch"].max()) if len(curve) else "?"
            label += f" (batch {trial['batch_size']} diverged at epoch {at})"
        last_epoch = max(last_epoch, int(curve["epoch"].max()) if len(curve) else 1)
        color = colours.get(setting, PALETTE[i % len(PALETTE)])
        for split, column, dash in (("train", "clean_train", "solid"), ("test", "test", "dash")):
            for col, metric, scale in ((1, "acc", 100.0), (2, "loss", 1.0)):
                evaluated = curve[np.isfinite(curve[f"{column}_{metric}"].astype(float))]
                name = f"{label} ({split})"
                fig.add_trace(
                    go.Scatter(
                        x=evaluated["epoch"],
                        y=scale * evaluated[f"{column}_{metric}"],
                        mode="lines+markers" if len(evaluated) < 30 else "lines",
                        marker=dict(size=5),
                        name=name,
                        legendgroup=label,
                        showlegend=col == 1 and name not in in_legend,
                        line=dict(color=color, dash=dash),
                    ),
                    row=row,
                    col=col,
                )
                if col == 1:
                    in_legend.add(name)
    for row in range(1, len(chosen) + 1):
        for col in (1, 2):
            epoch_axis(fig, last_epoch, row=row, col=col)
            if row < len(chosen):  # an axis title here sat on the subplot titles of the row below
                fig.update_xaxes(title_text=None, row=row, col=col)
        fig.update_yaxes(title_text="accuracy (%)", row=row, col=1)
        fig.update_yaxes(title_text="cross-entropy", row=row, col=2)
    fig.update_layout(
        title="Learning curves: train (solid, clean) and test (dashed), evaluated epochs; a row per batch size",
        height=330 * len(chosen) + 220,
        **LAYOUT,
    )
    return fig


def interpolation_figure(landscape: pd.DataFrame, trials: pd.DataFrame, trial_a: str, trial_b: str) -> go.Figure:
    """Loss (blue, left axis) and accuracy (red, right axis) from solution A (x=0) to B (x=1): figure 5."""
    curve = landscape[
        (landscape["kind"] == "interp1d") & (landscape["trial_a"] == trial_a) & (landscape["trial_b"] == trial_b)
    ].sort_values("x")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for split, dash in (("train", "solid"), ("test", "dash")):
        part = curve[curve["split"] == split]
        fig.add_trace(
            go.Scatter(
                x=part["x"], y=part["loss"], mode="lines", name=f"{split} loss", line=dict(color=LOSS_BLUE, dash=dash)
            ),
            secondary_y=False,
        )
        fig.add_trace(
            go.Scatter(
                x=part["x"],
                y=100 * part["acc"],
                mode="lines",
                name=f"{split} accuracy",
                line=dict(color=ACC_RED, dash=dash),
            ),
            secondary_y=True,
        )
    info = with_labels(trials).set_index("trial_id")
    xs = curve["x"].to_numpy(dtype=float)
    for x, trial in ((0.0, trial_a), (1.0, trial_b)):
        label = f"batch {info.loc[trial, 'batch_size']}" if trial in info.index else trial
        on_grid = bool(np.isclose(xs, x).any())
        # A solution the grid has no point at is not on the curve: its line says so, fainter.
        fig.add_vline(
            x=x,
            line=dict(color="gray" if on_grid else "#bbbbbb", dash="dot"),
            annotation_text=label if on_grid else f"{label} (no grid point here)",
            annotation_position="top",
        )
    fig.update_xaxes(title_text="interpolation coefficient a: (1-a) A + a B")
    fig.update_yaxes(title_text="loss", color=LOSS_BLUE, secondary_y=False)
    fig.update_yaxes(
        title_text="accuracy (%)",
        color=ACC_RED,
        secondary_y=True,
        range=[0, 100],
        tickmode="array",
        tickvals=[0, 20, 40, 60, 80, 100],
        showgrid=False,
    )
    bn = curve["bn"].dropna().unique() if "bn" in curve else []
    bn_text = f", BN statistics {bn[0]}" if len(bn) == 1 else ""
    notes = _mark_unusual_points(fig, curve)
    if not (np.isclose(xs, 0.0).any() and np.isclose(xs, 1.0).any()):
        notes.append("the grid has no point at a = 0 or a = 1: the solutions themselves are not on the curve")
    pair = f"A = {trial_label(info, trial_a)} vs B = {trial_label(info, trial_b)}"
    # Every caveat on lines of its own, wrapped to the figure: a subtitle that runs off the edge hides
    # exactly them.
    fig.update_layout(**titled("1-D interpolation between two solutions", [pair + bn_text, *notes]))
    return fig


SUBTITLE_CHARS = 110  # a subtitle line's characters at most (small print across a 1,200-px figure)


def titled(title: str, notes: list[str]) -> dict[str, Any]:
    """The layout of a figure titled `title` with `notes` below it, each wrapped to the figure's width on
    lines of its own (a subtitle that ran off the edge hid exactly its caveats), the top margin fitted."""
    lines = [line for note in notes for line in textwrap.wrap(note, SUBTITLE_CHARS)]
    subtitle = "".join(f"<br><sup>{html.escape(line)}</sup>" for line in lines)
    # The title block hangs from the top of the figure and the plot starts below it: each small-print
    # line takes about 22 px (plotly's line height for <sup>), so margin and height grow with them.
    return {
        **LAYOUT,
        "title": {"text": title + subtitle, "y": 0.98, "yanchor": "top", "yref": "container", "pad": {"t": 14}},
        "margin": {**LAYOUT["margin"], "t": 70 + SUBTITLE_LINE_PX * len(lines)},
        "height": 450 + SUBTITLE_LINE_PX * len(lines),
    }


SUBTITLE_LINE_PX = 22


def _mark_unusual_points(fig: go.Figure, curve: pd.DataFrame) -> list[str]:
    """Hollow markers where BatchNorm variances were clamped, and the notes a reader needs about them.

    A clamped (zero) variance normalizes by sqrt(eps): such points can reach losses of 1e16, which
    would flatten the rest of the curve, so the loss axis then stops above the unclamped points and
    the note says how far the clamped ones go.
    """
    clamped_mask = curve["bn_clamped"].fillna(0) > 0 if "bn_clamped" in curve else pd.Series(False, curve.index)
    clamped, finite = curve[clamped_mask], np.isfinite(curve["loss"].astype(float))
    notes = []
    if not clamped.empty:
        fig.add_trace(
            go.Scatter(
                x=clamped["x"],
                y=clamped["loss"],
                mode="markers",
                name="BN variance clamped",
                marker=dict(color=LOSS_BLUE, symbol="circle-open", size=9),
            ),
            secondary_y=False,
        )
        notes.append(f"{clamped['x'].nunique()} points with negative BN running variances clamped to 0 (hollow)")
        unclamped = curve.loc[~clamped_mask & finite, "loss"]
        highest = curve.loc[clamped_mask & finite, "loss"].max()
        if len(unclamped) and highest > 10 * unclamped.max():
            top = 1.2 * unclamped.max()
            fig.update_yaxes(range=[0, top], secondary_y=False)
            # Above the axis, a clamped point is a hollow marker at its edge with its value, and the
            # loss lines stop before it: drawn off the axis, the line read as a vertical blow-up.
            above = clamped[clamped["loss"].astype(float) > top]
            for trace in fig.data:
                if trace.name in ("train loss", "test loss"):
                    ys = np.array(trace.y, dtype=float)
                    ys[np.isin(np.array(trace.x, dtype=float), above["x"].to_numpy(dtype=float))] = np.nan
                    trace.y = ys
            inside = clamped[clamped["loss"].astype(float) <= top]
            fig.data[-1].update(x=inside["x"], y=inside["loss"])
            above = above.sort_values("loss").drop_duplicates("x", keep="last")  # one label per point: the higher
            # At the loss axis's top edge, which is level with the accuracy axis's 100%: a hollow circle there
            # read as a point at 100% accuracy. An arrow up with its loss printed reads as "off the axis".
            fig.add_trace(
                go.Scatter(
                    x=above["x"],
                    y=[top] * len(above),
                    mode="markers+text",
                    name="BN variance clamped, loss above the axis (printed)",
                    marker=dict(color=LOSS_BLUE, symbol="triangle-up-open", size=10),
                    text=[f"{v:.2g}" for v in above["loss"].astype(float)],
                    textposition="bottom center",
                    textfont=dict(size=10, color=LOSS_BLUE),
                    hovertemplate="a %{x}: loss %{text} (BN variances clamped)<extra></extra>",
                    cliponaxis=False,
                ),
                secondary_y=False,
            )
            notes.append(f"clamped points above the axis (arrows at its top edge) reach loss {highest:.3g}")
    missing = curve[~finite]
    if not missing.empty:
        xs = ", ".join(f"{x:g}" for x in sorted(missing["x"].unique()))
        # On the loss axis, at its top: on the accuracy axis's 100% an x read as a point at 100% accuracy.
        losses = curve.loc[finite & ~clamped_mask, "loss"].astype(float)
        ceiling = fig.layout.yaxis.range[1] if fig.layout.yaxis.range else (float(losses.max()) if len(losses) else 1.0)
        fig.add_trace(
            go.Scatter(
                x=sorted(missing["x"].unique()),
                y=[ceiling] * missing["x"].nunique(),
                mode="markers+text",
                name="loss not finite (marked at the top)",
                marker=dict(color=LOSS_BLUE, symbol="x", size=11),
                text=["not finite"] * missing["x"].nunique(),
                textposition="bottom center",
                textfont=dict(size=10, color=LOSS_BLUE),
                cliponaxis=False,
            ),
            secondary_y=False,
        )
        notes.append(f"loss not finite at a = {xs} (x at the top of the loss axis; the curve has a gap there)")
    return notes


def sharpness_vs_batch(trials: pd.DataFrame, sharpness: pd.DataFrame) -> go.Figure:
    """Each sharpness measure against batch size, one line per augmentation x lr rule (mean over seeds)."""
    table = sharpness_table(trials, sharpness)
    measures = measures_shown(table)
    colours = setting_colours(trials)
    fig = make_subplots(
        rows=1, cols=max(1, len(measures)), subplot_titles=[t for _, t, _ in measures], horizontal_spacing=0.08
    )
    unbounded = []
    for col, (measure, _, unit) in enumerate(measures, start=1):
        fig.update_yaxes(title_text=unit, row=1, col=col)
        stats = with_measurement_interval(
            aggregate_over_seeds(table[table["measure"] == measure], "value"), table[table["measure"] == measure]
        )
        if np.isinf(stats["ci_high"]).any():
            unbounded.append(measure)
        for (aug, rule), curve in stats.groupby(["augmentation_label", "lr_scaling"], sort=True):
            curve = curve.sort_values("batch_size")
            upper = (curve["ci_high"] - curve["mean"]).replace(np.inf, np.nan)
            fig.add_trace(
                go.Scatter(
                    x=curve["batch_size"],
                    y=curve["mean"],
                    mode="lines+markers",
                    name=curve_label(aug, rule),
                    legendgroup=f"{aug}-{rule}",
                    showlegend=col == 1,
                    line=dict(color=colours.get((aug, rule), PALETTE[0])),
                    customdata=curve[["interval"]],
                    hovertemplate="%{y:.4g} (%{customdata[0]})",
                    error_y=dict(
                        type="data",
                        symmetric=False,
                        array=upper,
                        arrayminus=curve["mean"] - curve["ci_low"],
                        visible=bool(curve["ci_low"].notna().any()),
                    ),
                ),
                row=1,
                col=col,
            )
        _batch_axis(fig, list(table["batch_size"]), row=1, col=col)
    # The title short and the rest small print under it: one line of both ran under plotly's toolbar in the
    # page and off the edge of an exported PNG.
    notes = ["bars: 95% over seeds, or the measurement's own interval for one seed"]
    notes += [f"{', '.join(unbounded)}: an interval's upper end is unbounded (not drawn)"] if unbounded else []
    fig.update_layout(**titled("Sharpness and the other per-trial measures against batch size", notes))
    return fig


def by_model_figure(trials: pd.DataFrame, sharpness: pd.DataFrame) -> go.Figure:
    """The depth question at a glance: one column per model, rows test accuracy, gap and each sharpness
    measure against batch size; within a panel one line per setting (augmentation and the other compared
    keys), the same colour in every panel; mean and 95% interval over seeds."""
    done = trials[trials["status"] == "completed"]
    if "label_within_model" not in done:
        done = done.assign(label_within_model=with_labels(done)["augmentation_label"])
    models = sorted(done["model"].dropna().unique())
    table = sharpness_table(trials, sharpness) if len(sharpness) else pd.DataFrame(columns=["measure"])
    if len(table) and "label_within_model" not in table:
        table = table.assign(label_within_model=table["augmentation_label"])
    panels = [("test accuracy (%)", done, "final_test_acc", 100.0), ("gap (points)", done, "gap_acc", 100.0)]
    panels += [
        (f"{title}<br><sup>{unit}</sup>", table[table["measure"] == m], "value", 1.0)
        for m, title, unit in (measures_shown(table) if len(table) else [])
    ]
    fig = make_subplots(
        rows=len(panels), cols=max(1, len(models)), column_titles=models, vertical_spacing=0.06, horizontal_spacing=0.06
    )
    settings = sorted(set(zip(done["label_within_model"].astype(str), done["lr_scaling"])))
    colours = {setting: PALETTE[i % len(PALETTE)] for i, setting in enumerate(settings)}
    by = ["batch_size", "label_within_model", "lr_scaling"]
    legended: set[tuple[str, str]] = set()  # one legend entry per setting, at its first line
    for row, (title, frame, value, scale) in enumerate(panels, start=1):
        for col, model in enumerate(models, start=1):
            stats = aggregate_over_seeds(frame[frame["model"] == model], value, by=by)
            for (label, rule), curve in stats.groupby(["label_within_model", "lr_scaling"], sort=True):
                curve = curve.sort_values("batch_size")
                fig.add_trace(
                    go.Scatter(
                        x=curve["batch_size"],
                        y=scale * curve["mean"],
                        mode="lines+markers",
                        name=curve_label(label, rule),
                        legendgroup=f"{label}-{rule}",
                        showlegend=(label, rule) not in legended,
                        line=dict(color=colours.get((label, rule), "#555")),
                        error_y=dict(
                            type="data",
                            symmetric=False,
                            array=scale * (curve["ci_high"] - curve["mean"]),
                            arrayminus=scale * (curve["mean"] - curve["ci_low"]),
                            visible=bool(curve["n"].gt(1).any()),
                        ),
                        customdata=curve["n"],
                        hovertemplate=f"{model}<br>batch %{{x}}<br>%{{y:.4g}}<br>n=%{{customdata}}<extra></extra>",
                    ),
                    row=row,
                    col=col,
                )
                legended.add((label, rule))
            _batch_axis(fig, list(done["batch_size"]), row=row, col=col)
            if row < len(panels):
                fig.update_xaxes(title_text="", row=row, col=col)
        fig.update_yaxes(title_text=title, row=row, col=1)
    height = 260 * len(panels) + 160
    fig.update_layout(
        title="By model: accuracy, gap and sharpness against batch size (mean, 95% interval over seeds)",
        height=height,
        **{**LAYOUT, "legend": dict(orientation="h", x=0, y=-70 / (height - 160))},  # just below the last row
    )
    return fig


def with_measurement_interval(stats: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Seed intervals where there are seeds; where one trial stands alone, its measurement's own interval
    (the noise scale's bootstrap, the Hessian trace's standard error) when it has one."""
    stats = stats.assign(interval=np.where(stats["n"] > 1, "95% over seeds", "one trial"))
    if "ci_low" not in rows or rows["ci_low"].isna().all():
        return stats
    single = rows.dropna(subset=["ci_low"]).groupby(GROUP).filter(lambda g: len(g) == 1)
    keyed = single.set_index(GROUP)[["ci_low", "ci_high"]]
    for index in stats.index[stats["n"] == 1]:
        key = tuple(stats.loc[index, GROUP])
        if key in keyed.index:
            stats.loc[index, ["ci_low", "ci_high"]] = keyed.loc[key].to_numpy(dtype=float)
            stats.loc[index, "interval"] = "the measurement's own interval"
    return stats


def trial_label(info: pd.DataFrame, trial_id: str) -> str:
    """'batch 128, mixup a=1, seed 0' for a trial of `info` (labelled trials indexed by trial_id)."""
    if trial_id not in info.index:
        return trial_id
    row = info.loc[trial_id]
    return f"batch {row['batch_size']}, {curve_label(row['augmentation_label'], row['lr_scaling'])}, seed {row['seed']}"


def loss_contour(grid: pd.DataFrame) -> go.Contour:
    """Training-loss contours of a (y rows x x columns) grid, labelled, on the Viridis scale."""
    return go.Contour(
        x=grid.columns,
        y=grid.index,
        z=grid.values,
        colorscale="Viridis",
        contours=dict(showlabels=True),
        colorbar=dict(title="train loss"),
        name="train loss",
    )


def trajectory_figure(trajectory: pd.DataFrame, trials: pd.DataFrame, trial_id: str) -> go.Figure:
    """Li et al. 2018 (section 7): the weights' path projected on its first two principal components,
    over the training-loss contours of that plane; axes carry the variance each component explains."""
    info = with_labels(trials).set_index("trial_id")
    rows = trajectory[trajectory["trial_id"] == trial_id]
    surface = rows[rows["kind"] == "surface"].pivot_table(index="y", columns="x", values="loss")
    path = rows[rows["kind"] == "path"].sort_values("epoch")
    fig = go.Figure(loss_contour(surface))
    fig.add_trace(
        go.Scatter(
            x=path["x"],
            y=path["y"],
            mode="lines+markers+text",
            name="trajectory",
            text=[f"{int(e)}" for e in path["epoch"]],
            textposition="top right",
            textfont=dict(color=ACC_RED, size=12),
            line=dict(color=ACC_RED),
            marker=dict(size=7),
            customdata=path[["loss"]],
            hovertemplate="epoch %{text}: loss %{customdata[0]:.4g}",
        )
    )
    explained_x, explained_y = rows["explained_x"].iloc[0], rows["explained_y"].iloc[0]
    fig.update_xaxes(title_text=f"1st principal component: {100 * explained_x:.1f}% of the variance")
    fig.update_yaxes(title_text=f"2nd principal component: {100 * explained_y:.1f}% of the variance")
    fig.update_layout(
        title=f"Optimization trajectory (epochs labelled): {trial_label(info, trial_id)}", **{**LAYOUT, "legend": {}}
    )
    return fig


def hessian_density_figure(spectrum: pd.DataFrame, trials: pd.DataFrame) -> go.Figure:
    """Hessian eigenvalue densities of every measured trial overlaid, log density (as PyHessian plots)."""
    info = with_labels(trials).set_index("trial_id")
    order = sorted(
        spectrum["trial_id"].unique(),
        key=lambda t: (
            (info.loc[t, "batch_size"], info.loc[t, "augmentation_label"], info.loc[t, "seed"])
            if t in info.index
            else (0, t, 0)
        ),
    )
    fig = go.Figure()
    floor = 1e-8  # the smoothed density decays to 0 between clusters; a log axis needs a floor
    for i, trial_id in enumerate(order):
        curve = spectrum[spectrum["trial_id"] == trial_id].sort_values("eigenvalue")
        fig.add_trace(
            go.Scatter(
                x=curve["eigenvalue"],
                y=curve["density"].clip(lower=floor),
                mode="lines",
                name=trial_label(info, trial_id),
                line=dict(color=PALETTE[i % len(PALETTE)]),
            )
        )
    fig.update_xaxes(title_text="eigenvalue of the training-loss Hessian")
    fig.update_yaxes(type="log", title_text="density (log)", exponentformat="power")
    fig.update_layout(title="Hessian eigenvalue density (stochastic Lanczos quadrature)", **LAYOUT)
    return fig


@dataclass(frozen=True)
class DirectionAxes:
    """Which landscape slices a set of figures draws, and how it names their axes."""

    kind: str  # the landscape kinds `<kind>1d` and `<kind>2d`
    one: str  # "a filter-normalized random direction"
    two: str  # "two filter-normalized random directions"
    title: str  # the 1-D figure's title
    note: str = ""  # what a reader must know to read the 1-D figure (small print under its title)


FILTER_NORMALIZED = DirectionAxes(
    "random",
    "step along a filter-normalized random direction",
    "two filter-normalized random directions",
    "Random-direction 1-D slices of the training loss",
)
HESSIAN_EIGENVECTORS = DirectionAxes(
    "eigen",
    "distance along the Hessian's top eigenvector (parameter units)",
    "the Hessian's top two eigenvectors (parameter units)",
    "The training loss along each trial's sharpest direction (its Hessian's top eigenvector)",
    "near 0 the loss rises about lambda_1 x^2 / 2, but not exactly: ReLU and max-pool switches between the points "
    "add curvature that Hessian-vector products do not see (on a trained VGG9 the second difference was 20% below "
    "lambda_1 at h = 0.05 and 35% below at h = 0.005, 10% above on a smaller one)",
)


def random_direction_figures(
    landscape: pd.DataFrame, trials: pd.DataFrame, axes: DirectionAxes = FILTER_NORMALIZED
) -> list[go.Figure]:
    """1-D slices (all trials in one figure: each setting in its colour of every other figure, each batch size
    its dash) and one 2-D contour figure per trial."""
    figures = []
    info = with_labels(trials).set_index("trial_id")
    colours = setting_colours(trials)
    batches = sorted(info["batch_size"].dropna().unique()) if "batch_size" in info else []

    def label(trial_id: str) -> str:
        return trial_label(info, trial_id)

    def line(i: int, trial_id: str) -> dict[str, str]:
        if trial_id not in info.index:  # a trial the table lacks: a colour of its own
            return dict(color=PALETTE[i % len(PALETTE)])
        row = info.loc[trial_id]
        dash = DASHES[batches.index(row["batch_size"]) % len(DASHES)] if row["batch_size"] in batches else "solid"
        return dict(color=colours.get((str(row["augmentation_label"]), str(row["lr_scaling"])), "gray"), dash=dash)

    one = landscape[(landscape["kind"] == f"{axes.kind}1d") & (landscape["split"] == "train")]
    if len(one):
        fig = go.Figure()
        for i, (trial_id, curve) in enumerate(one.groupby("trial_a")):
            curve = curve.sort_values("x")
            fig.add_trace(
                go.Scatter(x=curve["x"], y=curve["loss"], mode="lines", name=label(trial_id), line=line(i, trial_id))
            )
        fig.update_xaxes(title_text=axes.one)
        fig.update_yaxes(title_text="train loss")
        fig.update_layout(**titled(axes.title, [axes.note] if axes.note else []))
        figures.append(fig)
    two = landscape[(landscape["kind"] == f"{axes.kind}2d") & (landscape["split"] == "train")]
    if len(two):
        figures.append(surfaces_grid(two, info, axes.two))
        figures.append(surfaces_3d(two, info))
    return figures


SURFACE_DECADES = 2.0  # contour levels span the lowest loss of the grid to 100 times it
SURFACE_LEVELS_PER_DECADE = 10  # log-spaced: dense near the minimum, where the basins differ


def surface_layout(two: pd.DataFrame, info: pd.DataFrame) -> tuple[list[str], int, int, float, float]:
    """The surfaces' trials in the paper's order (small batch first, without augmentation before with
    it), the grid's columns and rows, and the shared log10 loss range: the lowest loss (rounded down to a
    level) to 100 times it."""

    def order(trial_id: str) -> tuple:
        if trial_id not in info.index:
            return (0, "", 0, trial_id)
        row = info.loc[trial_id]
        label = row["augmentation_label"]
        return (row["batch_size"], label != "none", label, row.get("seed", 0), trial_id)

    trial_ids = sorted(two["trial_a"].unique(), key=order)
    cols = 1 if len(trial_ids) == 1 else 2
    positive = two["loss"].astype(float)
    positive = positive[np.isfinite(positive) & (positive > 0)]
    low = float(np.floor(np.log10(positive.min()) * SURFACE_LEVELS_PER_DECADE) / SURFACE_LEVELS_PER_DECADE)
    return trial_ids, cols, -(-len(trial_ids) // cols), low, low + SURFACE_DECADES


def loss_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """log10 positions of the losses 1, 2, 5 x 10^k within [low, high], and their labels."""
    decades = range(int(np.floor(low)), int(np.ceil(high)) + 1)
    ticks = [np.log10(m * 10.0**d) for d in decades for m in (1, 2, 5) if low <= np.log10(m * 10.0**d) <= high]
    return ticks, [f"{10**t:.3g}" for t in ticks]


def surface_values(two: pd.DataFrame, info: pd.DataFrame, trial_id: str) -> dict[str, Any]:
    """One trial's surface as a trace's data, for the contour grid and the 3-D view alike: the grid (y
    rows, x columns), log10 train loss as z (a non-positive or non-finite loss is a hole, NaN) on the
    shared colour axis, the loss itself in the hover."""
    grid = two[two["trial_a"] == trial_id].pivot_table(index="y", columns="x", values="loss")
    loss = grid.to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(loss > 0, np.log10(loss), np.nan)
    return dict(
        x=grid.columns,
        y=grid.index,
        z=z,
        coloraxis="coloraxis",
        customdata=loss,
        hovertemplate="d1 %{x:.2f}, d2 %{y:.2f}: train loss %{customdata:.4g}<extra></extra>",
        name=trial_label(info, trial_id),
    )


def loss_coloraxis(low: float, high: float) -> dict[str, Any]:
    """The surfaces' one colour scale: log10 train loss from `low` to `high`, labelled in loss."""
    ticks, labels = loss_ticks(low, high)
    return dict(
        colorscale="Viridis", cmin=low, cmax=high, colorbar=dict(title="train loss", tickvals=ticks, ticktext=labels)
    )


def surfaces_3d(two: pd.DataFrame, info: pd.DataFrame) -> go.Figure:
    """The same surfaces as 3-D views (Li et al.'s surface plots): height and colour the train loss on a
    log axis, every panel on the same height range (the lowest loss to the highest, nothing clipped) and
    the same colour scale as the contour grid, cubic boxes, so basins compare in shape and depth."""
    trial_ids, cols, rows, low, high = surface_layout(two, info)
    losses = two["loss"].astype(float)
    finite = losses[np.isfinite(losses) & (losses > 0)]
    top = max(high, float(np.log10(finite.max())))
    fig = make_subplots(
        rows=rows,
        cols=cols,
        specs=[[{"type": "surface"}] * cols for _ in range(rows)],
        subplot_titles=[trial_label(info, t) for t in trial_ids],
        horizontal_spacing=0.02,
        vertical_spacing=0.06,
    )
    ticks, labels = loss_ticks(low, top)
    for i, trial_id in enumerate(trial_ids):
        fig.add_trace(
            go.Surface(**surface_values(two, info, trial_id)),
            row=i // cols + 1,
            col=i % cols + 1,
        )
        scene = "scene" if i == 0 else f"scene{i + 1}"
        fig.layout[scene].update(
            aspectmode="cube",
            xaxis_title="direction 1",
            yaxis_title="direction 2",
            zaxis=dict(title="train loss", range=[low, top], tickvals=ticks, ticktext=labels),
        )
    fig.update_layout(
        title="2-D loss surfaces in 3-D: log height, the same range in every panel; colours as the contour grid "
        "(saturating at 100 x the lowest loss)",
        coloraxis=loss_coloraxis(low, high),
        height=120 + 520 * rows,
        **{**LAYOUT, "legend": {}},
    )
    return fig


def surfaces_grid(two: pd.DataFrame, info: pd.DataFrame, along: str = FILTER_NORMALIZED.two) -> go.Figure:
    """Every 2-D random-direction surface in one grid (the seed paper's figures 1-4: small and large batch,
    without and with augmentation), each panel square, all on one log-spaced set of contour levels from
    the lowest loss to 100 times it and one colour bar, so that basins compare at a glance."""

    trial_ids, cols, rows, low, high = surface_layout(two, info)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[trial_label(info, t) for t in trial_ids],
        horizontal_spacing=0.1,
        vertical_spacing=0.12 if rows > 1 else 0.1,
    )
    for i, trial_id in enumerate(trial_ids):
        fig.add_trace(
            go.Contour(
                **surface_values(two, info, trial_id),
                contours=dict(start=low, end=high, size=1 / SURFACE_LEVELS_PER_DECADE),
                line=dict(width=0.5),
            ),
            row=i // cols + 1,
            col=i % cols + 1,
        )
        axis = "x" if i == 0 else f"x{i + 1}"
        fig.update_yaxes(
            scaleanchor=axis,
            scaleratio=1,
            constrain="domain",
            title_text="direction 2",
            row=i // cols + 1,
            col=i % cols + 1,
        )
        fig.update_xaxes(constrain="domain", title_text="direction 1", row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(
        title=f"2-D loss surfaces along {along} (one colour scale, log-spaced levels)",
        coloraxis=loss_coloraxis(low, high),
        height=120 + 480 * rows,
        **{**LAYOUT, "legend": {}},
    )
    return fig


def steps_to_target_figure(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    target: float,
    sharpness: pd.DataFrame | None = None,
    target_rule: str | None = None,
) -> go.Figure:
    """Optimizer steps to reach `target` test accuracy against batch size, log-log, with perfect scaling and,
    where the gradient noise scale was measured, McCandlish et al.'s prediction S = S_min (1 + B_crit / B)
    with B_crit ~ B_simple (S_min from the smallest batch), B_crit marked and labelled on the axis.
    `target_rule` says how the target was chosen (the subtitle)."""
    reached = steps_to_target(trials, epochs, target)
    stats = aggregate_over_seeds(reached, "steps_to_target")
    noise = pd.DataFrame()
    if sharpness is not None and len(sharpness):
        noise = with_labels(trials).merge(sharpness[sharpness["measure"] == "noise_scale"], on="trial_id")
    fig = go.Figure()
    colours = setting_colours(trials)
    drawn: dict[tuple, list[str]] = {}  # each curve's points -> the settings drawn there (overlaps said)
    ys: list[float] = []
    labels = 0  # B_crit labels placed so far: each one a row above the last, never on top of another
    for i, ((aug, rule), curve) in enumerate(stats.groupby(["augmentation_label", "lr_scaling"], sort=True)):
        curve = curve.sort_values("batch_size")
        color = colours.get((aug, rule), PALETTE[i % len(PALETTE)])
        name = curve_label(aug, rule)
        drawn.setdefault(tuple(zip(curve["batch_size"], curve["mean"].round(9))), []).append(name)
        ys += list(curve["mean"])
        fig.add_trace(
            go.Scatter(x=curve["batch_size"], y=curve["mean"], mode="lines+markers", name=name, line=dict(color=color))
        )
        first = curve.iloc[0]
        perfect = first["mean"] * first["batch_size"] / curve["batch_size"]
        ys += list(perfect)
        fig.add_trace(
            go.Scatter(
                x=curve["batch_size"],
                y=perfect,
                mode="lines",
                name="perfect scaling (dotted, from each curve's smallest batch)",
                legendgroup="perfect",
                showlegend=i == 0,  # one legend entry per meaning
                line=dict(color=color, dash="dot"),
                opacity=0.6,
            )
        )
        mine = noise[(noise["augmentation_label"] == aug) & (noise["lr_scaling"] == rule)] if len(noise) else noise
        b_crit = float(mine["value"].mean()) if len(mine) else float("nan")
        if np.isfinite(b_crit) and b_crit > 0:
            s_min = first["mean"] / (1 + b_crit / first["batch_size"])
            batches = np.geomspace(curve["batch_size"].min(), curve["batch_size"].max(), 50)
            fig.add_trace(
                go.Scatter(
                    x=batches,
                    y=s_min * (1 + b_crit / batches),
                    mode="lines",
                    name=f"{name}: noise-scale prediction, B_crit ~ B_simple = {b_crit:.0f}",
                    line=dict(color=color, dash="dash"),
                    opacity=0.8,
                )
            )
            fig.add_vline(x=b_crit, line=dict(color=color, dash="dash", width=1))
            fig.add_annotation(  # on a log axis an annotation's x is log10 of the value (a shape's is not)
                x=float(np.log10(b_crit)),
                y=B_CRIT_LABEL_ROW * labels,
                xref="x",
                yref="y domain",
                text=f"B_crit {b_crit:.0f}",
                showarrow=False,
                xanchor="left",
                yanchor="bottom",
                font=dict(color=color),
            )
            labels += 1
    _batch_axis(fig, list(trials["batch_size"]))
    fig.update_yaxes(type="log", title_text="optimizer steps to target", **log_ticks(ys))
    notes = [target_rule] if target_rule else []
    notes += [
        f"{' and '.join(names)} coincide (one line drawn over the other)" for names in drawn.values() if len(names) > 1
    ]
    notes += never_reached(trials, reached, target)
    fig.update_layout(**titled(f"Steps to {100 * target:.0f}% test accuracy (Shallue et al. 2018)", notes))
    return fig


B_CRIT_LABEL_ROW = 0.07  # of the plot's height: each setting's B_crit label a row above the one before


def never_reached(trials: pd.DataFrame, reached: pd.DataFrame, target: float) -> list[str]:
    """A note for each setting and batch size of which no trial reached the target (a point missing from the
    figure, or a whole setting, would otherwise vanish without a word)."""
    labelled = with_labels(trials)
    if labelled.empty:
        return []
    key = ["augmentation_label", "lr_scaling", "batch_size"]
    hit = set(map(tuple, reached[key].astype(str).to_numpy())) if len(reached) else set()
    missing: dict[str, list[str]] = {}
    for aug, rule, batch in sorted(
        set(map(tuple, labelled[key].to_numpy())), key=lambda k: (str(k[0]), str(k[1]), k[2])
    ):
        if (str(aug), str(rule), str(batch)) not in hit:
            missing.setdefault(curve_label(str(aug), str(rule)), []).append(str(batch))
    return [
        f"not drawn: {name} never reached {100 * target:.0f}% at batch {', '.join(sizes)}"
        for name, sizes in missing.items()
    ]


def log_ticks(values: list[float]) -> dict[str, Any]:
    """Tick values at clean numbers across a log axis's range: 1, 2, 5 x 10^k, or every digit where the
    range spans less than that gives three of (a decade-only axis showed one label, '10')."""
    finite = [v for v in values if np.isfinite(v) and v > 0]
    if not finite:
        return {}
    low, high = min(finite), max(finite)
    decades = range(int(np.floor(np.log10(low))), int(np.floor(np.log10(high))) + 1)
    for mantissas in ((1, 2, 5), tuple(range(1, 10))):
        ticks = [m * 10.0**d for d in decades for m in mantissas if low / 1.05 <= m * 10.0**d <= high * 1.05]
        if len(ticks) >= 3:
            break
    if len(ticks) < 3:  # a range inside one digit step: its ends and middle
        ticks = sorted({low, float(np.sqrt(low * high)), high})
    # The data's extremes get a tick of their own unless one is within 15% (its label would collide): the top
    # point of a steps-to-target curve sat above the last clean tick with no number beside it.
    for end in (low, high):
        if all(abs(np.log10(end / t)) > np.log10(1.15) for t in ticks):
            ticks = sorted([*ticks, float(f"{end:.3g}")])
    return {"tickvals": ticks, "ticktext": [f"{t:.3g}" for t in ticks]}


STATUS_COLORS = {"completed": "#e8f5e9", "diverged": "#fff3e0", "failed": "#ffebee"}


RESULTS_SHOWN = ["final_test_acc", "gap_acc", "epochs_completed", "train_time_s"]  # right after the id
WHERE_SHOWN = ["device", "host"]


def trial_table_columns(trials: pd.DataFrame, roles: dict[str, tuple[str, bool]]) -> list[str]:
    """The trial record's shown fields (its roles travel in the Parquet schema): the id and status, the
    results, then the swept and derived values and where it ran, each only where it differs between
    trials (batch size always): a value every trial shares is said once above the table instead."""
    # a grid study's phase ('grid') and search group ('') say nothing: left out
    shown = [n for n, (role, show) in roles.items() if show and n in trials and not trials[n].isin(["", "grid"]).all()]
    conditions = [n for n in shown if roles[n][0] in ("swept", "derived") and (varies(trials, n) or n == "batch_size")]
    where = [c for c in (*WHERE_SHOWN, *DATA_COLUMNS) if c in trials and varies(trials, c)]
    results = [c for c in RESULTS_SHOWN if c in trials]
    errors = ["error"] if "error" in trials and trials["error"].fillna("").astype(str).str.len().gt(0).any() else []
    return ["trial_id", "status", *results, *conditions, *where, *errors]


def varies(trials: pd.DataFrame, name: str) -> bool:
    return trials[name].map(lambda v: "-" if v is None or v != v else str(v)).nunique() > 1


def shared_values(trials: pd.DataFrame, roles: dict[str, tuple[str, bool]]) -> list[tuple[str, Any]]:
    """(column, value) of the shown conditions and places every trial shares: the line above the table."""
    names = [n for n, (role, show) in roles.items() if show and role in ("swept", "derived") and n in trials]
    names += [c for c in (*WHERE_SHOWN, *DATA_COLUMNS) if c in trials]
    return [
        (n, trials[n].iloc[0])
        for n in names
        if n != "batch_size" and len(trials) and not varies(trials, n) and not trials[n].isin(["", "grid"]).all()
    ]


DATA_COLUMNS = ["dataset", "data_root", "train_subset", "test_subset"]  # the same in a study: said in the header too


def _cell(column: str, value: Any) -> tuple[str, str]:
    """(shown text, sort key) of one table cell."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-", ""
    if column in ("final_test_acc", "gap_acc"):
        return f"{100 * value:.2f}%", f"{value:.12e}"
    if column == "peak_lr":
        return f"{value:.4g}", f"{value:.12e}"
    if column == "train_time_s":
        return f"{value:.0f}", f"{value:.12e}"
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return str(value), f"{float(value):.12e}"
    return str(value), str(value)


def trials_table_html(trials: pd.DataFrame, roles: dict[str, tuple[str, bool]]) -> str:
    """Every trial in an HTML table: full ids, sortable by any column (click its header), errors folded;
    diverged and failed trials stay visible and coloured."""
    columns = trial_table_columns(trials, roles)
    shared = shared_values(trials, roles)
    every = "; ".join(f"{c.replace('_', ' ')} {_cell(c, v)[0]}" for c, v in shared)
    order = [c for c in ("batch_size", "augmentation_label", "lr_scaling", "seed") if c in trials]
    shown = with_labels(trials).sort_values(order) if order else with_labels(trials)
    head = "".join(f"<th onclick='sortTrials(this)'>{html.escape(c.replace('_', ' '))}</th>" for c in columns)
    rows = []
    for _, row in shown.iterrows():
        cells = []
        for column in columns:
            value = row.get(column)
            if column == "error" and isinstance(value, str) and value:
                first = value.strip().splitlines()[0]
                cells.append(
                    f"<td data-key='{html.escape(first)}'><details><summary>{html.escape(first[:60])}</summary>"
                    f"<pre>{html.escape(value)}</pre></details></td>"
                )
                continue
            text, key = _cell(column, value)
            cells.append(f"<td data-key='{html.escape(key)}'>{html.escape(text)}</td>")
        color = STATUS_COLORS.get(str(row.get("status")), "white")
        rows.append(f"<tr style='background:{color}'>{''.join(cells)}</tr>")
    said = f"<p>Every trial: {html.escape(every)}.</p>" if every else ""
    return (
        f"<h2>{words.every(len(trials), 'trial').capitalize()}</h2>{said}"
        f"<table class='trials'><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>{SORT_SCRIPT}"
    )


# Click a header to sort by that column (again: the other way); numbers sort as numbers.
SORT_SCRIPT = """<script>
function sortTrials(th) {
  const table = th.closest('table'), body = table.tBodies[0], index = th.cellIndex;
  const up = th.dataset.order !== 'up'; th.dataset.order = up ? 'up' : 'down';
  const key = tr => tr.cells[index].dataset.key;
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
    const c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
    return up ? c : -c;
  });
  rows.forEach(tr => body.appendChild(tr));
}
</script>"""


SEARCH_MARKERS = {"completed": "circle", "stopped": "x-thin-open", "diverged": "diamond-open", "failed": "cross"}


def searched_key(samples: pd.DataFrame) -> str:
    """The searched key shown on a search figure's x axis: the first that varies among the samples."""
    for key in ("base_lr", "warmup_epochs", "momentum", "weight_decay"):
        if key in samples and samples[key].nunique() > 1:
            return key
    return "base_lr"


def search_figure(trials: pd.DataFrame, epochs: pd.DataFrame | None = None) -> go.Figure:
    """Every search sample: its searched value against its best test accuracy, one colour per group;
    samples ASHA stopped early are open crosses, diverged ones open diamonds; each group's winner ringed."""
    samples = trials[trials["phase"] == "sample"]
    key = searched_key(samples)
    winners = best_per_group(trials, epochs)
    fig = go.Figure()
    for i, (group, rows) in enumerate(samples.groupby("search_group", sort=True)):
        color = PALETTE[i % len(PALETTE)]
        accuracy = 100 * rows["best_test_acc"].astype(float)
        fig.add_trace(
            go.Scatter(
                x=rows[key],
                y=accuracy.fillna(0.0),  # diverged before any evaluation: drawn at 0 (its marker says why)
                mode="markers",
                name=str(group),
                marker=dict(
                    color=color, size=10, symbol=[SEARCH_MARKERS.get(s, "circle") for s in rows["status"]], line_width=2
                ),
                customdata=rows[["status", "epochs_completed"]],
                hovertemplate="%{x:.4g}: %{y:.2f}% (%{customdata[0]} after %{customdata[1]} epochs)<extra></extra>",
            )
        )
        if group in winners:
            best = winners[group]
            fig.add_trace(
                go.Scatter(
                    x=[best[key]],
                    y=[100 * float(best["best_test_acc"])],
                    mode="markers",
                    marker=dict(color="rgba(0,0,0,0)", size=20, line=dict(color=color, width=2)),
                    name=f"{group}: winner",
                    showlegend=False,
                )
            )
    if key in ("base_lr", "weight_decay"):
        fig.update_xaxes(type="log")
    fig.update_xaxes(title_text=key.replace("_", " "))
    fig.update_yaxes(title_text="best test accuracy (%)")
    fig.update_layout(
        title="Search: every sample's best test accuracy, one colour per group<br><sup>circles ran to the end; "
        "open crosses were stopped early by ASHA; open diamonds diverged; each group's winner is ringed</sup>",
        **LAYOUT,
    )
    return fig


def best_lr_figure(trials: pd.DataFrame, epochs: pd.DataFrame | None = None) -> go.Figure:
    """Each group's winning base LR against batch size, log-log, with the linear and square-root scaling
    rules drawn from the smallest batch's winner (as Goyal et al. and Shallue et al. plot it)."""
    winners = pd.DataFrame(best_per_group(trials, epochs).values())
    fig = go.Figure()
    for i, (label, rows) in enumerate(with_labels(winners).groupby("augmentation_label", sort=True)):
        rows = rows.sort_values("batch_size")
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=rows["batch_size"],
                y=rows["base_lr"],
                mode="lines+markers",
                name=f"{label}: best",
                line=dict(color=color),
            )
        )
        b0, lr0 = float(rows["batch_size"].iloc[0]), float(rows["base_lr"].iloc[0])
        batches = rows["batch_size"].astype(float)
        for rule, scale, dash in (("linear", batches / b0, "dot"), ("sqrt", np.sqrt(batches / b0), "dash")):
            fig.add_trace(
                go.Scatter(
                    x=rows["batch_size"],
                    y=lr0 * scale,
                    mode="lines",
                    name=f"{label}: {rule} rule",
                    line=dict(color=color, dash=dash, width=1),
                    opacity=0.7,
                )
            )
    _batch_axis(fig, list(winners["batch_size"]) if len(winners) else [])
    fig.update_yaxes(type="log", dtick="D2", title_text="best base learning rate")  # 1, 2, 5 of each decade
    fig.update_layout(title="The searched learning rate against batch size (log-log)", **LAYOUT)
    return fig
