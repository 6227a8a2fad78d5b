"""The measurement scheduler's arithmetic: the slots training leaves it, and an ETA from measured
per-product costs and the running parts' own progress (not from the count of finished tasks)."""

import time
from pathlib import Path

import pytest
from conftest import tiny_study_yaml

from analysis.store import ResultsStore
from study.config import parse_study
from study.measure import Measurements, Task
from study.measures import Job
from study.measures.hessian import TYPICAL_HUTCHPP_DRAWS, TYPICAL_POWER_ITERATIONS, cost

HESSIAN = {
    "top_k": 1,
    "trace": True,
    "samples": 64,
    "trace_rel_error": 0.02,
    "trace_max_draws": 1000,
    "trace_method": "hutchpp",
    "trace_sketch": 10,
    "batch": 512,
}


def measurements(tmp_path: Path) -> Measurements:
    study = parse_study(tiny_study_yaml("progress", tmp_path))
    return Measurements(study, ResultsStore(str(tmp_path / "results")))


def test_the_hessian_cost_counts_its_products() -> None:
    job = Job("sharpness", "hessian", ("t",), HESSIAN, "hessian")
    products = TYPICAL_POWER_ITERATIONS + 2 * 10 + TYPICAL_HUTCHPP_DRAWS
    assert cost(job, None, (512, 256)) == {"products": (products, 64)}
    capped = Job("sharpness", "hessian", ("t",), {**HESSIAN, "trace_method": "hutchinson", "trace_max_draws": 50})
    assert cost(capped, None, (512, 256)) == {"products": (TYPICAL_POWER_ITERATIONS + 50, 64)}
    assert (
        cost(Job("sharpness", "hessian", ("t",), {**HESSIAN, "samples": 10_000}), None, (512, 256))["products"][1]
        == 512
    )


def test_training_keeps_its_slots_and_the_eta_comes_from_measured_costs(ray_session: str, tmp_path: Path) -> None:
    m = measurements(tmp_path)  # 2 CPUs: two measurement slots
    job = Job("sharpness", "hessian", ("a",), HESSIAN, "hessian")
    queued = Job("sharpness", "hessian", ("b",), HESSIAN, "hessian")
    m.jobs = {job.key: job, queued.key: queued}
    m.reserved = lambda: 1.0  # one trial still training holds one slot
    assert m.free_slots() == 1
    m.in_flight = {"ref": Task(job, None, "a#1", time.perf_counter() - 30)}
    assert m.free_slots() == 0  # the other slot is taken by this part: nothing more goes to Ray
    m.reserved = lambda: 0.0  # training over
    assert m.free_slots() == 1
    m.queue = [(queued, None)]
    products = cost(queued, None, m.sizes)["products"][0]
    m.rates = {"products": (10.0, products * 64)}  # finished parts took 10 s for a job like `queued`
    # The running part has done 10 of its 40 products in 30 s: 90 s left; the queued one 10 s; two slots.
    m.reports = {"a#1": {"done": 10, "total": 40, "unit": "products", "images": 64, "elapsed_s": 30.0, "text": "x"}}
    m.reports["a#1"]["text"] = "trace 10 products, s.e. 4.0% -> 2%"
    line = m.line()
    assert "ETA 50 s" in line, line
    assert "1 running (hessian a: trace 10 products, s.e. 4.0% -> 2%)" in line and "1 parts queued" in line
    # Without a measured rate for the queued part's unit, the ETA says what it leaves out...
    m.rates, m.bench_rates = {}, {}  # (and no bench record of this machine)
    assert "ETA 45 s + 1 untimed part" in m.line()
    # ... unless study.bench measured this machine's rate: the same 10 s per job, before any part finished.
    m.bench_rates = {"products": products * 64 / 10.0}
    assert "ETA 50 s" in m.line() and "untimed" not in m.line()
    # Nothing timed at all: it does not guess.
    m.bench_rates, m.in_flight, m.reports = {}, {}, {}
    assert "ETA ?" in m.line()


@pytest.mark.parametrize("autoscaled, expected", [(False, 2), (True, float("inf"))])
def test_after_training_parts_wait_for_slots_unless_the_cluster_grows(
    ray_session: str, tmp_path: Path, autoscaled: bool, expected: float
) -> None:
    m = measurements(tmp_path)
    m.autoscaled = autoscaled
    assert m.free_slots() == expected


def test_the_longest_queued_part_goes_first(tmp_path: Path) -> None:
    """Longest first: the cheap parts fill the slots at the end, no Hessian job runs alone at the tail."""
    m = measurements(tmp_path)
    eps = Job("sharpness", "eps_sharpness", ("a",), {"samples": 500, "max_steps": 20}, "eps_sharpness")
    hessian = Job("sharpness", "hessian", ("a",), HESSIAN, "hessian")
    m.queue = [(eps, None), (hessian, None), (eps, None)]
    assert m.queue[m.longest()][0] is hessian


def test_the_job_total_is_the_dry_runs_from_the_start(tmp_path: Path) -> None:
    """It grew 3 -> 6 -> 10 -> 14 as trials completed while the dry-run and study.status said 18: now the
    line counts against the whole plan from the start, and says how many jobs wait for their trials."""
    import re

    from study.plan import format_plan, plan_study

    study = parse_study(
        tiny_study_yaml("total", tmp_path)
        + "measure:\n  hessian: {top_k: 1, samples: 64, trace: false}\n  eps_sharpness: {samples: 64}\n"
        + "  interpolate: {between: batch_size, pairs: [[64, 128]], points: 3}\n  noise_scale: true\n"
    )
    planned = plan_study(study)
    dry_run = int(re.search(r"measure: (\d+) jobs", format_plan(study, planned)).group(1))
    scheduler = Measurements(study, ResultsStore(str(tmp_path / "results")))
    scheduler.expect(planned)
    assert scheduler.expected == dry_run == 4 * 3 + 2  # hessian, eps, noise scale per trial; 2 lines
    line = scheduler.line()
    assert line.startswith(f"measure: 0/{dry_run} jobs written") and f"{dry_run} more when their trials end" in line
