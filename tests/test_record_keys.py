"""What a key needs comes from the trial record (trainables/trial.py), never from a list kept beside it:
compared conditions and their legends, trial-id tags and digests, 'between' keys, "this key's values".
Each test here failed before the record said so (a grid over base_lr averaged as seeds, an empty sweep
list planned nothing, ...)."""

import dataclasses
import json
import os
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from torch import nn

from analysis import figures
from analysis.load import load_results, with_condition_labels
from analysis.store import ResultsStore, trial_schema
from study.config import ConfigError, SweepConfig, parse_study, plain_values
from study.plan import grid_points, make_trial, plan_study
from trainables.models import use_ghost_batch_norm
from trainables.trial import SWEEP_FIELDS, EpochMetrics, Phase, TrialSpec, key_info

STUDY = """
name: keys
data: {dataset: synthetic, root: /data/lbstudy, train_subset: 512, test_subset: 256}
model: {width: 0.25}
schedule: {epochs: 4, decay: constant, milestones: []}
"""


def write_trials(store: ResultsStore, specs: list[TrialSpec], config: dict, accuracy: dict[str, float]) -> None:
    """Completed trials' rows as the Ray adapter writes them: the record's schema, the study's config."""
    for spec in specs:
        row = {
            **spec.to_dict(),
            "status": "completed",
            "final_test_acc": accuracy[spec.trial_id],
            "best_test_acc": accuracy[spec.trial_id],
            "final_clean_train_acc": 0.99,
            "gap_acc": 0.99 - accuracy[spec.trial_id],
            "config": json.dumps(config),
        }
        store.write("trials", spec.trial_id, [row], trial_schema(TrialSpec))


def test_a_grid_over_base_lr_with_one_seed_draws_a_curve_per_learning_rate(tmp_path: Path) -> None:
    study = parse_study(STUDY + "sweep: {batch_size: [64, 128], mixup_alpha: [0.0], base_lr: [0.05, 0.2]}\n")
    specs = plan_study(study)
    store = ResultsStore(str(tmp_path / "results"))
    write_trials(store, specs, study.to_dict(), {s.trial_id: 0.5 + s.base_lr for s in specs})
    trials = load_results(store.uri).trials
    assert set(trials["augmentation_label"]) == {"base lr 0.05: none", "base lr 0.2: none"}
    fig = figures.accuracy_and_gap_vs_batch(trials)
    curves = [t for t in fig.data if t.xaxis == "x"]
    assert len(curves) == 2  # never one curve with n = 2 and an interval over the two learning rates
    assert {round(y, 6) for t in curves for y in t.y} == {55.0, 70.0}


def test_a_search_keeps_one_curve_per_setting_its_winners_tuned_lr_is_no_condition(tmp_path: Path) -> None:
    study = parse_study(
        STUDY
        + "sweep: {batch_size: [64, 128], mixup_alpha: [0.0, 1.0]}\n"
        + "search: {space: {base_lr: {loguniform: [0.01, 1.0]}}, samples: 2, final_seeds: [0]}\n"
    )
    finals = [
        make_trial(study, {**point, "base_lr": 0.01 * (i + 1)}, Phase.FINAL, f"group {i}")
        for i, point in enumerate(grid_points(study, seeds=(0,)))
    ]
    assert len({s.base_lr for s in finals}) == 4
    store = ResultsStore(str(tmp_path / "results"))
    write_trials(store, finals, study.to_dict(), {s.trial_id: 0.8 for s in finals})
    assert set(load_results(store.uri).trials["augmentation_label"]) == {"none", "mixup a=1"}


@pytest.mark.parametrize("key", [f.name for f in dataclasses.fields(SweepConfig) if f.name != "also"])
def test_an_empty_list_of_any_sweep_key_is_refused(key: str) -> None:
    with pytest.raises(ConfigError, match=f"sweep.{key}: give at least one value"):
        parse_study(STUDY, overrides=[f"sweep.{key}=[]"])


def test_the_store_names_every_compared_key_of_the_record_and_no_other(tmp_path: Path) -> None:
    study = parse_study(STUDY + "sweep: {batch_size: [64], mixup_alpha: [0.0]}\n")
    store = ResultsStore(str(tmp_path / "results"))
    write_trials(store, plan_study(study), study.to_dict(), {t.trial_id: 0.5 for t in plan_study(study)})
    legends = store.legends("trials")
    assert list(legends) == [k for k in SWEEP_FIELDS if key_info(k).compared]
    assert {"base_lr", "weight_decay", "warmup_epochs", "model", "ghost_batch"} <= set(legends)
    assert not {"seed", "batch_size", "augmentation", "lr_scaling"} & set(legends)
    # A store written before the record named them reads with the legends of that time (no seeds split).
    assert with_condition_labels(pd.DataFrame({"augmentation_label": ["none"] * 2, "seed": [0, 1]}))[
        "augmentation_label"
    ].tolist() == ["none", "none"]


def test_roles_and_legends_come_from_the_newest_file_not_the_alphabetically_last(tmp_path: Path) -> None:
    study = parse_study(STUDY + "sweep: {batch_size: [64], mixup_alpha: [0.0]}\n")
    store = ResultsStore(str(tmp_path / "results"))
    old = pd.DataFrame({"trial_id": ["zzz"], "status": ["completed"], "batch_size": [64]})
    store.write(
        "trials",
        "zzz",
        old,
        pa.schema([("trial_id", pa.string()), ("status", pa.string()), ("batch_size", pa.int64())]),
    )
    past = time.time() - 3600
    os.utime(tmp_path / "results" / "trials" / "zzz.parquet", (past, past))
    spec = plan_study(study)[0]
    write_trials(store, [spec], study.to_dict(), {spec.trial_id: 0.5})
    assert store.roles("trials")["batch_size"] == ("swept", True)
    assert store.legends("trials") is not None


def test_trial_ids_stay_those_of_earlier_versions_so_studies_resume() -> None:
    """Ids pinned on 2026-12-07, when they left paths, measurement settings and speed switches out (a
    store of the ids before is resumed by what its trials train: test_identity)."""
    study = parse_study(
        STUDY.replace("name: keys", "name: pinned")
        + "sweep: {batch_size: [64, 128], mixup_alpha: [0.0, 1.0], model: [vgg9, resnet20], optimizer: [sgd, lars],"
        + " ghost_batch: [null, 32], budget: [epochs, steps], label_smoothing: [0.0, 0.1]}\n"
    )
    ids = set(t.trial_id for t in plan_study(study))
    assert len(ids) == 128
    sgd = {"b128-a0-none-ghost32-long-ls0.1-s0-ce71b2", "b64-a1-none-s0-b4950e"}
    lars = {"resnet20-b64-a1-none-lars-ghost32-long-s0-c07a05", "resnet20-b128-a1-none-lars-ls0.1-s0-0f90f9"}
    # LARS decayed only weights then; decaying every parameter (now the default for all optimizers) is
    # another training, so those trials get new ids, and `decayed: weights` finds the old ones.
    assert sgd <= ids and not lars & ids
    weights_only = dataclasses.replace(study, optim=dataclasses.replace(study.optim, decayed="weights"))
    assert lars <= set(t.trial_id for t in plan_study(weights_only))


def test_a_boolean_sweep_key_can_be_interpolated_between() -> None:
    assert plain_values(tuple[bool, ...] | None) and plain_values(tuple[float, ...])
    assert not plain_values(tuple[int | None, ...] | None)
    assert not key_info("model").between  # no straight line joins two architectures


def test_ghost_batch_refuses_a_model_without_batch_norm(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="has no BatchNorm layer"):
        use_ghost_batch_norm(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), 8)
    monkeypatch.setattr("study.config.BATCHNORM_MODELS", ("vgg9",))
    with pytest.raises(ConfigError, match="resnet20 has none; use null"):
        parse_study(STUDY + "sweep: {batch_size: [64], model: [vgg9, resnet20], ghost_batch: [32]}\n")


def test_an_epoch_record_of_an_older_version_still_resumes() -> None:
    current = {f.name: 1.0 for f in dataclasses.fields(EpochMetrics)}
    old = {k: v for k, v in current.items() if k not in ("grad_norm_rms", "checkpoint", "noise_units", "mfu")}
    old["grad_norm"] = 2.5  # the name before the rename
    old["dropped_since"] = 3.0
    record = EpochMetrics.from_dict(old)
    assert record.grad_norm_rms == 2.5 and record.mfu is None and record.noise_units is None
    assert EpochMetrics.from_dict(record.to_dict()) == record
    missing = {k: v for k, v in current.items() if k != "diverged"}
    with pytest.raises(ValueError, match="cannot be resumed"):
        EpochMetrics.from_dict(missing)


def test_torch_free_state_sizes_match_every_registered_model() -> None:
    from trainables.catalog import BATCHNORM_MODELS, state_bytes
    from trainables.models import MODELS, build_model

    for arch in MODELS:
        for width, classes in ((0.25, 10), (1.0, 100), (0.3, 10)):
            model = build_model(arch, width=width, num_classes=classes)
            size = sum(v.numel() * v.element_size() for v in model.state_dict().values())
            assert state_bytes(arch, width, classes) == size, (arch, width, classes)
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        assert has_bn == (arch in BATCHNORM_MODELS), arch


def test_the_sharpness_figure_names_each_measure_as_its_rows_do_and_only_flatness_ranks() -> None:
    trials = pd.DataFrame(
        {
            "trial_id": ["a", "b"],
            "batch_size": [64, 128],
            "augmentation_label": ["none", "none"],
            "lr_scaling": ["none", "none"],
            "seed": [0, 0],
            "status": ["completed", "completed"],
        }
    )
    rows = [
        {
            "trial_id": t,
            "measure": m,
            "value": v,
            "ci_low": None,
            "ci_high": None,
            "title": title,
            "unit": "u",
            "flatter": f,
        }
        for t, v in (("a", 1.0), ("b", 2.0))
        for m, title, f in (("hessian_eig1", "Hessian top eigenvalue", "lower"), ("noise_scale", "B_simple", ""))
    ]
    rows += [{"trial_id": t, "measure": "hessian_trace", "value": 3.0} for t in ("a", "b")]  # an older file
    fig = figures.sharpness_vs_batch(trials, pd.DataFrame(rows))
    titles = [a.text for a in fig.layout.annotations]
    assert titles[:3] == ["Hessian top eigenvalue (lower = flatter)", "Hessian trace (lower = flatter)", "B_simple"]
    assert "lower is flatter" not in fig.layout.title.text


def test_the_store_and_the_record_name_the_same_statuses_and_phases() -> None:
    from analysis.store import FINAL_STATUSES
    from trainables.trial import Status

    assert set(FINAL_STATUSES) | {Status.FAILED} == set(Status)  # failed: trained again on resume
    assert {key_info("seed").name, *Phase} == {"seed", "grid", "sample", "final"}
    spec = plan_study(parse_study(STUDY + "sweep: {batch_size: [64], mixup_alpha: [0.0]}\n"))[0]
    # The record holds plain strings: checkpoints (torch.load, weights only) and Tune take no enum classes.
    assert type(spec.phase) is str and spec.phase == Phase.GRID


def test_the_dry_run_says_a_snapshot_size_it_cannot_know_instead_of_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    from study import plan

    study = parse_study(
        STUDY + "sweep: {batch_size: [64], mixup_alpha: [0.0]}\nmeasure: {trajectory: {every_epochs: 1}}\n"
    )
    monkeypatch.setattr(plan, "state_bytes", lambda arch, width, classes: None)
    line = plan.trajectory_disk_line(study, plan_study(study))
    assert line.startswith("trajectory: up to 4 weight snapshots") and "vgg9 snapshot is not known" in line
