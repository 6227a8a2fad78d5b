"""The findings table on results sets built with a known effect, and with none."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.findings import (
    CONTRADICTED,
    LEANS_AGAINST,
    LEANS_FOR,
    SUPPORTED,
    UNRESOLVED,
    contrast,
    findings_html,
    findings_markdown,
    paper_findings,
)

SEEDS = [0, 1, 2, 3, 4]
JITTER = [0.004, -0.002, 0.001, -0.004, 0.001]  # per-seed noise shared by the arms (what pairing removes)
ZERO_MEAN = [0.01, -0.01, 0.02, -0.02, 0.0]  # a per-seed difference whose mean is exactly 0
OWN = [0.002, -0.001, 0.0, 0.001, -0.002]  # the treated arm's own noise (mean 0): pairing cannot remove it


def results(effect: bool, seeds: list[int] = SEEDS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trials at batch 128 and 8192, without and with mixup; with `effect`, mixup adds 3 points of test
    accuracy at both sizes, narrows the gap by 2 points, and halves the large-batch top eigenvalue
    (100 -> 50) while barely touching the small-batch one (20 -> 19). Without it, every difference
    between the arms averages exactly 0 over seeds."""
    trials, sharpness = [], []
    for batch in (128, 8192):
        for mixup in (False, True):
            for i, seed in enumerate(seeds):
                noise = JITTER[i]
                wiggle = ZERO_MEAN[i] if mixup and not effect else OWN[i] if mixup else 0.0
                acc = 0.9 - 0.05 * (batch > 128) + noise + 0.03 * (mixup and effect) + wiggle
                gap = 0.08 + noise - 0.02 * (mixup and effect) - wiggle
                eig = (100.0 if batch > 128 else 20.0) * (1 + noise)
                if effect and mixup:
                    eig = (50.0 if batch > 128 else 19.0) * (1 + noise)
                elif mixup:
                    eig *= 1 + wiggle
                trial_id = f"b{batch}-{'a1' if mixup else 'a0'}-s{seed}"
                trials.append(
                    {
                        "trial_id": trial_id,
                        "status": "completed",
                        "batch_size": batch,
                        "augmentation": "mixup" if mixup else "none",
                        "augmentation_label": "mixup a=1" if mixup else "none",
                        "lr_scaling": "none",
                        "seed": seed,
                        "final_test_acc": acc,
                        "gap_acc": gap,
                        "gap_loss": gap * 2,
                    }
                )
                sharpness.append(
                    {
                        "trial_id": trial_id,
                        "measure": "hessian_eig1",
                        "value": eig,
                        "title": "Hessian top eigenvalue",
                        "unit": "lambda",
                        "flatter": "lower",
                        "invariance": "changes: a layer rescaled by c moves its block of the Hessian by 1/c^2",
                    }
                )
    return pd.DataFrame(trials), pd.DataFrame(sharpness)


NO_LINES = pd.DataFrame({"kind": pd.Series(dtype=str)})


def verdicts(findings) -> dict[str, str]:
    return {f.claim: f.verdict for f in findings}


def test_a_known_effect_is_found_with_its_size_and_the_paired_test() -> None:
    trials, sharpness = results(effect=True)
    found = paper_findings(trials, sharpness, NO_LINES)
    said = verdicts(found)
    for batch in (128, 8192):
        assert said[f"mixup a=1 raises test accuracy at batch {batch}"] == SUPPORTED
        assert said[f"mixup a=1 narrows the generalization gap (accuracy) at batch {batch}"] == SUPPORTED
    top = "Hessian top eigenvalue, changes under rescaling"
    assert said[f"the large-batch minimum is sharper than the small-batch one ({top})"] == SUPPORTED
    assert said[f"mixup a=1 flattens the large-batch minimum ({top})"] == SUPPORTED
    interaction = next(f for f in found if "by more than" in f.claim)
    assert interaction.verdict == SUPPORTED
    # (50 - 100) - (19 - 20) = -49, up to the shared per-seed noise, which pairing cancels in part
    assert interaction.estimate.value == pytest.approx(-49.0, abs=0.5)
    accuracy = next(f for f in found if f.claim == "mixup a=1 raises test accuracy at batch 128")
    assert accuracy.estimate.value == pytest.approx(3.0, abs=1e-9)  # points; OWN averages 0
    assert accuracy.estimate.test == "paired t over seeds" and accuracy.estimate.n == "5 seeds, paired"
    assert accuracy.estimate.low < 3.0 < accuracy.estimate.high


def test_no_effect_is_not_resolved_never_supported() -> None:
    trials, sharpness = results(effect=False)
    found = paper_findings(trials, sharpness, NO_LINES)
    about_mixup = [f for f in found if f.claim.startswith("mixup a=1")]
    assert about_mixup and all(f.verdict == UNRESOLVED for f in about_mixup), [
        (f.claim, f.estimate) for f in about_mixup if f.verdict != UNRESOLVED
    ]
    for f in about_mixup:
        assert f.estimate.low < 0 < f.estimate.high or f.estimate.low <= 0 <= f.estimate.high


def test_one_seed_says_which_way_it_leans_and_gives_no_verdict() -> None:
    trials, sharpness = results(effect=True, seeds=[0])
    found = paper_findings(trials, sharpness, NO_LINES)
    assert found and {f.verdict for f in found} <= {LEANS_FOR, LEANS_AGAINST}
    assert {f.estimate.test for f in found} == {"one seed: no interval"}
    assert all(f.estimate.n == "1 seed" and math.isnan(f.estimate.low) for f in found)
    accuracy = next(f for f in found if f.claim == "mixup a=1 raises test accuracy at batch 128")
    assert accuracy.verdict == LEANS_FOR
    assert accuracy.headline() == (
        "mixup a=1 raises test accuracy at batch 128: +3.2 points, 1 seed, no interval: leans toward the claim"
    )
    # mixup made worse: the same claim now leans against, with the number negative in the claim's convention
    worse = trials.assign(final_test_acc=trials["final_test_acc"] - 0.06 * (trials["augmentation"] == "mixup"))
    found = {f.claim: f for f in paper_findings(worse, sharpness, NO_LINES)}
    accuracy = found["mixup a=1 raises test accuracy at batch 128"]
    assert accuracy.verdict == LEANS_AGAINST and accuracy.toward_claim.value == pytest.approx(-2.8)
    from analysis.findings import LEANS_NEITHER, Estimate, verdict

    assert verdict(Estimate(0.0, math.nan, math.nan, "1 seed", "one seed: no interval"), +1) == LEANS_NEITHER
    html = findings_html(list(found.values()))
    assert "no interval" in html and "leans against the claim</span>" in html and "not resolved</span>" not in html


def test_every_finding_is_positive_in_the_claims_direction_with_the_raw_difference_beside_it() -> None:
    """Narrowing the gap is a negative raw difference (with minus without) and a positive finding; a
    sharper large-batch minimum is positive as is; the raw estimate keeps its own sign."""
    trials, sharpness = results(effect=True)
    found = {f.claim: f for f in paper_findings(trials, sharpness, NO_LINES)}
    gap = found["mixup a=1 narrows the generalization gap (accuracy) at batch 8192"]
    assert gap.estimate.value == pytest.approx(-2.0, abs=1e-9) and gap.toward_claim.value == pytest.approx(2.0)
    assert 0 < gap.toward_claim.low < 2.0 < gap.toward_claim.high
    assert gap.toward_claim.low == pytest.approx(-gap.estimate.high) and gap.verdict == SUPPORTED
    assert gap.headline().startswith("mixup a=1 narrows the generalization gap (accuracy) at batch 8192: +2 points [+")
    assert gap.headline().endswith("], 5 seeds, paired: supported")
    flattens = found["mixup a=1 flattens the large-batch minimum (Hessian top eigenvalue, changes under rescaling)"]
    assert flattens.estimate.value < 0 < flattens.toward_claim.value
    table = findings_markdown(list(found.values()))
    assert table.count("\n") == len(found) + 2 and gap.headline() in table
    assert "-2 [" in table  # the raw difference, in its own sign


def test_arms_with_different_seeds_use_welch_and_a_contradiction_is_called_one() -> None:
    # mixup lowers accuracy by 0.05 with spread: unpaired (seeds 0-2 vs 10-12), Welch's interval < 0
    with_, without = [0.80, 0.81, 0.79], [0.85, 0.86, 0.84]
    estimate = contrast([dict(zip([0, 1, 2], without)), dict(zip([10, 11, 12], with_))], [-1.0, 1.0])
    assert estimate.test == "Welch t" and estimate.n == "3 vs 3 seeds"
    assert estimate.value == pytest.approx(-0.05)
    # two groups of 3 with sd 0.01: s.e. sqrt(2 x 0.01^2 / 3), df 4, t(0.975, 4) = 2.7764451
    assert estimate.high - estimate.value == pytest.approx(2.7764451 * math.sqrt(2e-4 / 3), rel=1e-6)
    from analysis.findings import verdict

    assert verdict(estimate, +1) == CONTRADICTED and verdict(estimate, -1) == SUPPORTED


def interpolation_lines(pairs: dict[int, float]) -> pd.DataFrame:
    """Interpolation lines between batch 128 (a = 0) and 8192 (a = 1) of the no-mixup trials, one per seed:
    L(a) = k/3 a^3 + a^2, whose L'' is 2 at a = 0 and 2 + 2k at a = 1 (a quadratic over the 5 points
    around each end fits it exactly there). Each line has a point whose BatchNorm variances were clamped
    (its loss that of no network on the line), which is left out."""
    lines = []
    for seed, k in pairs.items():
        x = np.append(np.linspace(-0.5, 1.5, 9), 1.0)
        loss = np.append(k / 3 * x[:9] ** 3 + x[:9] ** 2, 1e7)
        lines.append(
            pd.DataFrame(
                {
                    "kind": "interp1d",
                    "trial_a": f"b128-a0-s{seed}",
                    "trial_b": f"b8192-a0-s{seed}",
                    "x": x,
                    "split": "train",
                    "loss": loss,
                    "bn_clamped": [0] * 9 + [12],
                }
            )
        )
    return pd.concat(lines, ignore_index=True)


def test_one_interpolated_pair_gives_its_curvatures_and_no_verdict() -> None:
    trials, sharpness = results(effect=True)
    found = [f for f in paper_findings(trials, sharpness, interpolation_lines({0: 4.0})) if "interpolation" in f.claim]
    assert len(found) == 1
    f = found[0]
    assert f.estimate.value == pytest.approx(8.0, abs=1e-9) and not f.estimate.has_interval
    assert (
        "one pair: no interval" in f.estimate.test and "curvature 2 at batch 128, 10 at batch 8192" in f.estimate.test
    )
    assert f.verdict == LEANS_FOR and f.context == "none" and f.estimate.n == "1 seed"


def test_the_interpolation_curvature_verdict_is_over_the_seeds_of_the_pairs() -> None:
    """Three seeds' pairs with large-end curvatures 10, 12 and 9 (differences 8, 10, 7): the interval is
    scipy's t-interval over the three differences, whatever the fits' own errors (zero here)."""
    from scipy import stats

    trials, sharpness = results(effect=True)
    lines = interpolation_lines({0: 4.0, 1: 5.0, 2: 3.5})
    f = next(f for f in paper_findings(trials, sharpness, lines) if "interpolation" in f.claim)
    expected = stats.ttest_1samp([8.0, 10.0, 7.0], 0.0).confidence_interval(0.95)
    assert f.estimate.value == pytest.approx(25 / 3) and f.estimate.n == "3 seeds"
    assert f.estimate.low == pytest.approx(expected.low, abs=1e-9)
    assert f.estimate.high == pytest.approx(expected.high, abs=1e-9)
    assert f.verdict == SUPPORTED and f.estimate.test.startswith("t over seeds")


def test_any_compared_key_is_tested_against_the_value_the_study_lists_first() -> None:
    """In general: the effect of one compared key at each value of another. LARS vs SGD (sgd listed
    first in the study file: the reference), with mixup as the other condition: LARS adds 4 points at
    batch 8192 only."""
    import json

    trials, sharpness = results(effect=False)
    lars = trials.assign(
        optimizer="lars",
        trial_id=trials["trial_id"] + "-lars",
        final_test_acc=trials["final_test_acc"] + np.where(trials["batch_size"] > 128, 0.04, 0.0),
    )
    trials = pd.concat([trials.assign(optimizer="sgd"), lars], ignore_index=True)
    trials["config"] = json.dumps({"sweep": {"optimizer": ["sgd", "lars"]}})
    roles = {k: ("swept", True) for k in ("batch_size", "augmentation", "seed", "lr_scaling", "optimizer")}
    found = paper_findings(
        trials, pd.concat([sharpness, sharpness.assign(trial_id=sharpness["trial_id"] + "-lars")]), NO_LINES, roles
    )
    lars_rows = {(f.context, f.claim): f for f in found if f.claim.startswith("optimizer lars (vs sgd)")}
    for context in ("none", "mixup a=1"):
        large = lars_rows[(context, "optimizer lars (vs sgd) raises test accuracy at batch 8192")]
        small = lars_rows[(context, "optimizer lars (vs sgd) raises test accuracy at batch 128")]
        assert large.verdict == SUPPORTED and large.estimate.value == pytest.approx(4.0)
        assert small.verdict == UNRESOLVED and "lars minus sgd" in small.quantity
    # the augmentation findings are now within each optimizer
    assert {f.context for f in found if f.claim.startswith("mixup a=1")} == {"optimizer sgd", "optimizer lars"}


INTERVAL_CASES = [  # (arm without, arm with): unequal spreads and sizes give Welch a fractional df
    ([0.85, 0.86, 0.84], [0.80, 0.83, 0.79]),
    ([0.85, 0.86, 0.84, 0.87], [0.80, 0.83, 0.70]),
    ([0.1, 0.4], [0.2, 0.25, 0.27, 0.26, 0.3, 0.21]),
    (list(np.linspace(0.8, 0.9, 40)), list(np.linspace(0.7, 0.95, 17))),
]


@pytest.mark.parametrize("without, with_", INTERVAL_CASES)
def test_welch_intervals_are_scipys_at_the_fractional_degrees_of_freedom(without, with_) -> None:
    from scipy import stats

    estimate = contrast([dict(enumerate(without)), {100 + i: v for i, v in enumerate(with_)}], [-1.0, 1.0])
    expected = stats.ttest_ind(with_, without, equal_var=False).confidence_interval(0.95)
    assert estimate.test == "Welch t"
    assert estimate.low == pytest.approx(expected.low, abs=1e-9) and estimate.high == pytest.approx(
        expected.high, abs=1e-9
    )


@pytest.mark.parametrize("seeds", [2, 3, 5, 31, 40, 200])
def test_paired_and_seed_intervals_are_scipys_at_any_number_of_seeds(seeds: int) -> None:
    from scipy import stats

    from analysis.summarize import aggregate_over_seeds

    rng = np.random.default_rng(seeds)
    without, with_ = rng.normal(0.8, 0.02, seeds), rng.normal(0.82, 0.03, seeds)
    estimate = contrast([dict(enumerate(without)), dict(enumerate(with_))], [-1.0, 1.0])
    expected = stats.ttest_1samp(with_ - without, 0.0).confidence_interval(0.95)
    assert estimate.test == "paired t over seeds"
    assert estimate.low == pytest.approx(expected.low, abs=1e-9) and estimate.high == pytest.approx(
        expected.high, abs=1e-9
    )
    frame = pd.DataFrame({"batch_size": 128, "augmentation_label": "none", "lr_scaling": "none", "acc": with_})
    row = aggregate_over_seeds(frame, "acc").iloc[0]
    low, high = stats.t.interval(0.95, seeds - 1, loc=with_.mean(), scale=stats.sem(with_))
    assert row["ci_low"] == pytest.approx(low, abs=1e-9) and row["ci_high"] == pytest.approx(high, abs=1e-9)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_non_finite_measurement_is_left_out_and_counted_like_nan_without_warnings(bad: float) -> None:
    import warnings

    trials, sharpness = results(effect=True)
    sharpness.loc[sharpness["trial_id"] == "b8192-a1-s0", "value"] = bad  # one seed's large-batch mixup value
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's RuntimeWarnings on inf - inf would fail here
        found = {f.claim: f for f in paper_findings(trials, sharpness, NO_LINES)}
    flattens = found["mixup a=1 flattens the large-batch minimum (Hessian top eigenvalue, changes under rescaling)"]
    assert flattens.estimate.n == "5 vs 4 seeds" and flattens.estimate.test == "Welch t"
    assert math.isfinite(flattens.estimate.low) and flattens.estimate.high < 0 and flattens.verdict == SUPPORTED


def test_an_end_with_no_point_past_it_is_not_measured_and_says_so() -> None:
    """Past a = 1 every point's BatchNorm variances were clamped (left out): a quadratic over the 5 points
    before it measured the barrier between the solutions (the replication study's no-mixup pairs said
    'contradicted' from it); now the pair is left out, and with none left the claim is not measurable."""
    trials, sharpness = results(effect=True)
    lines = interpolation_lines({0: 4.0, 1: 5.0})
    lines.loc[lines["x"] > 1.0, "bn_clamped"] = 3
    (f,) = [f for f in paper_findings(trials, sharpness, lines) if "interpolation" in f.claim]
    assert math.isnan(f.estimate.value) and f.verdict == "not measurable" and f.estimate.n == "0 seeds"
    assert "no pair measurable: 2 of 2 pairs without points on both sides of an end" in f.estimate.test
