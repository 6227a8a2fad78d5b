"""Adding a measurement is one new file in study/measures/, and nothing else.

The test does it for real: it copies the three packages, writes a toy measurement module (the parameter
norm of each trained trial times a factor: settings, a check, jobs, a runner in a Ray task, how it is
drawn) and runs the copy end to end: a bad setting refused before Ray, a tiny study measured by it, its
rows in `sharpness/`, drawn in the report's sharpness figure under its own title. The README lists every
registered measurement.
"""

import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, copy_code, run_copy, tiny_study_yaml

TOY = '''
"""A toy measurement: a trained trial's parameter norm, times `scale`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from study.errors import check
from study.measures.base import Job, Measure, Shown, register
from study.measures.common import load_model_state


@dataclass(frozen=True)
class ToyNormConfig:
    scale: float = 1.0


def validate(study, config, s):
    check(config.scale > 0, f"{s}measure.toy_norm.scale: must be > 0")


def plan(study, trials, config):
    return [Job("sharpness", "toy_norm", (t,), asdict(config), "toy_norm") for t in trials["trial_id"]]


def run(job, inputs, part):
    state = load_model_state(inputs.checkpoints[job.trials[0]])
    norm = sum(float((v.double() ** 2).sum()) for k, v in state.items() if v.is_floating_point()) ** 0.5
    shown = Shown("toy parameter norm", "norm (weights)", "lower").columns()
    return [{"trial_id": job.trials[0], "measure": "toy_norm", "value": job.settings["scale"] * norm, **shown}]


register(Measure("toy_norm", ToyNormConfig, validate, plan, {"toy_norm": run}))
'''


@pytest.mark.slow
def test_a_toy_measurement_in_one_new_file_is_checked_run_and_drawn(tmp_path: Path) -> None:
    copy = copy_code(tmp_path / "code")
    (copy / "study" / "measures" / "toy_norm.py").write_text(TOY)
    study_file = tmp_path / "toy.yaml"
    study_file.write_text(
        tiny_study_yaml("toymeasure", tmp_path / "results")
        .replace(
            "sweep: {batch_size: [64, 128], mixup_alpha: [0.0, 1.0]}",
            "sweep: {batch_size: [64, 128], mixup_alpha: [0.0]}",
        )
        .replace("epochs: 2,", "epochs: 1,")
        + "measure: {toy_norm: {scale: 2.0}}\n"
    )
    bad = run_copy(copy, "-m", "study.run_sweep", str(study_file), "--dry-run", "--set", "measure.toy_norm.scale=-1")
    assert bad.returncode == 2 and "measure.toy_norm.scale: must be > 0" in bad.stderr, bad.stderr[-2000:]

    sweep = run_copy(copy, "-m", "study.run_sweep", str(study_file))
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    results = tmp_path / "results" / "toymeasure" / "results"
    sharpness = pd.read_parquet(results / "sharpness")
    assert set(sharpness["measure"]) == {"toy_norm"} and len(sharpness) == 2
    assert (sharpness["value"] > 0).all() and set(sharpness["title"]) == {"toy parameter norm"}
    page = (tmp_path / "results" / "toymeasure" / "report.html").read_text()
    assert 'id="sharpness_vs_batch"' in page and "toy parameter norm (lower = flatter)" in page


def test_the_readme_lists_every_registered_measurement() -> None:
    from study.measures import MEASURES

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Measurements") :]
    section = section[: section.index("\n## ")]
    listed = re.findall(r"^- `(\w+)`:", section, re.M)
    assert sorted(listed) == sorted(MEASURES)
