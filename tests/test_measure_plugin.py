"""Adding a measurement is one new file in study/measures/, and nothing else.

`TOY_MEASUREMENT` is such a file (the parameter norm of each trained trial times a factor: settings, a
check, jobs, a runner in a Ray task, how it is drawn). tests/test_sweep_key.py writes it into its copy of
the code and runs that copy end to end (one study run for the toy key and this): a bad setting refused
before Ray, the study measured by it, its rows in `sharpness/`, drawn in the report's sharpness figure
under its own title. Here: docs/measurements.md lists every registered measurement.
"""

import re

from conftest import ROOT

TOY_MEASUREMENT = '''
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
    return [Job("sharpness", "toy_norm", (t,), asdict(config), "toy_norm") for t in [r["trial_id"] for r in trials]]


def run(job, inputs, part):
    state = load_model_state(inputs.checkpoints[job.trials[0]])
    norm = sum(float((v.double() ** 2).sum()) for k, v in state.items() if v.is_floating_point()) ** 0.5
    shown = Shown("toy parameter norm", "norm (weights)", "lower", "changes: it scales with the weights").columns()
    return [{"trial_id": job.trials[0], "measure": "toy_norm", "value": job.settings["scale"] * norm, **shown}]


register(Measure("toy_norm", ToyNormConfig, validate, plan, {"toy_norm": run}))
'''


def test_the_measurements_page_lists_every_registered_measurement() -> None:
    from study.measures import MEASURES

    page = (ROOT / "docs" / "measurements.md").read_text()
    section = page[page.index("## Measurements") :]
    section = section[: section.index("\n## ")] if "\n## " in section else section
    listed = re.findall(r"^- `(\w+)`:", section, re.M)
    assert sorted(listed) == sorted(MEASURES)


def test_a_job_planned_without_its_measure_name_gets_it_from_the_registry(monkeypatch) -> None:  # noqa: ANN001
    """A plug-in's plan that leaves Job.measure out used to end in `KeyError: ''` when its job ran."""
    import dataclasses

    from study.config import parse_study
    from study.measures.base import MEASURES, Job, plan_measure_jobs, runner_for

    eps = MEASURES["eps_sharpness"]
    forgetful = dataclasses.replace(eps, plan=lambda study, trials, config: [Job("sharpness", "eps_sharpness", ("t",))])
    monkeypatch.setitem(MEASURES, "eps_sharpness", forgetful)
    study = parse_study("name: m\nmeasure: {eps_sharpness: {}}\n")
    (job,) = plan_measure_jobs(study, [{"trial_id": "t"}])
    assert job.measure == "eps_sharpness" and runner_for(job) is not None
