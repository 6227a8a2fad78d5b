"""End-to-end: measurements run as their trials complete, beside the training of the others, and a
measurement of a trial that is later trained again is never kept."""

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import smallest, tiny_study_yaml

from analysis.store import ResultsStore
from study.config import parse_study
from study.sweep import run_study

pytestmark = pytest.mark.slow

MEASURE = """measure:
  hessian: {top_k: 1, samples: 64, trace: false}
  interpolate: {between: batch_size, pairs: [[64, 256]], points: 3, train_samples: 64, test_samples: 64}
"""


def test_a_finished_trial_is_measured_while_the_last_one_trains(ray_session: str, tmp_path: Path, capsys) -> None:
    # One trial at a time on 2 CPUs: training holds one slot, so measurements get the other at once.
    # 4 epochs: the last two trials then train long enough that the first one's measurement (a Ray task that
    # starts a process and imports torch) ends before them, also beside another test (timestamps are in s).
    text = tiny_study_yaml("pipelined", tmp_path, resources="{max_concurrent_trials: 1}").replace(
        "epochs: 2,", "epochs: 4,"
    )
    text = text.replace(
        "batch_size: [64, 128], mixup_alpha: [0.0, 1.0]", "batch_size: [64, 128, 256], mixup_alpha: [0.0]"
    )
    result = run_study(parse_study(text + MEASURE))
    store = ResultsStore(result.results_dir)
    trials = store.read("trials").sort_values("finished_at")
    assert (trials["status"] == "completed").all() and len(trials) == 3
    first, last = trials["trial_id"].iloc[0], trials["trial_id"].iloc[-1]
    sharpness = store.read("sharpness").set_index("trial_id")
    assert set(sharpness.index) == set(trials["trial_id"])
    # Both timestamps from the store: the first trial's Hessian was written before the last trial ended.
    assert sharpness.loc[first, "measured_at"] < trials["finished_at"].iloc[-1], (sharpness, trials)
    # Every row names the training it measured: its trials' finished_at, as their rows say.
    finished = {t: pd.Timestamp(f).isoformat() for t, f in zip(trials["trial_id"], trials["finished_at"])}
    for trial_id, row in sharpness.iterrows():
        assert json.loads(row["trained_at"]) == {trial_id: finished[trial_id]}
    # The pair (batch 64 and 256) is measured once both have trained: after the last one here.
    landscape = store.read("landscape")
    assert landscape["job"].nunique() == 1 and (landscape["measured_at"] >= trials["finished_at"].iloc[-1]).all()
    assert last in set(landscape[["trial_a", "trial_b"]].stack())
    out = capsys.readouterr().out
    assert "measure: " in out  # the study's progress lines said the measurements too


def test_a_trial_trained_again_is_measured_again_and_a_failing_job_is_recorded(
    ray_session: str, tmp_path: Path, capsys
) -> None:
    """A trial trained again (its row set aside) is measured again, the other's measurement stands. Then, on
    the same study, a trial whose checkpoint is truncated: its job fails and is recorded, the other trial's
    is written, an error record of an earlier run is dropped once its job succeeds, and the command exits 1."""
    from analysis.report import write_report
    from study.measure import job_error_row, plan_jobs, study_from_store
    from study.measure import main as measure_main

    text = smallest(tiny_study_yaml("stale", tmp_path)).replace("mixup_alpha: [0.0, 1.0]", "mixup_alpha: [0.0]")
    study = parse_study(text + "measure:\n  hessian: {top_k: 1, samples: 64, trace: false}\n")
    store = ResultsStore(run_study(study).results_dir)
    before = store.read("sharpness").set_index("trial_id")
    again, kept = sorted(before.index)
    # Its row set aside (as a resume does when no checkpoint holds its epochs): it trains again.
    store.set_aside(f"{store.table_dir('trials')}/{again}.parquet", "superseded")
    run_study(study, resume=True)
    after = store.read("sharpness").set_index("trial_id")
    trials = store.read("trials").set_index("trial_id")
    assert json.loads(after.loc[again, "trained_at"]) == {again: trials.loc[again, "finished_at"].isoformat()}
    assert after.loc[again, "trained_at"] != before.loc[again, "trained_at"]
    # The other trial's measurement stands; the stale one is kept beside, out of every reader's way.
    assert after.loc[kept, "measured_at"] == before.loc[kept, "measured_at"]
    stale = [p.name for p in Path(store.table_dir("sharpness")).iterdir() if p.name.endswith(".superseded")]
    assert len(stale) == 1 and again in stale[0]
    assert "measured an earlier training" in capsys.readouterr().out

    # A failing measurement job: measure again from scratch with one trial's checkpoint cut short.
    for key in store.keys("sharpness"):
        store.remove("sharpness", key)
    broken, healthy = again, kept
    state = Path(trials.loc[broken, "checkpoint"])
    state.write_bytes(state.read_bytes()[:100])
    jobs = {j.trials[0]: j for j in plan_jobs(study_from_store(store), store.read("trials"), store)[0]}
    store.write("measure_errors", jobs[healthy].key, [job_error_row(jobs[healthy], "an earlier failure")])
    assert measure_main([store.uri]) == 1
    errors = store.read("measure_errors")
    assert errors["job"].tolist() == [jobs[broken].key] and errors["trials"].tolist() == [broken]
    assert errors["error"].iloc[0]  # the error's last line, not empty
    assert store.read("sharpness")["trial_id"].tolist() == [healthy]
    page = write_report(store.uri).read_text()
    assert f"Measurement {jobs[broken].key} failed ({broken})" in page
