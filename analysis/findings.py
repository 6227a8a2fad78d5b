"""The seed paper's claims, each tested on the study's trials: an estimate, its 95% interval over seeds
and a verdict, so the report answers the question instead of leaving it to the reader's eye.

The paper (mixup at batch 128 and 8192) claims that mixup raises test accuracy at both batch sizes,
narrows the generalization gap, and flattens the large-batch minimum, which is sharper than the
small-batch one. Here "mixup" is every augmentation arm against the study's `none` arm, "small" and
"large" the smallest and largest batch size, within each combination of the other compared conditions
(the record's legends: model, optimizer, ..., and the learning-rate rule).

Each finding has one headline in one sign convention: its estimate is positive when it goes the way
the claim says (the raw difference, whose sign depends on the quantity, stands beside it). A claim is
`supported` when its 95% interval lies on the claim's side of 0, `contradicted` when it lies on the
other, `not resolved` when it contains 0; without an interval (one seed, one interpolated pair) the
finding says which way it leans and that it has no interval, never a verdict. A verdict is about
trainings, so every interval is over seeds: arms with the same seeds are paired by seed (a t-interval
over the per-seed differences), otherwise Welch's unequal-variance t-interval. Each finding says which,
and its n.
"""

from __future__ import annotations

import html
import math
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.summarize import finite, t_quantile, with_labels

SUPPORTED, CONTRADICTED, UNRESOLVED = "supported", "contradicted", "not resolved"
# without an interval: which way the estimate leans, no verdict
LEANS_FOR, LEANS_AGAINST, LEANS_NEITHER = "leans toward the claim", "leans against the claim", "leans neither way"
NOT_MEASURED = "not measurable"  # no finite estimate at all (every pair's fit one-sided)
END_POINTS = 5  # interpolation points nearest each end that the curvature's quadratic is fitted to


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float  # NaN: no interval
    high: float
    n: str  # "3 seeds, paired" / "2 vs 3 seeds" / "1 seed"
    test: str

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


@dataclass(frozen=True)
class Finding:
    context: str  # the other compared conditions ("" when nothing else varies)
    claim: str
    quantity: str  # what the raw estimate is a difference of, with its unit
    estimate: Estimate  # the raw difference
    claimed_sign: int  # +1: the claim says the raw difference is > 0; -1: < 0
    unit: str = ""  # of the headline's number ("points"), "" where the quantity says it

    @property
    def toward_claim(self) -> Estimate:
        """The estimate in the one sign convention: positive = the way the claim says."""
        s, e = self.claimed_sign, self.estimate
        low, high = sorted((s * e.low, s * e.high)) if e.has_interval else (math.nan, math.nan)
        return Estimate(s * e.value, low, high, e.n, e.test)

    @property
    def verdict(self) -> str:
        return verdict(self.estimate, self.claimed_sign)

    def amount(self) -> str:
        """The estimate in the claim's direction, with its unit: '+3.1 points'."""
        return f"{signed(self.toward_claim.value)}{' ' + self.unit if self.unit else ''}"

    def headline(self) -> str:
        """'mixup a=1 raises test accuracy at batch 2048: +3.1 points [+1.2, +5], 3 seeds, paired: supported'."""
        e, amount = self.toward_claim, self.amount()
        if e.has_interval:
            return f"{self.claim}: {amount} [{signed(e.low)}, {signed(e.high)}], {e.n}: {self.verdict}"
        return f"{self.claim}: {amount}, {e.n}, no interval: {self.verdict}"


def verdict(estimate: Estimate, claimed_sign: int) -> str:
    """`claimed_sign` +1: the claim says the difference is > 0; -1: < 0. Without an interval, the side of 0
    the estimate is on, which is no verdict."""
    if not estimate.has_interval:
        if not math.isfinite(estimate.value):
            return NOT_MEASURED
        if estimate.value == 0:
            return LEANS_NEITHER
        return LEANS_FOR if claimed_sign * estimate.value > 0 else LEANS_AGAINST
    low, high = sorted((claimed_sign * estimate.low, claimed_sign * estimate.high))
    return SUPPORTED if low > 0 else CONTRADICTED if high < 0 else UNRESOLVED


def signed(x: float) -> str:
    return f"{x:+.3g}" if math.isfinite(x) else "-"


def t_interval(values: list[float]) -> tuple[float, float, float]:
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = t_quantile(len(values) - 1) * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def contrast(arms: list[dict[int, float]], weights: list[float]) -> Estimate:
    """sum_i weights_i x mean(arm_i), arms given as seed -> value: paired by seed where every arm has the
    same seeds (2 or more), else Welch's t-interval (Welch-Satterthwaite degrees of freedom)."""
    seeds = set(arms[0])
    if len(seeds) >= 2 and all(set(arm) == seeds for arm in arms):
        per_seed = [sum(w * arm[s] for w, arm in zip(weights, arms)) for s in sorted(seeds)]
        mean, low, high = t_interval(per_seed)
        return Estimate(mean, low, high, f"{len(seeds)} seeds, paired", "paired t over seeds")
    values = [np.array(list(arm.values()), dtype=float) for arm in arms]
    mean = float(sum(w * v.mean() for w, v in zip(weights, values)))
    sizes = " vs ".join(str(len(v)) for v in values)
    if min(len(v) for v in values) < 2:
        seeds_said = "1 seed" if max(len(v) for v in values) == 1 else f"{sizes} seeds"
        return Estimate(mean, math.nan, math.nan, seeds_said, "one seed: no interval")
    parts = [w * w * float(v.var(ddof=1)) / len(v) for w, v in zip(weights, values)]
    variance = sum(parts)
    if variance == 0:
        return Estimate(mean, mean, mean, f"{sizes} seeds", "Welch t (no spread)")
    df = variance**2 / sum(p * p / (len(v) - 1) for p, v in zip(parts, values))
    half = t_quantile(df) * math.sqrt(variance)  # at the fractional df: its floor widens the interval
    return Estimate(mean, mean - half, mean + half, f"{sizes} seeds", "Welch t")


def arm_of(label: str) -> str:
    """The augmentation arm of a condition label ('resnet20, lars: mixup a=1' -> 'mixup a=1')."""
    return label.rsplit(": ", 1)[-1]


def by_seed(rows: pd.DataFrame, column: str) -> dict[int, float]:
    """seed -> the value (the mean over a seed's trials, should one condition have run twice); a non-finite
    value (a diverged measurement) is left out like a missing one, and the seed count says so."""
    values = rows[finite(rows, column)].groupby("seed")[column].mean()
    return {int(seed): float(value) for seed, value in values.items()}


AUGMENTATION = "augmentation"  # the augmentation arm (augmentation, alpha, cutout size) as one compared key
NOT_COMPARED = {"batch_size", "seed", "augmentation", "augmentation_alpha", "cutout_size"}


def value_text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    return f"{value:g}" if isinstance(value, float) else str(value)


def compared_keys(trials: pd.DataFrame, roles: dict[str, tuple[str, bool]] | None) -> list[str]:
    """The keys whose effect the table tests: the augmentation arm, then every other swept key of the
    record (`roles`, from the store) that takes more than one value among the trials (batch size is the
    axis each effect is tested at, seeds the replicates)."""
    swept = [k for k, (role, _) in (roles or {}).items() if role == "swept"] or ["lr_scaling"]
    others = [k for k in swept if k not in NOT_COMPARED and k in trials and trials[k].map(value_text).nunique() > 1]
    return [AUGMENTATION, *others]


def reference_value(trials: pd.DataFrame, key: str, sweep: dict) -> str:
    """What the other values of `key` are compared against: no augmentation, else the first value the
    study file lists for the key (its baseline), else the most common one."""
    if key == AUGMENTATION:
        return "none"
    present = set(trials[key].map(value_text))
    listed = [value_text(v) for v in (sweep.get(key) or []) if value_text(v) in present]
    return listed[0] if listed else str(trials[key].map(value_text).mode().iloc[0])


def paper_findings(
    trials: pd.DataFrame,
    sharpness: pd.DataFrame,
    landscape: pd.DataFrame,
    roles: dict[str, tuple[str, bool]] | None = None,
) -> list[Finding]:
    """Every claim the study's trials can test: for each compared key (the augmentation arm first, then
    every other swept key that varies) each value's effect against the reference, at the smallest and
    largest batch, within each combination of the other compared keys; whether the large-batch minimum
    is sharper, within each combination of all of them; the interpolation lines' end curvatures."""
    from analysis.summarize import stored_config

    done = with_labels(trials)
    done = done[done["status"] == "completed"] if "status" in done else done
    if "phase" in done:
        done = done[done["phase"] != "sample"]
    if done.empty or "augmentation" not in done:
        return []
    keys = compared_keys(done, roles)
    text = {k: done[k].map(value_text) for k in keys if k != AUGMENTATION}
    text[AUGMENTATION] = done["augmentation_label"].astype(str).map(arm_of)
    sweep = stored_config(done).get("sweep") or {}

    def context(without: str | None) -> list[str]:
        parts = [[f"{k} {v}" if k != AUGMENTATION else v for v in text[k]] for k in keys if k != without]
        return [", ".join(p for p in row) for row in zip(*parts)] if parts else [""] * len(done)

    measures = measure_values(done, sharpness)
    findings: list[Finding] = []
    for key in keys:
        reference = reference_value(done, key, sweep)
        framed = done.assign(arm=text[key].to_numpy(), context=context(key))
        for where, rows in framed.groupby("context", sort=True):
            base = rows[rows["arm"] == reference]
            sizes = sorted(rows["batch_size"].unique())
            if base.empty or not sizes:
                continue
            for arm, treated in rows[rows["arm"] != reference].groupby("arm", sort=True):
                name = str(arm) if key == AUGMENTATION else f"{key} {arm} (vs {reference})"
                versus = "with minus without" if key == AUGMENTATION else f"{arm} minus {reference}"
                findings += arm_findings(
                    str(where), name, versus, base, treated, int(sizes[0]), int(sizes[-1]), measures
                )
    for where, rows in done.assign(context=context(None)).groupby("context", sort=True):
        findings += sharper_findings(str(where), rows, measures)
    findings += curvature_findings(done, landscape)
    return findings


def measure_values(trials: pd.DataFrame, sharpness: pd.DataFrame) -> dict[str, tuple[str, str, pd.DataFrame]]:
    """measure -> (title with whether it survives a change of axes, which way is flatter, the trials with
    its value as column `value`), for the measures that rank flatness (each row names its own: the
    measure's plug-in wrote it)."""
    from analysis.figures import measures_shown

    out = {}
    if sharpness.empty:
        return out
    for measure, title, _ in measures_shown(sharpness):
        rows = sharpness[sharpness["measure"] == measure]
        flatter = str(rows["flatter"].dropna().iloc[-1]) if "flatter" in rows and rows["flatter"].notna().any() else ""
        if flatter not in ("lower", "higher"):
            continue
        values = rows.groupby("trial_id")["value"].mean().rename("value")
        said = rows["invariance"].dropna() if "invariance" in rows else pd.Series(dtype=str)
        invariance = str(said.iloc[-1]).split(":")[0] if len(said) else "invariance not recorded"
        name = f"{title.split(' (')[0]}, {invariance} under rescaling"
        out[measure] = (name, flatter, trials.merge(values, left_on="trial_id", right_index=True))
    return out


def arm_findings(
    context: str,
    arm: str,
    versus: str,
    base: pd.DataFrame,
    treated: pd.DataFrame,
    small: int,
    large: int,
    measures: dict[str, tuple[str, str, pd.DataFrame]],
) -> list[Finding]:
    """The claims about one value (`arm`) of a compared key against the reference value (`base`)."""
    out = []

    def at(rows: pd.DataFrame, batch: int) -> pd.DataFrame:
        return rows[rows["batch_size"] == batch]

    def add(
        claim: str,
        quantity: str,
        arms: list[dict[int, float]],
        weights: list[float],
        sign: int,
        scale: float = 1.0,
        unit: str = "",
    ) -> None:
        if all(arms):
            estimate = contrast([{s: scale * v for s, v in arm.items()} for arm in arms], weights)
            out.append(Finding(context, claim, quantity, estimate, sign, unit))

    batches = [small, large] if large != small else [small]
    for batch in batches:
        b, t = at(base, batch), at(treated, batch)
        add(
            f"{arm} raises test accuracy at batch {batch}",
            f"final test accuracy (percentage points), {versus}",
            [by_seed(b, "final_test_acc"), by_seed(t, "final_test_acc")],
            [-1.0, 1.0],
            +1,
            scale=100.0,
            unit="points",
        )
        for column, name, gap, scale, unit in (
            ("gap_acc", "accuracy", "train - test accuracy (percentage points)", 100.0, "points"),
            ("gap_loss", "loss", "test - train loss", 1.0, ""),
        ):
            add(
                f"{arm} narrows the generalization gap ({name}) at batch {batch}",
                f"{gap}, {versus}",
                [by_seed(b, column), by_seed(t, column)],
                [-1.0, 1.0],
                -1,
                scale=scale,
                unit=unit,
            )
    if large == small:
        return out
    for title, flatter, values in measures.values():
        sharper = 1 if flatter == "lower" else -1  # the sign of "sharper" in this measure's units
        b = values[values["trial_id"].isin(base["trial_id"])]
        t = values[values["trial_id"].isin(treated["trial_id"])]
        add(
            f"{arm} flattens the large-batch minimum ({title})",
            f"{title} at batch {large}: {versus}",
            [by_seed(at(b, large), "value"), by_seed(at(t, large), "value")],
            [-1.0, 1.0],
            -sharper,
        )
        add(
            f"{arm} flattens the large-batch minimum by more than the small-batch one ({title})",
            f"{title}: ({versus} at batch {large}) - ({versus} at batch {small})",
            [
                by_seed(at(b, large), "value"),
                by_seed(at(t, large), "value"),
                by_seed(at(b, small), "value"),
                by_seed(at(t, small), "value"),
            ],
            [-1.0, 1.0, 1.0, -1.0],
            -sharper,
        )
    return out


def sharper_findings(
    context: str, rows: pd.DataFrame, measures: dict[str, tuple[str, str, pd.DataFrame]]
) -> list[Finding]:
    """'The large-batch minimum is sharper than the small-batch one', per measure, for trials that differ
    only in batch size (and seed)."""
    sizes = sorted(rows["batch_size"].unique())
    if len(sizes) < 2:
        return []
    small, large = int(sizes[0]), int(sizes[-1])
    out = []
    for title, flatter, values in measures.values():
        measured = values[values["trial_id"].isin(rows["trial_id"])]
        arms = [by_seed(measured[measured["batch_size"] == b], "value") for b in (small, large)]
        if all(arms):
            estimate = contrast(arms, [-1.0, 1.0])
            claim = f"the large-batch minimum is sharper than the small-batch one ({title})"
            quantity = f"{title}: batch {large} minus batch {small}"
            out.append(Finding(context, claim, quantity, estimate, 1 if flatter == "lower" else -1))
    return out


def end_curvature(x: np.ndarray, loss: np.ndarray, end: float) -> float:
    """d^2 loss / d a^2 at a = end: a least-squares quadratic over the END_POINTS points nearest `end`; NaN
    with fewer than 3, or with none on one side of `end` (past a solution whose BatchNorm variances were
    clamped, a one-sided fit measures the barrier between the solutions, not the minimum)."""
    order = np.argsort(np.abs(x - end), kind="stable")[:END_POINTS]
    if len(order) < 3 or not ((x[order] < end).any() and (x[order] > end).any()):
        return math.nan
    return float(2 * np.polyfit(x[order] - end, loss[order], 2)[0])


def curvature_findings(trials: pd.DataFrame, landscape: pd.DataFrame) -> list[Finding]:
    """The paper's figure 5 as a number: the loss's curvature along the interpolation line at its
    large-batch end minus at its small-batch end (train loss where measured), one value per interpolated
    pair, and its interval over the seeds of the pairs of one setting: whether a minimum is sharper is a
    claim about trainings, so a single pair gives its estimate and no verdict, however well its
    quadratics fit. Points where interpolated BatchNorm variances went negative (clamped to 0) are left
    out: the loss there (1e7 past a = 1 in a small study) is not of a network on the line."""
    if landscape.empty or "kind" not in landscape:
        return []
    batch = dict(zip(trials["trial_id"], trials["batch_size"]))
    seed = dict(zip(trials["trial_id"], trials["seed"]))
    label = dict(zip(trials["trial_id"], trials["augmentation_label"].astype(str)))
    pairs = []
    lines = landscape[landscape["kind"] == "interp1d"]
    for (a, b), rows in lines.groupby(["trial_a", "trial_b"], sort=True):
        if a not in batch or b not in batch or batch[a] == batch[b]:
            continue
        split = "train" if (rows["split"] == "train").any() else "test"
        rows = rows[(rows["split"] == split) & np.isfinite(rows["loss"].astype(float))]
        if "bn_clamped" in rows:  # past an end, clamped BatchNorm variances make a network no solution is
            rows = rows[rows["bn_clamped"].fillna(0) == 0]
        x, loss = rows["x"].to_numpy(dtype=float), rows["loss"].to_numpy(dtype=float)
        large_end, small_end = (1.0, 0.0) if batch[b] > batch[a] else (0.0, 1.0)
        c_large, c_small = end_curvature(x, loss, large_end), end_curvature(x, loss, small_end)
        context = label.get(a, a) if label.get(a) == label.get(b) else f"{label.get(a, a)} to {label.get(b, b)}"
        smaller, larger = sorted((int(batch[a]), int(batch[b])))
        pairs.append((context, smaller, larger, split, int(seed[a]), c_small, c_large))
    every = pd.DataFrame(pairs, columns=["context", "smaller", "larger", "split", "seed", "small", "large"])
    out = []
    for (context, smaller, larger, split), both in every.groupby(["context", "smaller", "larger", "split"], sort=True):
        rows = both[np.isfinite(both["small"]) & np.isfinite(both["large"])]
        per_seed = (rows["large"] - rows["small"]).groupby(rows["seed"]).mean()
        n = len(per_seed)
        mean, low, high = t_interval(list(per_seed)) if n else (math.nan, math.nan, math.nan)
        small, large = rows["small"].mean(), rows["large"].mean()
        curvatures = f"mean curvature {small:.3g} at batch {smaller}, {large:.3g} at batch {larger}"
        test = f"t over seeds ({curvatures})" if n >= 2 else f"one pair: no interval ({curvatures})"
        if n < len(both):  # past an end whose BN variances were clamped, the fit would be one-sided
            left_out = f"{len(both) - n} of {len(both)} pairs without points on both sides of an end (BN clamped)"
            test = f"{test}; {left_out}, left out" if n else f"no pair measurable: {left_out}"
        out.append(
            Finding(
                str(context),
                "the large-batch end of the interpolation line is sharper",
                f"{split} loss curvature d2L/da2 along the line: large-batch end minus small-batch end "
                "(changes under rescaling: a rescaled layer of one solution moves the line)",
                Estimate(mean, low, high, f"{n} seed{'s' if n != 1 else ''}", test),
                +1,
            )
        )
    return out


def number(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else "-"


def raw_text(e: Estimate) -> str:
    return (
        f"{number(e.value)} [{number(e.low)}, {number(e.high)}]"
        if e.has_interval
        else f"{number(e.value)}, no interval"
    )


COLOURS = {SUPPORTED: "#1a7f37", CONTRADICTED: "#b42318"}  # every other verdict grey
EXPLAINED = (
    "Each finding's number is positive when it goes the way the claim says (the raw difference, in the "
    "quantity's own sign, is beside it), with its 95% interval over seeds; <b>supported</b> or "
    "<b>contradicted</b> when the interval lies on one side of 0, <b>not resolved</b> when it contains 0. "
    "Without an interval (one seed, one interpolated pair) a finding only says which way it leans. Each "
    "sharpness measure says whether it is <i>invariant</i> under rescaling a layer that feeds a BatchNorm "
    "(the same function, Dinh et al. 2017) or <i>changes</i>: only an invariant one can say that a minimum "
    "is flatter."
)


def findings_html(findings: list[Finding]) -> str:
    """The findings table, first in the report: one headline per claim (in the claim's direction, its
    interval and verdict), then its conditions, the raw difference, n and test."""
    if not findings:
        return (
            "<h2>Findings</h2><p>No claim of the seed paper can be tested yet: it needs completed trials with "
            "and without an augmentation (sweep.mixup_alpha with 0), at two batch sizes for the sharpness ones.</p>"
        )
    rows = []
    for f in findings:
        e, amount = f.toward_claim, f.amount()
        interval = f" [{signed(e.low)}, {signed(e.high)}]" if e.has_interval else ""
        style = f"color:{COLOURS.get(f.verdict, '#6e6e6e')};font-weight:{600 if e.has_interval else 400}"
        rows.append(
            "<tr>"
            f"<td>{html.escape(f.claim)}: <b>{amount}</b>{interval} "
            f"<span style='{style}'>{html.escape(f.verdict)}</span></td>"
            f"<td>{html.escape(f.context) or '-'}</td>"
            f"<td>{raw_text(f.estimate)}<br><small>{html.escape(f.quantity)}</small></td>"
            f"<td>{html.escape(e.n)}<br><small>{html.escape(e.test)}</small></td>"
            "</tr>"
        )
    return (
        f"<h2>Findings</h2><p>{EXPLAINED}</p>"
        "<table class='findings'><tr><th>finding (positive = as claimed) [95% interval]: verdict</th>"
        "<th>conditions</th><th>raw difference (quantity)</th><th>n, test</th></tr>" + "".join(rows) + "</table>"
    )


def findings_markdown(findings: list[Finding]) -> str:
    """The same table in Markdown, for a README or an issue."""
    lines = [
        "| finding (positive = as claimed) | conditions | raw difference | n, test |",
        "|---|---|---|---|",
    ]
    for f in findings:
        cells = [
            f.headline(),
            f.context or "-",
            f"{raw_text(f.estimate)}: {f.quantity}",
            f"{f.estimate.n}, {f.estimate.test}",
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    from analysis.load import load_studies

    parser = argparse.ArgumentParser(
        prog="python -m analysis.findings", description="Print a study's findings table as Markdown."
    )
    parser.add_argument("results_dirs", nargs="+", help="a study's folder or its results/ (several: pooled)")
    args = parser.parse_args(argv)
    from analysis.store import ResultsStore

    stores = [ResultsStore.found(folder) for folder in args.results_dirs]
    for given, store in zip(args.results_dirs, stores):
        if store is None:
            print(f"error: {given} holds no results (there or in its results/)", file=sys.stderr)
            return 2
    results = load_studies([store.uri for store in stores if store is not None])
    print(
        findings_markdown(paper_findings(results.trials, results.sharpness, results.landscape, results.trial_roles)),
        end="",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
