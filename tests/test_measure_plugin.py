"""Adding a measurement is one new file in study/measures/, and nothing else.

`TOY_MEASUREMENT` is such a file (the parameter norm of each trained trial times a factor: settings, a
check, jobs, a runner in a Ray task, how it is drawn). tests/test_sweep_key.py writes it into its copy of
the code and runs that copy end to end (one study run for the toy key and this): a bad setting refused
before Ray, the study measured by it, its rows in `sharpness/`, drawn in the report's sharpness figure
under its own title. Here: docs/measurements.md lists every registered measurement.
"""

import re

import pytest
from conftest import ROOT

TOY_MEASUREMENT = '''
"""A toy measurement: a trained trial's parameter norm, times `scale`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from study.errors import check
from study.measures.base import Job, Measure, Shown, named, register
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
    return [{"trial_id": job.trials[0], "value": job.settings["scale"] * norm}]


SHOWN = Shown("toy parameter norm", "norm (weights)", "lower", "changes: it scales with the weights")
register(Measure("toy_norm", ToyNormConfig, validate, plan, {"toy_norm": run}, shown=named("toy_norm", SHOWN)))
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


def test_a_sharpness_value_is_named_by_its_registration_and_one_it_does_not_name_is_refused(monkeypatch) -> None:  # noqa: ANN001
    """The driver fills each sharpness row's value name and report columns from the measure's `shown`; a
    measure that forgets `shown` is refused when its jobs are planned (before Ray, in the dry-run too),
    and a value its `shown` does not name is refused when written, not drawn under its raw key."""
    import dataclasses

    from study.config import parse_study
    from study.measures.base import MEASURES, Job, TaskInputs, plan_measure_jobs, run_job

    eps = MEASURES["eps_sharpness"]
    job = Job("sharpness", "eps_sharpness", ("t",), {}, "eps_sharpness")
    fake = dataclasses.replace(eps, runs={"eps_sharpness": lambda job, inputs, part: [{"trial_id": "t", "value": 2.0}]})
    monkeypatch.setitem(MEASURES, "eps_sharpness", fake)
    (row,) = run_job(job, TaskInputs({}, {}), None)
    assert row["measure"] == "eps_sharpness" and row["title"] == "epsilon-sharpness" and row["flatter"] == "lower"
    assert row["invariance"].startswith("changes:") and row["value"] == 2.0

    stray = dataclasses.replace(
        fake, runs={"eps_sharpness": lambda job, inputs, part: [{"measure": "eps2", "value": 1}]}
    )
    monkeypatch.setitem(MEASURES, "eps_sharpness", stray)
    with pytest.raises(ValueError, match="wrote the sharpness value 'eps2', which its Measure's shown= does not name"):
        run_job(job, TaskInputs({}, {}), None)

    monkeypatch.setitem(MEASURES, "eps_sharpness", dataclasses.replace(eps, shown=None))
    with pytest.raises(ValueError, match="measure 'eps_sharpness' plans sharpness jobs but says nothing"):
        plan_measure_jobs(parse_study("name: m\nmeasure: {eps_sharpness: {}}\n"), [{"trial_id": "t"}])
