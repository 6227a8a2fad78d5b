"""The learning-rate search per batch size (issue 17): sampling, winners, and a real search with ASHA."""

import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import chromium_flags, smallest, tiny_study_yaml

from analysis.summarize import best_per_group
from study.config import ConfigError, DistributionConfig, SearchConfig, SearchSpaceConfig, parse_study
from study.plan import format_plan, plan_finals, plan_study
from study.search import draw, draw_samples

SEARCH = "search: {space: {base_lr: {loguniform: [0.01, 1.0]}}, samples: 4, final_seeds: [0, 1]}\n"


def test_samples_are_reproducible_per_group_and_inside_their_distribution() -> None:
    search = SearchConfig(space=SearchSpaceConfig(base_lr=DistributionConfig(loguniform=(1e-3, 10.0))), samples=200)
    first, again = draw_samples(search, "batch_size=128"), draw_samples(search, "batch_size=128")
    assert first == again  # a resumed study draws the same points: no searcher state to save
    assert first != draw_samples(search, "batch_size=8192")  # groups draw independently
    lrs = np.array([s["base_lr"] for s in first])
    assert lrs.min() >= 1e-3 and lrs.max() <= 10.0
    # loguniform: each decade gets about a quarter of the samples
    counts = np.histogram(np.log10(lrs), bins=[-3, -2, -1, 0, 1])[0]
    assert counts.min() >= 30, counts
    rng = np.random.default_rng(0)
    assert {draw(DistributionConfig(choice=(0.0, 5.0)), rng) for _ in range(50)} == {0.0, 5.0}


def test_the_search_finds_the_known_best_learning_rate_of_a_quadratic() -> None:
    """Gradient descent on f(x) = L/2 x^2 for T steps leaves |1 - lr L|^T of x0: best at lr = 1/L, diverging
    above 2/L. Score each drawn lr by the accuracy-like objective exp(-f) and let the search pick."""
    curvature, steps = 4.0, 2
    search = SearchConfig(space=SearchSpaceConfig(base_lr=DistributionConfig(loguniform=(1e-3, 10.0))), samples=64)
    rows = []
    for i, sample in enumerate(draw_samples(search, "toy")):
        lr = sample["base_lr"]
        loss = 0.5 * curvature * (1 - lr * curvature) ** (2 * steps)
        diverged = abs(1 - lr * curvature) > 1
        rows.append(
            {
                "trial_id": f"t{i}",
                "phase": "sample",
                "search_group": "toy",
                "base_lr": lr,
                "status": "diverged" if diverged else "completed",
                "best_test_acc": math.nan if diverged else math.exp(-loss),
            }
        )
    best = best_per_group(pd.DataFrame(rows))["toy"]
    # The winner is the drawn lr closest to the optimum in |1 - lr L| (the exact answer among the samples),
    # and with 16 samples a decade that is near 1/L; nothing above 2/L (diverged) can win.
    closest = min((r["base_lr"] for r in rows), key=lambda lr: abs(1 - lr * curvature))
    assert best["base_lr"] == closest and 0.6 / curvature <= best["base_lr"] <= 1.4 / curvature, best["base_lr"]


def test_winners_become_final_trials_with_every_seed() -> None:
    study = parse_study(tiny_study_yaml("s", Path("/tmp")).replace("[0.0, 1.0]", "[0.0]") + SEARCH)
    samples = plan_study(study)
    assert len(samples) == 2 * 4 and {t.phase for t in samples} == {"sample"}
    assert {t.search_group for t in samples} == {"batch_size=64", "batch_size=128"}
    table = pd.DataFrame([{**t.to_dict(), "status": "completed", "best_test_acc": t.base_lr} for t in samples])
    table.loc[table["base_lr"].idxmax(), "status"] = "stopped"  # stopped early: never the winner
    finals = plan_finals(study, table)
    assert len(finals) == 2 * 2 and {t.phase for t in finals} == {"final"} and {t.seed for t in finals} == {0, 1}
    for final in finals:
        group = table[(table["search_group"] == final.search_group) & (table["status"] == "completed")]
        assert final.base_lr == group["base_lr"].max() and final.batch_size == group["batch_size"].iloc[0]
    assert "search: 2 groups x 4 samples = 8 samples, then 2 winners x 2 seeds = 4 final trials" in (
        format_plan(study, samples)
    )


@pytest.mark.parametrize(
    "search, message",
    [
        ("{space: {}}", "name at least one key to search"),
        ("{space: {base_lr: {loguniform: [0, 1]}}}", "needs 0 < low < high"),
        ("{space: {base_lr: {uniform: [0.1, 1], choice: [0.1]}}}", "exactly one of"),
        (
            "{space: {base_lr: {choice: [0.1]}}, asha: {reduction_factor: 1}}",
            r"search.asha.reduction_factor: 1 must be in \[2, 1000\]",
        ),
    ],
)
def test_bad_search_sections_name_their_key(search: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_study(f"name: s\nsearch: {search}\n")


@pytest.mark.slow
def test_a_search_with_asha_stops_weak_samples_picks_winners_and_runs_their_seeds(
    ray_session: str, tmp_path: Path
) -> None:
    from analysis.report import write_report
    from study.sweep import run_study

    text = (
        smallest(tiny_study_yaml("search", tmp_path))  # 12 trials: half the time of width 0.25
        .replace("[0.0, 1.0]", "[0.0]")
        .replace("epochs: 2,", "epochs: 4,")
        + "search: {space: {base_lr: {loguniform: [0.001, 0.5]}}, samples: 4, final_seeds: [0, 1],\n"
        + "         asha: {grace_period: 1, reduction_factor: 2}}\n"
        + "measure: {hessian: {top_k: 1, samples: 64, trace: false}}\n"
    )
    result = run_study(parse_study(text))
    trials = pd.read_parquet(Path(result.results_dir) / "trials")
    samples, finals = trials[trials["phase"] == "sample"], trials[trials["phase"] == "final"]
    assert len(samples) == 8 and (samples["status"] == "stopped").sum() >= 1
    stopped = samples[samples["status"] == "stopped"]
    assert (stopped["epochs_completed"] < 4).all() and stopped["error"].str.contains("ASHA").all()
    assert len(finals) == 4 and set(finals["status"]) == {"completed"} and set(finals["seed"]) == {0, 1}
    winners = best_per_group(trials)
    for _, final in finals.iterrows():
        assert final["base_lr"] == winners[final["search_group"]]["base_lr"]
    # Only the finals are measured.
    sharpness = pd.read_parquet(Path(result.results_dir) / "sharpness")
    assert set(sharpness["trial_id"]) == set(finals["trial_id"])
    report = Path(write_report(result.results_dir))
    # In a browser: the search, the best learning rate against batch size and steps-to-target are drawn.
    dom = subprocess.run(
        [*chromium_flags(tmp_path), "--window-size=1300,4000", "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for name, mark in (
        ("search", 'class="point"'),
        ("best_lr_vs_batch", 'class="js-line"'),
        ("steps_to_target", 'class="js-line"'),
    ):
        drawn = re.search(rf'<section id="{name}">(.*?)</section>', dom, re.S)
        assert drawn and 'class="main-svg"' in drawn.group(1) and mark in drawn.group(1), name


@pytest.mark.slow
def test_a_search_killed_midway_resumes_without_losing_or_repeating_a_sample(ray_session: str, tmp_path: Path) -> None:
    import signal

    from test_reliability import epochs_of, sweep_cli, wait_for

    study_file = tmp_path / "killed.yaml"
    study_file.write_text(
        tiny_study_yaml("killed", tmp_path)
        .replace("[0.0, 1.0]", "[0.0]")
        .replace("[64, 128]", "[64]")  # one group: its 3 samples one at a time, then its winner
        .replace("epochs: 2,", "epochs: 3,")
        + "search: {space: {base_lr: {loguniform: [0.001, 0.5]}}, samples: 3, final_seeds: [0]}\n"
        + "resources: {max_concurrent_trials: 1}\n"
    )
    results = tmp_path / "killed" / "results"
    planned = {t.trial_id for t in plan_study(parse_study(study_file.read_text()))}
    process = sweep_cli(study_file, ray_session)
    # Kill the driver once two samples have finished and a third is part-way.
    wait_for(
        lambda: (
            (results / "trials").exists()
            and len(list((results / "trials").glob("*.parquet"))) >= 2
            and epochs_of(results)["trial_id"].nunique() >= 3
        ),
        process,
    )
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    before = set(pd.read_parquet(results / "trials")["trial_id"])
    assert before <= planned and len(before) < len(planned)

    again = sweep_cli(study_file, ray_session, "--resume")
    output = again.communicate(timeout=600)[0]
    assert again.returncode == 0, output[-3000:]
    trials = pd.read_parquet(results / "trials")
    samples = trials[trials["phase"] == "sample"]
    assert set(samples["trial_id"]) == planned and samples["trial_id"].is_unique  # the same 3, each once
    assert not epochs_of(results).duplicated(["trial_id", "epoch"]).any()
    assert f"{len(before)} already finished" in output
    finals = trials[trials["phase"] == "final"]
    assert len(finals) == 1 and set(finals["status"]) == {"completed"}


def test_the_steps_to_target_objective_prefers_the_sample_that_got_there_first() -> None:
    """Three samples of a group: A reaches 90% at step 30 and ends at 92%, B at step 10 and ends at 91%, C
    never reaches it but ends highest (89.9% is below target): the objective picks B; best_test_acc picks A."""
    config = json.dumps({"search": {"objective": "steps_to_target", "target": 0.9}})
    trials = pd.DataFrame(
        [
            {"trial_id": t, "phase": "sample", "search_group": "g", "status": "completed", "best_test_acc": acc}
            | {"config": config, "base_lr": lr, "batch_size": 128, "augmentation_label": "none"}
            | {"lr_scaling": "none", "seed": 0}
            for t, acc, lr in (("A", 0.92, 0.1), ("B", 0.91, 0.2), ("C", 0.899, 0.3))
        ]
    )
    curves = {"A": [0.5, 0.8, 0.92], "B": [0.91, 0.91, 0.91], "C": [0.7, 0.85, 0.899]}
    epochs = pd.DataFrame(
        [
            {"trial_id": t, "epoch": e + 1, "step": 10 * (e + 1), "test_acc": acc}
            for t, c in curves.items()
            for e, acc in enumerate(c)
        ]
    )
    assert best_per_group(trials, epochs)["g"]["trial_id"] == "B"
    assert best_per_group(trials.assign(config=json.dumps({"search": {}})), epochs)["g"]["trial_id"] == "A"
    with pytest.raises(ConfigError, match="search.target: steps_to_target needs a target"):
        parse_study("name: s\nsearch: {space: {base_lr: {choice: [0.1]}}, objective: steps_to_target}\n")
