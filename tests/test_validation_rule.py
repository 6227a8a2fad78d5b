"""The rule: every value a study file (or `--set`) can give is checked by type and range before Ray starts,
and anything that passes trains its first step. A property test draws study files from the config schema
itself; the numbered cases of the probes that found the gaps each have a test of their own."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import shutil
import subprocess
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from study.config import (
    MAX_FILE_BYTES,
    SEARCHABLE,
    ConfigError,
    StudyConfig,
    parse_study,
)
from study.errors import MAX_MESSAGE, RANGE, Range
from study.plan import check_against_plan, plan_study
from trainables.data import Dataset, global_batches, load_dataset
from trainables.loop import Runtime, optimizer_step, set_up, worker_micro_batches
from trainables.trial import TrialSpec


def schema_fields(cls: type, where: str = "") -> typing.Iterator[tuple[str, dataclasses.Field, Any]]:
    """(key path, field, type hint) of every field of the study file's schema, nested sections included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{where}.{f.name}" if where else f.name
        yield path, f, hints[f.name]
        for inner in _dataclasses_in(hints[f.name]):
            if inner is not cls:  # sweep.also holds more SweepConfigs: the same fields
                yield from schema_fields(inner, path)


def _dataclasses_in(hint: Any) -> list[type]:
    if dataclasses.is_dataclass(hint):
        return [hint]
    return [d for arg in typing.get_args(hint) for d in _dataclasses_in(arg)]


def _numbers_in(hint: Any) -> bool:
    if hint in (int, float):
        return True
    return any(_numbers_in(arg) for arg in typing.get_args(hint) if not dataclasses.is_dataclass(arg))


def test_every_number_a_study_file_can_hold_has_a_declared_range() -> None:
    """Forgetting a range is an error: each numeric field declares its Range (or names the check that
    holds it, where the range depends on other values)."""
    numeric = [(path, f) for path, f, hint in schema_fields(StudyConfig) if _numbers_in(hint)]
    assert len(numeric) > 60  # the walk reached every section, measures and search included
    missing = [path for path, f in numeric if RANGE not in f.metadata]
    assert not missing, f"give these fields a range (study.errors.ranged): {missing}"


# ---------------------------------------------------------------------------------------------
# The property test: study files drawn from the schema. Half are valid by construction (each key a value
# of its own type and range, a random subset of keys given), half the same with one key, anywhere in the
# schema, given a value outside its range or of a wrong type.

# Valid values of the keys other keys depend on (batch sizes that divide over the workers and fit the 256
# training images, a warmup shorter than the run...), drawn from these; and small values of the keys that
# set the cost, so that a passing file trains its first step in a fraction of a second (their whole ranges
# are probed by the out-of-range draws and by the numbered cases below).
VALID = {
    "model.width": st.floats(0.05, 0.25),
    "model.compile": st.sampled_from(["auto", False]),  # true compiles for a minute on a CPU: test_perf's
    "model.ghost_batch": st.sampled_from([None, 4, 8]),
    "sweep.batch_size": st.sampled_from([16, 32, 64]),
    "sweep.ghost_batch": st.sampled_from([None, 4, 8]),
    "sweep.warmup_epochs": st.sampled_from([0.0, 0.5]),
    "sweep.seed": st.integers(0, 2**32 - 1),
    "schedule.epochs": st.integers(2, 4),
    "schedule.warmup_epochs": st.sampled_from([0.0, 0.5]),
    "schedule.milestones": st.sampled_from([[], [1]]),
    "resources.workers": st.sampled_from([1, 2]),
    "resources.max_micro_batch": st.sampled_from([8, 16, 8192]),
    "eval.every_epochs": st.just(1),
    "search.asha.grace_period": st.just(1),
    "search.samples": st.integers(1, 3),
    "search.target": st.floats(0.1, 0.9),
    "measure.interpolate.between": st.just("batch_size"),
    "measure.interpolate.pairs": st.just([[16, 32]]),
    "measure.eps_sharpness.method": st.just("sign_ascent"),
}
NAMES = {  # the registries' names, for string keys that take one
    "data.dataset": ["synthetic"],
    "model.arch": ["vgg9"],
    "optim.optimizer": ["sgd", "lars", "lamb"],
    "schedule.decay": ["constant", "step", "cosine"],
    "sweep.lr_scaling": ["none", "linear", "sqrt"],
    "sweep.model": ["vgg9"],
    "sweep.optimizer": ["sgd", "lars"],
    "sweep.augmentation.name": ["mixup", "cutout", "cutmix"],
}
FIXED = {"name", "storage", "data", "sweep.also", "search.space"}  # drawn separately below


def plain(path: str) -> str:
    return re.sub(r"\[\d+\]", "", path)


def valid_value(path: str, f: dataclasses.Field | None, hint: Any) -> st.SearchStrategy:
    """A value of the key's own type and range."""
    if plain(path) in VALID:
        return VALID[plain(path)]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    declared = f.metadata.get(RANGE) if f is not None else None
    if origin in (typing.Union, types.UnionType):
        return st.one_of([valid_value(path, f, a) if a is not type(None) else st.none() for a in args])
    if origin is Literal:
        return st.sampled_from(args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(valid_value(path, f, args[0]), min_size=1, max_size=2, unique_by=repr)
        return st.tuples(*(valid_value(path, f, a) for a in args)).map(list)
    if dataclasses.is_dataclass(hint):
        return section(hint, path)
    if hint is bool:
        return st.booleans()
    if hint is str:
        return st.sampled_from(NAMES.get(plain(path), ["x"]))
    allowed = declared if isinstance(declared, Range) else Range(-10.0, 10.0)
    low = -10.0 if allowed.low is None else allowed.low
    high = min(1e6, allowed.high) if allowed.high is not None else low + 1e6
    if hint is int:
        return st.integers(math.ceil(low) + allowed.low_open, math.floor(high) - allowed.high_open)
    return st.floats(low, high, exclude_min=allowed.low_open, exclude_max=allowed.high_open)


def invalid_value(f: dataclasses.Field | None, hint: Any) -> st.SearchStrategy:
    """A value outside the key's range, of a wrong type, or an empty list."""
    declared = f.metadata.get(RANGE) if f is not None else None
    wrong = st.sampled_from(["not a number", {"a": 1}, [], [[]], 1e400, -(2**70), 2**70, float("nan")])
    if isinstance(declared, Range):
        outside: list[Any] = [math.inf, -math.inf, math.nan]
        if declared.low is not None:
            outside += [declared.low - 1, declared.low] if declared.low_open else [declared.low - 1]
        if declared.high is not None:
            outside += [declared.high * 2 + 1, declared.high] if declared.high_open else [declared.high * 2 + 1]
        return st.sampled_from(outside) | wrong
    return wrong


def section(cls: type, where: str) -> st.SearchStrategy:
    """A mapping of one section: any subset of its keys (an absent key keeps its default), each valid."""
    hints = typing.get_type_hints(cls)
    required, optional = {}, {}
    for f in dataclasses.fields(cls):
        path = f"{where}.{f.name}" if where else f.name
        if plain(path) not in FIXED:
            needed = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            (required if needed else optional)[f.name] = valid_value(path, f, hints[f.name])
    return st.fixed_dictionaries(required, optional=optional)


SEARCH_SPACE = st.sampled_from(SEARCHABLE).flatmap(
    lambda key: st.fixed_dictionaries(
        {key: st.sampled_from([{"choice": [0.1]}, {"uniform": [0.01, 0.2]}, {"loguniform": [0.001, 0.1]}])}
    )
)


@st.composite
def study_files(draw: st.DrawFn) -> dict[str, Any]:
    sections = typing.get_type_hints(StudyConfig)
    raw: dict[str, Any] = {"name": "drawn", "data": {"dataset": "synthetic", "train_subset": 256, "test_subset": 64}}
    # The keys whose defaults are the paper's (300 epochs, batch 8192) are always given, small.
    raw["schedule"] = {"epochs": draw(VALID["schedule.epochs"]), "decay": "constant", "milestones": []}
    raw["sweep"] = {"batch_size": draw(st.lists(VALID["sweep.batch_size"], min_size=1, max_size=2, unique=True))}
    for name in ("model", "optim", "schedule", "sweep", "resources", "eval", "measure"):
        if draw(st.booleans()):
            raw[name] = {**raw.get(name, {}), **draw(section(sections[name], name))}
    if draw(st.integers(0, 3)) == 0:
        search_section = draw(section(typing.get_args(sections["search"])[0], "search"))
        raw["search"] = {**search_section, "space": draw(SEARCH_SPACE)}
        for key in raw["search"]["space"]:
            raw.get("sweep", {}).pop(key, None)  # searched or swept, not both (a check of its own)
    if draw(st.booleans()):  # one key, anywhere in the schema, made wrong
        path, f, hint = draw(st.sampled_from(MUTABLE))
        node = raw
        for part in path.split(".")[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path.split(".")[-1]] = draw(invalid_value(f, hint))
    return raw


MUTABLE = [
    (path, f, hint)
    for path, f, hint in schema_fields(StudyConfig)
    if not dataclasses.is_dataclass(hint) and path.split(".")[0] not in ("name", "storage") and ".also." not in path
]


@functools.cache
def synthetic(train_subset: int | None, test_subset: int | None) -> Dataset:
    return load_dataset("synthetic", "", train_subset=train_subset, test_subset=test_subset)


def first_step(trial: TrialSpec) -> float:
    """One optimizer step of `trial` from scratch, on the CPU without Ray: its loss. A multi-worker trial
    takes rank 0's micro-batches of the first global batch, and steps on them alone (no process group:
    the all-reduce over one process is the identity)."""
    runtime = Runtime(torch.device("cpu"))
    data = synthetic(trial.train_subset, trial.test_subset) if trial.dataset == "synthetic" else None
    t = set_up(trial, runtime, data, None)
    batch = global_batches(len(t.data.train), trial.batch_size, trial.seed, 0)[0]
    generator, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    rank0 = Runtime(torch.device("cpu"), rank=0, world_size=trial.workers)
    micro = worker_micro_batches(t.data.train, t.normalize, batch, trial, rank0, generator, rng)
    result = optimizer_step(t.train_model, t.optimizer, micro, t.schedule(0), runtime, t.grads, trial.label_smoothing)
    return float(result["loss"])


KEY_NAMES = {path.split(".")[-1] for path, _, _ in schema_fields(StudyConfig)} | {"sweep", "search", "measure"}


def assert_one_line_naming_a_key(message: str) -> None:
    assert "\n" not in message and len(message) <= MAX_MESSAGE, message
    named = set(re.findall(r"[A-Za-z_]+", message))
    assert named & KEY_NAMES, message


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(study_files())
def test_a_drawn_study_file_is_refused_in_one_line_or_trains_its_first_step(raw: dict[str, Any]) -> None:
    text = yaml.safe_dump({**raw, "storage": "/tmp/lbstudy-drawn"})
    try:
        study = parse_study(text, source="drawn.yaml")
    except ConfigError as error:
        assert str(error).startswith("drawn.yaml: ")
        assert_one_line_naming_a_key(str(error))
        return
    trials = plan_study(study)
    try:
        check_against_plan(study, trials, "drawn.yaml")
    except ConfigError as error:
        assert_one_line_naming_a_key(str(error))
        return
    assert trials and all(isinstance(t, TrialSpec) for t in trials)
    smallest = min(trials, key=lambda t: (t.batch_size, t.micro_batch))
    loss = first_step(smallest)
    assert isinstance(loss, float)  # NaN is allowed: a huge learning rate diverges, which a trial records


@pytest.mark.slow
def test_checking_a_study_file_imports_neither_ray_nor_torch() -> None:
    code = (
        "import sys; from study.config import load_study; from study.plan import check_against_plan, plan_study; "
        "plan_study(load_study('studies/smoke.yaml')); "
        "print(sorted(m for m in ('ray', 'torch', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------
# The numbered cases of the probes (issue: complete validation), each as it was found.


def refused(text: str, *overrides: str) -> str:
    with pytest.raises(ConfigError) as error:
        parse_study(text, source="s.yaml", overrides=list(overrides))
    message = str(error.value)
    assert_one_line_naming_a_key(message)
    return message


TINY = "name: t\ndata: {dataset: synthetic, train_subset: 256, test_subset: 64}\nmodel: {width: 0.125}\n"
TINY += "schedule: {epochs: 2, decay: constant, milestones: []}\nsweep: {batch_size: [32], mixup_alpha: [0.0]}\n"


@pytest.mark.parametrize("key", SEARCHABLE)
def test_1_every_searchable_key_plans_and_trains(key: str) -> None:
    """Each key docs/study-file.md lists as searchable, through the planner (its drawn value in every sample's
    record) and the first step of a sample."""
    ranges = {"base_lr": [0.01, 0.1], "warmup_epochs": [0.0, 1.0], "momentum": [0.8, 0.99], "weight_decay": [0.0, 0.01]}
    study = parse_study(TINY + f"search: {{space: {{{key}: {{uniform: {ranges[key]}}}}}, samples: 2}}\n")
    samples = plan_study(study)
    drawn = [getattr(t, key) for t in samples]
    assert len(samples) == 2 and len(set(drawn)) == 2 and all(ranges[key][0] <= v < ranges[key][1] for v in drawn)
    assert math.isfinite(first_step(samples[0]))
    assert key in (ROOT / "docs" / "study-file.md").read_text()


def billion_laughs(depth: int) -> str:
    text = "name: t\nmeasure:\n  interpolate:\n    pairs:\n      - &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
    for i in range(1, depth):
        text += f"      - &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n"
    return text


@pytest.mark.parametrize("depth", [8, 10, 30])
def test_2_alias_bombs_are_refused_at_once_in_a_short_line(depth: int) -> None:
    started = time.perf_counter()
    message = refused(billion_laughs(depth))
    assert "aliases" in message and time.perf_counter() - started < 2


def test_2_huge_files_and_lists_are_refused_before_they_are_parsed(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("name: t\n# " + "x" * (MAX_FILE_BYTES + 10) + "\n")
    started = time.perf_counter()
    from study.config import load_study

    with pytest.raises(ConfigError, match="is not a study file"):
        load_study(big)
    seeds = "name: t\nsweep: {seed: [" + ", ".join(str(i) for i in range(20_000)) + "]}\n"
    assert "a list of 20,000 values" in refused(seeds)
    assert time.perf_counter() - started < 5
    long_value = refused("name: t\n", "model.width=" + "9" * 5000)  # a value is elided, never dumped
    assert "characters)" in long_value


@pytest.mark.parametrize(
    "text, overrides, fragment",
    [
        (TINY, ["model.width=.inf"], "model.width: inf must be in (0, 16]"),
        (TINY, ["sweep.seed=[99999999999999999999999]"], "sweep.seed[0]: 99999999999999999999999 must be in"),
        (TINY, ["sweep.seed=-1"], "sweep.seed[0]: -1 must be in [0, 4,294,967,295]"),
        (TINY + "search: {space: {base_lr: {loguniform: [-0.1, 0.1]}}}\n", [], "loguniform: needs 0 < low < high"),
        (TINY + "search: {space: {base_lr: {uniform: [-0.1, 0.1]}}}\n", [], "can draw -0.1, which base_lr may not"),
        (TINY + "search: {space: {base_lr: {choice: [0.1, 0.0]}}}\n", [], "can draw 0, which base_lr may not"),
    ],
)
def test_3_values_that_failed_inside_trials_are_refused_before_ray(text: str, overrides: list, fragment: str) -> None:
    assert fragment in refused(text, *overrides)


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ("measure: {interpolate: {between: batch_size, pairs: [[32, 32]]}}", "is one trial twice"),
        ("measure: {random_directions: {points: 1}}", "measure.random_directions.points: 1 must be in"),
        ("measure: {interpolate: {points: 0, pairs: [[32, 64]]}}", "measure.interpolate.points: 0 must be in"),
        ("measure: {eps_sharpness: {eps: .inf}}", "measure.eps_sharpness.eps: inf must be in (0, 1]"),
        ("measure: {hessian: {samples: -5}}", "measure.hessian.samples: -5 must be in"),
        ("measure: {interpolate: {train_samples: -5, pairs: [[32, 64]]}}", "train_samples: -5 must be in"),
    ],
)
def test_4_nonsense_measure_settings_are_refused(extra: str, fragment: str) -> None:
    text = TINY.replace("batch_size: [32]", "batch_size: [32, 64]") + extra + "\n"
    assert fragment in refused(text)


@pytest.mark.slow
def test_4_an_interpolation_pair_across_two_grids_names_the_pair(tmp_path: Path) -> None:
    text = TINY + "measure: {interpolate: {pairs: [[32, 128]]}}\n"
    text = text.replace("mixup_alpha: [0.0]}", "mixup_alpha: [0.0], also: [{batch_size: 128, optimizer: lars}]}")
    study = parse_study(text, source="s.yaml")
    with pytest.raises(ConfigError, match=r"pairs: \[32, 128\] pairs no two planned trials"):
        check_against_plan(study, plan_study(study), "s.yaml")
    (tmp_path / "s.yaml").write_text(text)  # what the user sees: one line, exit 2, before Ray (no address)
    run = subprocess.run(
        [sys.executable, "-m", "study.run_sweep", str(tmp_path / "s.yaml"), "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "pairs no two planned trials" in run.stderr and len(run.stderr.splitlines()) == 1


def write_images(root: Path, classes: list[str], size: int = 32, mode: str = "RGB", per_class: int = 3) -> Path:
    from PIL import Image

    for split in ("train", "test"):
        for cls in classes:
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                colour = (i * 40, 100, 200) if mode == "RGB" else i * 40
                Image.new(mode, (size, size), colour).save(folder / f"{i}.png")
    return root


def test_4_a_one_class_dataset_is_refused(tmp_path: Path) -> None:
    from trainables.data import DataError, load_dataset

    with pytest.raises(DataError, match="needs at least two"):
        load_dataset("imagefolder", write_images(tmp_path / "one", ["cat"]))


def test_5_resized_and_converted_images_are_said_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainables.data import load_dataset

    monkeypatch.setenv("LBSTUDY_CACHE", str(tmp_path / "cache"))
    root = write_images(tmp_path / "big", ["cat", "dog"], size=64, mode="L")
    data = load_dataset("imagefolder", root)
    assert data.changed == "12 resized to 32x32 (bilinear), 12 converted from L to RGB, of 12 images"
    assert load_dataset("imagefolder", root).changed == data.changed  # read back from the decoded cache
    assert load_dataset("imagefolder", write_images(tmp_path / "plain", ["cat", "dog"])).changed == ""


def test_9_the_decoded_cache_follows_the_files_inside_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Images added inside a class folder, or one replaced by a corrupt file, change the cache's key (the
    top folder's own size and time do not change): the run decodes again and says so."""
    import os

    from trainables.data import DataError, imagefolder_cache, load_dataset

    monkeypatch.setenv("LBSTUDY_CACHE", str(tmp_path / "cache"))
    root = write_images(tmp_path / "folder", ["cat", "dog"])
    first = load_dataset("imagefolder", root)
    assert "imagefolder: decoding" in capsys.readouterr().out and len(first.train) == 6
    key = imagefolder_cache(root)
    top = os.stat(root)
    write_images(tmp_path / "more", ["cat"], per_class=4)
    for i in range(4):  # new images in an existing class folder
        os.replace(tmp_path / "more" / "train" / "cat" / f"{i}.png", root / "train" / "cat" / f"new{i}.png")
    os.utime(root, ns=(top.st_atime_ns, top.st_mtime_ns))  # the top folder looks untouched
    assert imagefolder_cache(root) != key
    second = load_dataset("imagefolder", root)
    assert len(second.train) == 10 and "imagefolder: decoding" in capsys.readouterr().out
    assert len(load_dataset("imagefolder", root).train) == 10 and "decoding" not in capsys.readouterr().out
    (root / "train" / "dog" / "0.png").write_bytes(b"not an image")  # replaced by a corrupt file
    with pytest.raises(DataError, match="corrupt image file"):
        load_dataset("imagefolder", root)


def test_6_a_subset_larger_than_the_split_names_its_key(tmp_path: Path) -> None:
    from trainables.data import DataError, load_dataset

    root = write_images(tmp_path / "small", ["cat", "dog"])
    with pytest.raises(DataError, match=r"data\.train_subset: 500 images asked for, but the split has only 6"):
        load_dataset("imagefolder", root, train_subset=500)


@pytest.mark.parametrize(
    "text, fragment",
    [
        (TINY + "search: {space: {base_lr: {choice: [0.1]}}, samples: 1000000}\n", "search.samples: 1000000"),
        (TINY + "search: {space: {base_lr: {choice: [0.1]}}, asha: {grace_period: 5}}\n", "grace_period: 5 epochs"),
        (TINY + "search: {space: {warmup_epochs: {uniform: [0.0, 4.0]}}}\n", "can draw 4, which warmup_epochs"),
        (TINY.replace("width: 0.125", "width: 1e9"), "model.width: 1000000000.0 must be in (0, 16]"),
    ],
)
def test_12_other_accepted_values_are_refused(text: str, fragment: str) -> None:
    started = time.perf_counter()
    assert fragment in refused(text)
    assert time.perf_counter() - started < 2


@pytest.mark.slow
def test_7_odd_results_folders_build_a_report_or_say_what_is_missing(tmp_path: Path) -> None:
    """A results folder with trials/ but no epochs/, or with every epochs file unreadable, builds a report
    of what exists that says what it lacks; study.measure on unreadable trials is one line, exit 2."""
    from analysis.report import write_report
    from analysis.store import ResultsStore
    from trainables.ray_train import EPOCHS_SCHEMA, TRIALS_SCHEMA

    study = parse_study(TINY.replace("batch_size: [32]", "batch_size: [32, 64]"))
    store = ResultsStore(str(tmp_path / "odd" / "results"))
    for trial in plan_study(study):
        row = {**trial.to_dict(), "status": "completed", "epochs_completed": 2, "final_test_acc": 0.5}
        row |= {"config": json.dumps(study.to_dict()), "spec": json.dumps(trial.to_dict()), "milestones": []}
        store.write(
            "trials", trial.trial_id, [{k: v for k, v in row.items() if k in TRIALS_SCHEMA.names}], TRIALS_SCHEMA
        )
        store.write(
            "epochs", trial.trial_id, [{"trial_id": trial.trial_id, "epoch": 1, "test_acc": 0.4}], EPOCHS_SCHEMA
        )
    for epochs_file in (tmp_path / "odd" / "results" / "epochs").iterdir():
        epochs_file.write_bytes(epochs_file.read_bytes()[:40])  # every one cut
    page = Path(write_report(store.uri)).read_text()
    assert "the trials record 4 epochs, but no epoch row could be read" in page
    shutil.rmtree(tmp_path / "odd" / "results" / "epochs")
    page = Path(write_report(ResultsStore(store.uri).uri)).read_text()
    assert "results/epochs/ is missing, or every file of it unreadable" in page
    for trials_file in (tmp_path / "odd" / "results" / "trials").iterdir():
        trials_file.write_bytes(trials_file.read_bytes()[:40])
    measured = subprocess.run(
        [sys.executable, "-m", "study.measure", store.uri], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert measured.returncode == 2 and "2 trial files cannot be read" in measured.stderr.splitlines()[-1]
