"""Adding a sweep key touches the study config and the trial record, and nothing else.

The test does it for real: it copies the three packages, adds a toy key `toy` in exactly those two
places (a `SweepConfig` field and a `TrialSpec` field), and runs the copy end to end: the dry-run
table, a sweep over two toy values on a fresh local Ray, 1-D interpolation between them, the Parquet
columns, the report's trial table and its figures (a curve per toy value), and an empty list refused.
"""

import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import copy_code, run_copy, tiny_study_yaml
from test_measure_plugin import TOY_MEASUREMENT

pytestmark = pytest.mark.slow

EDITS = {
    "study/config.py": (
        "    warmup_epochs: tuple[float, ...] | None = _in(None, WARMUP)\n",
        # a new number needs its range (the schema test fails for one without): one line all the same
        "    warmup_epochs: tuple[float, ...] | None = _in(None, WARMUP)\n"
        "    toy: tuple[int, ...] = ranged((0,), 0, 9)\n",
    ),
    "trainables/trial.py": (
        '    warmup_epochs: float = swept(legend="warmup {value} epochs")\n',
        '    warmup_epochs: float = swept(legend="warmup {value} epochs")\n    toy: int = swept()\n',
    ),
}


def copy_with_toy_key(destination: Path) -> Path:
    copy_code(destination)
    for relative, (anchor, replacement) in EDITS.items():
        path = destination / relative
        text = path.read_text()
        assert text.count(anchor) == 1, f"{relative}: the anchor moved; update this test's EDITS"
        path.write_text(text.replace(anchor, replacement))
    return destination


def test_a_toy_sweep_key_added_in_two_places_flows_through_every_stage(tmp_path: Path) -> None:
    """The same copy also holds the toy measurement of tests/test_measure_plugin.py, one new file in
    study/measures/ (one study run proves both): checked before Ray, run as a Ray task, drawn."""
    copy = copy_with_toy_key(tmp_path / "code")
    (copy / "study" / "measures" / "toy_norm.py").write_text(TOY_MEASUREMENT)
    study_file = tmp_path / "toy.yaml"
    study_file.write_text(
        tiny_study_yaml("toy", tmp_path / "results")
        .replace(
            "sweep: {batch_size: [64, 128], mixup_alpha: [0.0, 1.0]}",
            "sweep: {batch_size: [64], mixup_alpha: [0.0], toy: [1, 2]}",
        )
        .replace("epochs: 2,", "epochs: 1,")
        + "measure:\n  interpolate: {between: toy, pairs: [[1, 2]], points: 3, train_samples: 128, test_samples: 128}\n"
        + "  toy_norm: {scale: 2.0}\n"
    )
    bad = run_copy(copy, "-m", "study.run_sweep", str(study_file), "--dry-run", "--set", "measure.toy_norm.scale=-1")
    assert bad.returncode == 2 and "measure.toy_norm.scale: must be > 0" in bad.stderr, bad.stderr[-2000:]

    empty = run_copy(copy, "-m", "study.run_sweep", str(study_file), "--dry-run", "--set", "sweep.toy=[]")
    assert empty.returncode == 2 and "sweep.toy: give at least one value" in empty.stderr, empty.stderr

    dry = run_copy(copy, "-m", "study.run_sweep", str(study_file), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    header, *rows = [
        line for line in dry.stdout.splitlines()[1:] if not line.startswith(("cost:", "every trial:", "measure:"))
    ]
    assert "toy" in header.split() and len(rows) == 2  # the table's columns come from the record
    column = header.split().index("toy")
    assert [row.split()[column] for row in rows] == ["1", "2"]

    sweep = run_copy(copy, "-m", "study.run_sweep", str(study_file))
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    # a fresh local Ray: token auth on, without Ray's WARNING on every run (the dashboard line says it)
    assert "Token authentication is enabled" not in sweep.stdout + sweep.stderr
    results = tmp_path / "results" / "toy" / "results"
    trials = pd.read_parquet(results / "trials")
    assert sorted(trials["toy"]) == [1, 2] and set(trials["status"]) == {"completed"}
    # Interpolation paired the two trials that differ only in toy.
    landscape = pd.read_parquet(results / "landscape")
    by_toy = dict(zip(trials["toy"], trials["trial_id"]))
    assert {(a, b) for a, b in zip(landscape["trial_a"], landscape["trial_b"])} == {(by_toy[1], by_toy[2])}
    # The report's trial table shows the new key, because it varies between trials.
    page = (tmp_path / "results" / "toy" / "report.html").read_text()
    table = re.search(r'id="trials_table".*?</table>', page, re.S)
    assert table and ">toy</th>" in table.group(0)
    # Its values are compared conditions: a curve each, named by the record's default legend.
    assert "toy 1: no augmentation, no LR scaling" in page and "toy 2: no augmentation, no LR scaling" in page
    # The toy measurement: its rows in sharpness/, named as it says, drawn in the sharpness figure.
    sharpness = pd.read_parquet(results / "sharpness")
    assert set(sharpness["measure"]) == {"toy_norm"} and set(sharpness["trial_id"]) == set(trials["trial_id"])
    assert (sharpness["value"] > 0).all() and set(sharpness["title"]) == {"toy parameter norm"}
    assert 'id="sharpness_vs_batch"' in page and "toy parameter norm (lower = flatter)" in page
