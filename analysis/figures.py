"""One function per figure; each returns a plotly Figure. Accuracies are shown in percent."""

from __future__ import annotations


import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from analysis.summarize import GROUP, aggregate_over_seeds, sharpness_table, steps_to_target, with_labels

LOSS_BLUE, ACC_RED = "#1f77b4", "#d62728"
PALETTE = qualitative.D3 + qualitative.Dark24
SHARPNESS_MEASURES = [("hessian_eig1", "Hessian top eigenvalue"), ("hessian_trace", "Hessian trace"),
                      ("eps_sharpness", "epsilon-sharpness"), ("noise_scale", "gradient noise scale B_simple")]
LAYOUT = dict(template="plotly_white", font=dict(size=13), legend=dict(orientation="h", y=-0.2, x=0),
              margin=dict(l=70, r=70, t=70, b=90))


def curve_label(augmentation: str, rule: str) -> str:
    return f"{augmentation}, lr {rule}"


def _batch_axis(fig: go.Figure, batch_sizes: list[int], **where: int) -> None:
    """A log2 batch-size axis labelled with the actual batch sizes."""
    ticks = sorted(set(int(b) for b in batch_sizes))
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[str(t) for t in ticks], title_text="batch size", **where)


def accuracy_and_gap_vs_batch(trials: pd.DataFrame) -> go.Figure:
    """Test accuracy and generalization gap against batch size, mean and 95% interval over seeds."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("test accuracy", "generalization gap (train - test accuracy)"),
                        horizontal_spacing=0.12)
    done = with_labels(trials[trials["status"] == "completed"])
    for col, value in ((1, "final_test_acc"), (2, "gap_acc")):
        stats = aggregate_over_seeds(done, value)
        for i, ((aug, rule), curve) in enumerate(stats.groupby(["augmentation_label", "lr_scaling"], sort=True)):
            curve = curve.sort_values("batch_size")
            has_ci = curve["n"].gt(1).any()
            fig.add_trace(go.Scatter(
                x=curve["batch_size"], y=100 * curve["mean"], mode="lines+markers", name=curve_label(aug, rule),
                legendgroup=f"{aug}-{rule}", showlegend=col == 1, line=dict(color=PALETTE[i % len(PALETTE)]),
                error_y=dict(type="data", symmetric=False, array=100 * (curve["ci_high"] - curve["mean"]),
                             arrayminus=100 * (curve["mean"] - curve["ci_low"]), visible=bool(has_ci)),
                customdata=curve["n"], hovertemplate="batch %{x}<br>%{y:.2f}%<br>n=%{customdata}<extra></extra>"),
                row=1, col=col)
        _batch_axis(fig, list(done["batch_size"]), row=1, col=col)
    fig.update_yaxes(title_text="test accuracy (%)", row=1, col=1)
    fig.update_yaxes(title_text="gap (percentage points)", row=1, col=2)
    n_seeds = int(done.groupby(GROUP)["seed"].nunique().max()) if len(done) else 0
    fig.update_layout(title=f"Accuracy and generalization gap against batch size (mean, 95% interval, "
                            f"up to {n_seeds} seed(s))", **LAYOUT)
    return fig


def learning_curves(trials: pd.DataFrame, epochs: pd.DataFrame, batch_sizes: list[int] | None = None) -> go.Figure:
    """Train and test accuracy/loss against epoch, per batch size, with and without mixup (figure 6)."""
    chosen = sorted(batch_sizes or sorted(trials["batch_size"].unique())[:: max(1, trials["batch_size"].nunique() - 1)])
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy", "loss"), horizontal_spacing=0.1)
    picked = with_labels(trials[trials["batch_size"].isin(chosen)]).sort_values(["batch_size", "augmentation_label",
                                                                                 "seed"])
    picked = picked.drop_duplicates(["batch_size", "augmentation_label", "lr_scaling"])  # first seed of each
    for i, (_, trial) in enumerate(picked.iterrows()):
        curve = epochs[epochs["trial_id"] == trial["trial_id"]].sort_values("epoch")
        label = f"batch {trial['batch_size']}, {curve_label(trial['augmentation_label'], trial['lr_scaling'])}"
        color = PALETTE[i % len(PALETTE)]
        for split, column, dash in (("train", "clean_train", "solid"), ("test", "test", "dash")):
            for col, metric, scale in ((1, "acc", 100.0), (2, "loss", 1.0)):
                fig.add_trace(go.Scatter(
                    x=curve["epoch"], y=scale * curve[f"{column}_{metric}"], mode="lines",
                    name=f"{label} ({split})", legendgroup=label, showlegend=col == 1,
                    line=dict(color=color, dash=dash)), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="accuracy (%)", row=1, col=1)
    fig.update_yaxes(title_text="cross-entropy", row=1, col=2)
    fig.update_layout(title="Learning curves: train (solid, clean) and test (dashed)", **LAYOUT)
    return fig


def interpolation_figure(landscape: pd.DataFrame, trials: pd.DataFrame, trial_a: str, trial_b: str) -> go.Figure:
    """Loss (blue, left axis) and accuracy (red, right axis) from solution A (x=0) to B (x=1): figure 5."""
    curve = landscape[(landscape["kind"] == "interp1d") & (landscape["trial_a"] == trial_a)
                      & (landscape["trial_b"] == trial_b)].sort_values("x")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for split, dash in (("train", "solid"), ("test", "dash")):
        part = curve[curve["split"] == split]
        fig.add_trace(go.Scatter(x=part["x"], y=part["loss"], mode="lines", name=f"{split} loss",
                                 line=dict(color=LOSS_BLUE, dash=dash)), secondary_y=False)
        fig.add_trace(go.Scatter(x=part["x"], y=100 * part["acc"], mode="lines", name=f"{split} accuracy",
                                 line=dict(color=ACC_RED, dash=dash)), secondary_y=True)
    info = with_labels(trials).set_index("trial_id")
    for x, trial in ((0.0, trial_a), (1.0, trial_b)):
        label = f"batch {info.loc[trial, 'batch_size']}" if trial in info.index else trial
        fig.add_vline(x=x, line=dict(color="gray", dash="dot"), annotation_text=label, annotation_position="top")
    aug = info.loc[trial_a, "augmentation_label"] if trial_a in info.index else "?"
    rule = info.loc[trial_a, "lr_scaling"] if trial_a in info.index else "?"
    fig.update_xaxes(title_text="interpolation coefficient a: (1-a) A + a B")
    fig.update_yaxes(title_text="loss", color=LOSS_BLUE, secondary_y=False)
    fig.update_yaxes(title_text="accuracy (%)", color=ACC_RED, secondary_y=True, range=[0, 100], tickmode="array",
                     tickvals=[0, 20, 40, 60, 80, 100], showgrid=False)
    fig.update_layout(title=f"1-D interpolation, {curve_label(aug, rule)}", **LAYOUT)
    return fig


def sharpness_vs_batch(trials: pd.DataFrame, sharpness: pd.DataFrame) -> go.Figure:
    """Each sharpness measure against batch size, one line per augmentation x lr rule (mean over seeds)."""
    table = sharpness_table(trials, sharpness)
    measures = [(m, title) for m, title in SHARPNESS_MEASURES if (table["measure"] == m).any()]
    fig = make_subplots(rows=1, cols=max(1, len(measures)), subplot_titles=[t for _, t in measures],
                        horizontal_spacing=0.08)
    for col, (measure, _) in enumerate(measures, start=1):
        stats = aggregate_over_seeds(table[table["measure"] == measure], "value")
        for i, ((aug, rule), curve) in enumerate(stats.groupby(["augmentation_label", "lr_scaling"], sort=True)):
            curve = curve.sort_values("batch_size")
            fig.add_trace(go.Scatter(
                x=curve["batch_size"], y=curve["mean"], mode="lines+markers", name=curve_label(aug, rule),
                legendgroup=f"{aug}-{rule}", showlegend=col == 1, line=dict(color=PALETTE[i % len(PALETTE)]),
                error_y=dict(type="data", symmetric=False, array=curve["ci_high"] - curve["mean"],
                             arrayminus=curve["mean"] - curve["ci_low"], visible=bool(curve["n"].gt(1).any()))),
                row=1, col=col)
        _batch_axis(fig, list(table["batch_size"]), row=1, col=col)
    fig.update_layout(title="Sharpness against batch size (lower is flatter)", **LAYOUT)
    return fig


def random_direction_figures(landscape: pd.DataFrame, trials: pd.DataFrame) -> list[go.Figure]:
    """1-D slices (all trials in one figure) and one 2-D contour figure per trial."""
    figures = []
    info = with_labels(trials).set_index("trial_id")

    def label(trial_id: str) -> str:
        if trial_id not in info.index:
            return trial_id
        row = info.loc[trial_id]
        return f"batch {row['batch_size']}, {curve_label(row['augmentation_label'], row['lr_scaling'])}, seed {row['seed']}"

    one = landscape[(landscape["kind"] == "random1d") & (landscape["split"] == "train")]
    if len(one):
        fig = go.Figure()
        for i, (trial_id, curve) in enumerate(one.groupby("trial_a")):
            curve = curve.sort_values("x")
            fig.add_trace(go.Scatter(x=curve["x"], y=curve["loss"], mode="lines", name=label(trial_id),
                                     line=dict(color=PALETTE[i % len(PALETTE)])))
        fig.update_xaxes(title_text="step along a filter-normalized random direction")
        fig.update_yaxes(title_text="train loss")
        fig.update_layout(title="Random-direction 1-D slices of the training loss", **LAYOUT)
        figures.append(fig)
    two = landscape[(landscape["kind"] == "random2d") & (landscape["split"] == "train")]
    for trial_id, surface in two.groupby("trial_a"):
        grid = surface.pivot_table(index="y", columns="x", values="loss")
        fig = go.Figure(go.Contour(x=grid.columns, y=grid.index, z=grid.values, colorscale="Viridis",
                                   contours=dict(showlabels=True), colorbar=dict(title="train loss")))
        fig.update_xaxes(title_text="direction 1")
        fig.update_yaxes(title_text="direction 2")
        fig.update_layout(title=f"2-D loss surface: {label(trial_id)}", **{**LAYOUT, "legend": {}})
        figures.append(fig)
    return figures


def steps_to_target_figure(trials: pd.DataFrame, epochs: pd.DataFrame, target: float) -> go.Figure:
    """Optimizer steps to reach `target` test accuracy against batch size, log-log, with perfect scaling."""
    reached = steps_to_target(trials, epochs, target)
    stats = aggregate_over_seeds(reached, "steps_to_target")
    fig = go.Figure()
    for i, ((aug, rule), curve) in enumerate(stats.groupby(["augmentation_label", "lr_scaling"], sort=True)):
        curve = curve.sort_values("batch_size")
        fig.add_trace(go.Scatter(x=curve["batch_size"], y=curve["mean"], mode="lines+markers",
                                 name=curve_label(aug, rule), line=dict(color=PALETTE[i % len(PALETTE)])))
        first = curve.iloc[0]
        fig.add_trace(go.Scatter(x=curve["batch_size"], y=first["mean"] * first["batch_size"] / curve["batch_size"],
                                 mode="lines", name=f"perfect scaling from batch {first['batch_size']}",
                                 line=dict(color=PALETTE[i % len(PALETTE)], dash="dot"), opacity=0.6))
    _batch_axis(fig, list(trials["batch_size"]))
    fig.update_yaxes(type="log", title_text="optimizer steps to target")
    fig.update_layout(title=f"Steps to {100 * target:.0f}% test accuracy (Shallue et al. 2018)", **LAYOUT)
    return fig


STATUS_COLORS = {"completed": "#e8f5e9", "diverged": "#fff3e0", "failed": "#ffebee"}


def trials_table(trials: pd.DataFrame) -> go.Figure:
    """Every trial with its status; diverged and failed trials stay visible."""
    columns = ["trial_id", "status", "batch_size", "augmentation_label", "lr_scaling", "seed", "peak_lr", "workers",
               "micro_batch", "accumulation_steps", "epochs_completed", "final_test_acc", "gap_acc", "train_time_s",
               "device", "error"]
    shown = with_labels(trials).sort_values(["batch_size", "augmentation_label", "lr_scaling", "seed"])[columns].copy()
    for col in ("final_test_acc", "gap_acc"):
        shown[col] = (100 * shown[col]).map(lambda v: f"{v:.2f}%" if v == v else "-")
    shown["peak_lr"] = shown["peak_lr"].map(lambda v: f"{v:.4g}")
    shown["train_time_s"] = shown["train_time_s"].map(lambda v: f"{v:.0f}" if v == v else "-")
    shown = shown.fillna("-")
    fill = [[STATUS_COLORS.get(s, "white") for s in shown["status"]]] * len(columns)
    fig = go.Figure(go.Table(header=dict(values=[c.replace("_", " ") for c in columns], fill_color="#eeeeee",
                                         align="left"),
                             cells=dict(values=[shown[c].astype(str) for c in columns], fill_color=fill, align="left")))
    fig.update_layout(title=f"All {len(trials)} trials", template="plotly_white",
                      height=160 + 28 * min(len(trials), 40), margin=dict(l=20, r=20, t=60, b=20))
    return fig
