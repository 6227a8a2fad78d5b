"""The replication study's findings computed again from its committed CSV files with pandas, numpy and scipy
alone (none of the project's code): each claim's raw difference and 95% interval over seeds (paired by
seed), printed as a table.

    python docs/replication/rederive.py [FOLDER]        # FOLDER: docs/replication (default)

tests/test_replication.py checks that these numbers equal the ones `python -m analysis.findings` and the
report give (to 1e-9), and that README's findings table is that table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

# Which way each sharpness measure ranks flatness: all four are lower when flatter.
MEASURES = {
    "adaptive_sharpness": "adaptive sharpness, invariant under rescaling",
    "eps_sharpness": "epsilon-sharpness, changes under rescaling",
    "hessian_eig1": "Hessian top eigenvalue, changes under rescaling",
    "hessian_trace": "Hessian trace, changes under rescaling",
}


def interval(per_seed: pd.Series) -> tuple[float, float, float, int]:
    """Mean and scipy's 95% t-interval of per-seed values (NaN ends with one seed)."""
    values = per_seed.dropna().to_numpy(dtype=float)
    if len(values) < 2:
        return float(values.mean()), np.nan, np.nan, len(values)
    ci = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    return float(values.mean()), float(ci.low), float(ci.high), len(values)


def by_seed(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame.groupby("seed")[column].mean()


def curvature(x: np.ndarray, loss: np.ndarray, end: float) -> float:
    """d2L/da2 at `end` from a least-squares quadratic over the 5 points nearest it."""
    nearest = np.argsort(np.abs(x - end), kind="stable")[:5]
    if not ((x[nearest] < end).any() and (x[nearest] > end).any()):
        return np.nan  # one-sided: the points past this end were left out (clamped BatchNorm variances)
    return 2 * np.polyfit(x[nearest] - end, loss[nearest], 2)[0]


def rederive(folder: Path) -> list[tuple[str, str, float, float, float, int]]:
    """(conditions, claim, raw difference, low, high, seeds) for every finding, in analysis.findings' words:
    the difference as the claim's quantity defines it (with minus without mixup, large minus small batch,
    the large-batch end's curvature minus the small-batch end's), in its own sign."""
    trials = pd.read_csv(folder / "trials.csv")
    trials = trials[trials["status"] == "completed"]
    sharpness = pd.read_csv(folder / "sharpness.csv")
    landscape = pd.read_csv(folder / "landscape.csv")
    sizes = sorted(trials["batch_size"].unique())
    small, large = int(sizes[0]), int(sizes[-1])
    none, mixup = trials[trials["augmentation"] == "none"], trials[trials["augmentation"] == "mixup"]
    arm = "mixup a=1"
    out = []
    for batch in (small, large):
        a, b = none[none["batch_size"] == batch], mixup[mixup["batch_size"] == batch]
        for claim, column, scale in (
            (f"{arm} raises test accuracy at batch {batch}", "final_test_acc", 100.0),
            (f"{arm} narrows the generalization gap (accuracy) at batch {batch}", "gap_acc", 100.0),
            (f"{arm} narrows the generalization gap (loss) at batch {batch}", "gap_loss", 1.0),
        ):
            out.append(("", claim, *interval(scale * (by_seed(b, column) - by_seed(a, column)))))
    values = sharpness.merge(trials[["trial_id", "batch_size", "augmentation", "seed"]], on="trial_id")
    for measure, title in MEASURES.items():
        rows = values[values["measure"] == measure]
        if rows.empty:
            continue

        def at(augmentation: str, batch: int, rows: pd.DataFrame = rows) -> pd.Series:
            return by_seed(rows[(rows["augmentation"] == augmentation) & (rows["batch_size"] == batch)], "value")

        effect_large = at("mixup", large) - at("none", large)
        effect_small = at("mixup", small) - at("none", small)
        out.append(("", f"{arm} flattens the large-batch minimum ({title})", *interval(effect_large)))
        out.append(
            (
                "",
                f"{arm} flattens the large-batch minimum by more than the small-batch one ({title})",
                *interval(effect_large - effect_small),
            )
        )
        for augmentation, context in (("none", "none"), ("mixup", arm)):
            sharper = at(augmentation, large) - at(augmentation, small)
            claim = f"the large-batch minimum is sharper than the small-batch one ({title})"
            out.append((context, claim, *interval(sharper)))
    lines = landscape[(landscape["kind"] == "interp1d") & (landscape["split"] == "train")]
    lines = lines[np.isfinite(lines["loss"]) & (lines.get("bn_clamped", 0).fillna(0) == 0)]
    info = trials.set_index("trial_id")
    per_pair = []
    for (a, b), line in lines.groupby(["trial_a", "trial_b"]):
        x, loss = line["x"].to_numpy(dtype=float), line["loss"].to_numpy(dtype=float)
        large_end = 1.0 if info.loc[b, "batch_size"] > info.loc[a, "batch_size"] else 0.0
        difference = curvature(x, loss, large_end) - curvature(x, loss, 1.0 - large_end)
        per_pair.append((info.loc[a, "augmentation_label"], info.loc[a, "seed"], difference))
    pairs = pd.DataFrame(per_pair, columns=["context", "seed", "difference"])
    for context, rows in pairs.groupby("context"):
        claim = "the large-batch end of the interpolation line is sharper"
        measured = rows.dropna()  # a pair with a one-sided fit at an end is left out; none left: no estimate
        estimate = interval(measured.groupby("seed")["difference"].mean()) if len(measured) else (np.nan,) * 3 + (0,)
        out.append((context, claim, *estimate))
    return out


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    print("| conditions | claim | raw difference | 95% interval | seeds |")
    print("|---|---|---|---|---|")
    for context, claim, value, low, high, n in rederive(folder):
        print(f"| {context or '-'} | {claim} | {value:+.4g} | [{low:+.4g}, {high:+.4g}] | {n} |")


if __name__ == "__main__":
    main()
