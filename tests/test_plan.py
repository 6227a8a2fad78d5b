import re
from pathlib import Path

from study.config import parse_study
from study.plan import format_plan, plan_study


def test_plan_is_the_full_grid_with_derived_values() -> None:
    study = parse_study("""
name: p
sweep: {batch_size: [128, 8192], mixup_alpha: [0, 1], lr_scaling: [none, linear, sqrt], seed: [0, 1]}
resources: {workers: 2, max_micro_batch: 1024}
""")
    trials = plan_study(study)
    assert len(trials) == 2 * 2 * 3 * 2
    assert len({t.trial_id for t in trials}) == len(trials)
    big_linear = [t for t in trials if t.batch_size == 8192 and t.lr_scaling == "linear"][0]
    assert big_linear.peak_lr == 6.4
    assert (big_linear.workers, big_linear.micro_batch, big_linear.accumulation_steps) == (2, 1024, 4)
    assert big_linear.bn_batch_size == 1024
    small = [t for t in trials if t.batch_size == 128][0]
    assert (small.micro_batch, small.accumulation_steps) == (64, 1)


def test_trial_ids_are_stable_and_change_with_the_trial() -> None:
    a = plan_study(parse_study("name: p\nsweep: {batch_size: [128]}"))
    b = plan_study(parse_study("name: p\nsweep: {batch_size: [128]}"))
    c = plan_study(parse_study("name: p\nsweep: {batch_size: [128]}\noptim: {momentum: 0.5}"))
    assert [t.trial_id for t in a] == [t.trial_id for t in b]
    assert a[0].trial_id != c[0].trial_id and a[0].trial_id.startswith("b128-a0-none-s0-")


def test_swept_base_lr_replaces_the_single_value() -> None:
    trials = plan_study(
        parse_study("name: p\nsweep: {batch_size: [256], mixup_alpha: 0, base_lr: [0.1, 0.2], lr_scaling: linear}")
    )
    assert sorted(t.peak_lr for t in trials) == [0.2, 0.4]


def test_dry_run_table_has_one_line_per_trial() -> None:
    study = parse_study("name: p\nsweep: {batch_size: [128, 8192], lr_scaling: [sqrt]}")
    lines = format_plan(study, plan_study(study)).splitlines()
    # The header, what every trial shares, the column names, 4 trials, the cost.
    assert len(lines) == 3 + 4 + 1 and "peak_lr" in lines[2] and "0.8" in lines[-2]
    assert lines[1].startswith("every trial: lr_scaling sqrt, seed 0, base_lr 0.1,") and "peak_lr" not in lines[1]
    # what the study costs: 4 trials x 300 epochs x 50,000 CIFAR-10 images
    assert lines[-1].startswith("cost: 60,000,000 training images (4 trials x 300 epochs x 50,000)")


def test_dry_run_cost_in_hours_from_this_machines_bench_record(tmp_path, monkeypatch) -> None:
    from study.plan import cost_line, write_bench_record

    monkeypatch.setenv("LBSTUDY_CACHE", str(tmp_path))
    study = parse_study(
        "name: c\ndata: {dataset: synthetic, train_subset: 3600, test_subset: 400}\nmodel: {width: 0.25}\n"
        "schedule: {epochs: 300, decay: constant}\nsweep: {batch_size: [128, 2048], mixup_alpha: 0}\n"
        "eval: {train_eval_samples: 600, every_epochs: 2}"
    )
    trials = plan_study(study)
    hint = "for hours on this machine: python -m study.bench --model vgg9 --width 0.25"
    assert cost_line(study, trials).endswith(hint + " (~2 min each)")
    # a bench cut short before it measured training leaves a record the hours cannot use: still the hint
    write_bench_record("cpu (test)", 0.25, {}, 1000.0)
    assert cost_line(study, trials).endswith(hint + " (~2 min each)")
    write_bench_record("cpu (test)", 0.25, {128: 1000.0, 1024: 500.0}, 1000.0)
    # batch 128 at 1000 images/s, 2048 at the nearest measured (1024) 500/s: 1080 s + 2160 s of training;
    # 150 evaluations of 600 + 400 images at 1000/s = 150 s per trial: 3540 s in all, 0.98 h
    expected = 300 * 3600 / 1000 + 300 * 3600 / 500 + 2 * 150 * 1000 / 1000
    assert expected == 3540
    assert "about 59 min one trial at a time on cpu (test)" in cost_line(study, trials)  # 3540 s
    assert "training-loop rates without Ray, optimistic" in cost_line(study, trials)
    # The via-Ray rates, where the bench recorded them, are what a study gets: half the speed, twice the hours
    write_bench_record("cpu (test)", 0.25, {128: 1000.0, 1024: 500.0}, 1000.0, None, {128: 500.0, 1024: 250.0})
    slower = (300 * 3600 / 500 + 300 * 3600 / 250 + 2 * 150 * 1000 / 1000) / 3600
    assert f"about {slower:.1f} h one trial at a time on cpu (test) (bench of" in cost_line(study, trials)
    from study.plan import time_text

    assert [time_text(s) for s in (20, 3540, 3600, 9000)] == ["1 min", "59 min", "1.0 h", "2.5 h"]
    assert "via-Ray rates)" in cost_line(study, trials)
    wide = parse_study("name: c\ndata: {dataset: synthetic}\nsweep: {batch_size: [128], mixup_alpha: 0}")
    assert cost_line(wide, plan_study(wide)).endswith("python -m study.bench --model vgg9 --width 1 (~2 min each)")
    # Records are kept per model and width: the bench of another one adds to them.
    write_bench_record("cpu (test)", 1.0, {128: 100.0}, 100.0, None, {128: 100.0})
    assert "about" in cost_line(wide, plan_study(wide)) and "about" in cost_line(study, trials)
    models = parse_study(
        "name: c\ndata: {dataset: synthetic}\nsweep: {batch_size: [128], mixup_alpha: 0, model: [vgg9, resnet20]}"
    )
    resnet = "python -m study.bench --model resnet20 --width 1 (~2 min each)"
    assert cost_line(models, plan_study(models)).endswith(resnet)


def test_dry_run_costs_the_measurements_in_work_and_hours(tmp_path, monkeypatch) -> None:
    from study.measures.hessian import TYPICAL_HUTCHPP_DRAWS, TYPICAL_POWER_ITERATIONS
    from study.plan import measurement_cost_line, write_bench_record

    monkeypatch.setenv("LBSTUDY_CACHE", str(tmp_path))
    study = parse_study(
        "name: c\ndata: {dataset: synthetic, train_subset: 3600, test_subset: 400}\nmodel: {width: 0.25}\n"
        "schedule: {epochs: 3, decay: constant}\nsweep: {batch_size: [128, 2048], mixup_alpha: [0, 1]}\n"
        "measure:\n  interpolate: {between: batch_size, pairs: [[128, 2048]], points: 9, train_samples: 1000}\n"
        "  hessian: {samples: 500, trace_method: hutchpp, trace_sketch: 20}\n"
        "  eps_sharpness: {samples: 500, max_steps: 50}\n  noise_scale: true\n"
    )
    trials = plan_study(study)
    products = 4 * (TYPICAL_POWER_ITERATIONS + 2 * 20 + TYPICAL_HUTCHPP_DRAWS)
    # 2 pairs x 9 points x (1000 train + all 400 test images); 4 trials x 50 steps; the noise scale is free
    line = measurement_cost_line(study, trials)
    assert line.startswith(
        f"measure: 14 jobs, ~200 loss-and-gradient steps (100,000 images), ~{products:,} Hessian-vector products "
        f"({products * 500:,} images), ~18 landscape points (25,200 images)"
    ), line
    assert "for hours on this machine: python -m study.bench --model vgg9 --width 0.25" in line
    write_bench_record("cpu (test)", 0.25, {128: 1000.0}, 1000.0, {"products": 100.0, "steps": 1000.0, "points": 500.0})
    from study.plan import time_text

    seconds = products * 500 / 100 + 100_000 / 1000 + 25_200 / 500
    assert f"about {time_text(seconds)} one task at a time on cpu (test)" in measurement_cost_line(study, trials)
    assert measurement_cost_line(parse_study("name: c\nsweep: {batch_size: [128]}"), []) is None


def test_dry_run_counts_a_searchs_finals_and_says_which_trials_coincide() -> None:
    """tuned.yaml: 8 groups x 12 samples, then 8 winners x 3 seeds; only the finals are measured.
    scaling.yaml: at batch 128 the none, linear and sqrt rules all give lr 0.1: 18 trials repeat others."""
    from study.config import load_study

    tuned = load_study("studies/tuned.yaml")
    plan = format_plan(tuned, plan_study(tuned))
    cost = next(line for line in plan.splitlines() if line.startswith("cost:"))
    assert cost.startswith("cost: 1,200,000,000 training images (120 trials x 200 epochs x 50,000), of which 24 finals")
    measure = next(line for line in plan.splitlines() if line.startswith("measure:"))
    from study.measures.base import plan_measure_jobs
    from study.plan import stand_in_finals

    finals = stand_in_finals(tuned, plan_study(tuned))
    assert len(finals) == 24 and {t.phase for t in finals} == {"final"}
    assert measure.startswith(f"measure: {len(plan_measure_jobs(tuned, [t.__dict__ for t in finals]))} jobs")
    scaling = load_study("studies/scaling.yaml")
    note = next(x for x in format_plan(scaling, plan_study(scaling)).splitlines() if x.startswith("note:"))
    assert note.startswith("note: 18 trials train exactly as another does (9 groups") and "9.5%" in note
    smoke = load_study("studies/smoke.yaml")
    assert not any(x.startswith("note:") for x in format_plan(smoke, plan_study(smoke)).splitlines())


def test_every_fixed_field_is_read_from_the_study_file_where_its_source_says() -> None:
    """No hand list beside the record: each fixed field names its source, which a default study holds,
    and the plan's conversions are of fixed fields only."""
    import dataclasses

    from study.config import StudyConfig
    from study.plan import COMPUTED, fixed_values, source_value
    from trainables.trial import FIXED, TrialSpec

    fixed = {f.name: f.metadata["source"] for f in dataclasses.fields(TrialSpec) if f.metadata.get("role") == FIXED}
    study = parse_study("name: p\noptim: {momentum: 0.5}\ndata: {train_subset: 640}\nsweep: {batch_size: [64]}")
    for source in fixed.values():
        source_value(StudyConfig(name="default"), source)  # raises AttributeError for a source that is not there
    assert set(COMPUTED) <= set(fixed)
    values = fixed_values(study)
    assert set(values) == set(fixed)
    assert (values["momentum"], values["train_subset"], values["study"]) == (0.5, 640, "p")


def test_a_fixed_key_becomes_a_swept_one_by_editing_its_field_and_adding_its_list(tmp_path: Path) -> None:
    """The recipe for turning `momentum` into a sweep key, done to a copy of the code: its TrialSpec field
    becomes swept() and SweepConfig gets the list. A study that does not sweep it keeps its trial ids (the
    value was in the digest already); one that does gets a trial per value."""
    from conftest import copy_code, run_copy

    edits = {
        "trainables/trial.py": ('momentum: float = fixed("optim.momentum")', "momentum: float = swept()"),
        "study/config.py": (
            "    warmup_epochs: tuple[float, ...] | None = _in(None, WARMUP)\n",
            "    warmup_epochs: tuple[float, ...] | None = _in(None, WARMUP)\n"
            "    momentum: tuple[float, ...] | None = _in(None, MOMENTUM)\n",
        ),
    }
    copy = copy_code(tmp_path / "code")
    for relative, (anchor, replacement) in edits.items():
        path = copy / relative
        assert path.read_text().count(anchor) == 1, f"{relative}: the anchor moved; update this test"
        path.write_text(path.read_text().replace(anchor, replacement))
    study_file = tmp_path / "m.yaml"
    study_file.write_text("name: m\nsweep: {batch_size: [128], mixup_alpha: [0.0]}\n")

    def ids(code: Path, *extra: str) -> list[str]:
        run = run_copy(code, "-m", "study.run_sweep", str(study_file), "--dry-run", *extra)
        assert run.returncode == 0, run.stderr
        return re.findall(r"\S+-s0-[0-9a-f]{6}", run.stdout)

    assert ids(copy) == ids(copy_code(tmp_path / "unedited")) and len(ids(copy)) == 1
    swept = ids(copy, "--set", "sweep.momentum=[0.0,0.9]")
    assert len(set(swept)) == 2 and ids(copy)[0] in swept  # 0.9 is optim.momentum's default


def test_counts_agree_in_number() -> None:
    from analysis.words import counted, every

    assert [counted(n, "trial") for n in (0, 1, 2, 1200)] == ["0 trials", "1 trial", "2 trials", "1,200 trials"]
    assert [every(n, "measurement") for n in (0, 1, 3)] == [
        "no measurements",
        "the one measurement",
        "all 3 measurements",
    ]
    study = parse_study(
        "name: one\nsweep: {batch_size: [128], mixup_alpha: [0.0]}\n"
        "schedule: {epochs: 2, decay: constant, milestones: []}"
    )
    lines = format_plan(study, plan_study(study)).splitlines()
    assert lines[0].startswith("study one: 1 trial x 2 epochs") and "(1 trial x 2 epochs x 50,000)" in lines[-1]
