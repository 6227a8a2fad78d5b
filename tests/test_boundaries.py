"""The packages' boundaries (DESIGN.md), enforced over every module, and the report standing alone."""

from __future__ import annotations

import ast
import functools
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGES = ("study", "trainables", "analysis")


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions (lazy imports count too); imports for type
    checkers only (`if TYPE_CHECKING:`) never run, so they are not counted."""
    found = set()
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    for node in (n for n in ast.walk(tree) if id(n) not in typing_only):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


@functools.cache  # parsed once: the cycle check asks for it per import
def modules() -> dict[str, set[str]]:
    return {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): imports_of(p)
        for package in PACKAGES
        for p in sorted((ROOT / package).rglob("*.py"))
    }


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("module, imported", [(m, i) for m, imps in modules().items() for i in sorted(imps)])
def test_import_rules(module: str, imported: str) -> None:
    package = top(module)
    if package == "analysis":
        assert top(imported) not in ("torch", "ray", "study", "trainables"), f"{module} imports {imported}"
    if package == "trainables" and module != "trainables.ray_train":
        assert top(imported) not in ("study", "analysis", "ray"), f"the pure core {module} imports {imported}"
    if top(imported) == "ray":
        assert package == "study" or module == "trainables.ray_train", f"{module} imports ray"


def test_no_import_cycles_between_or_inside_packages() -> None:
    graph = {m: {i for i in imps if top(i) in PACKAGES and i in modules()} for m, imps in modules().items()}
    packages = {(top(m), top(i)) for m, imps in graph.items() for i in imps if top(m) != top(i)}
    assert not {(a, b) for a, b in packages if (b, a) in packages}, packages

    done: set[str] = set()  # modules whose imports are known to be acyclic: each visited once

    def visit(node: str, path: list[str]) -> None:
        for nxt in graph[node]:
            assert nxt not in path, f"import cycle: {' -> '.join(path + [nxt])}"
            if nxt not in done:
                visit(nxt, path + [nxt])
        done.add(node)

    for start in graph:
        visit(start, [start])


BLOCKER = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "ray", "study", "trainables"):
            raise ImportError(f"{name} is not installed (a report-only machine)")
sys.meta_path.insert(0, Block())
sys.argv = ["analysis.report", *sys.argv[1:]]
runpy.run_module("analysis.report", run_name="__main__")
"""


@pytest.mark.slow
def test_the_report_builds_where_torch_ray_study_and_trainables_cannot_be_imported(tmp_path: Path) -> None:
    from analysis.store import ResultsStore, epoch_schema, trial_schema
    from trainables.trial import EpochMetrics, TrialSpec

    store = ResultsStore(str(tmp_path / "s" / "results"))
    store.write(
        "trials",
        "t0",
        [
            {
                "trial_id": "t0",
                "study": "s",
                "batch_size": 128,
                "augmentation": "none",
                "augmentation_label": "none",
                "lr_scaling": "none",
                "seed": 0,
                "status": "completed",
                "final_test_acc": 0.5,
                "final_clean_train_acc": 0.6,
                "best_test_acc": 0.5,
                "gap_acc": 0.1,
                "peak_lr": 0.1,
                "epochs_completed": 1,
            }
        ],
        trial_schema(TrialSpec),
    )
    store.write(
        "epochs",
        "t0",
        [
            {
                "trial_id": "t0",
                "epoch": 1,
                "step": 10,
                "test_acc": 0.5,
                "clean_train_acc": 0.6,
                "test_loss": 1.0,
                "clean_train_loss": 0.9,
                "train_loss": 1.1,
            }
        ],
        epoch_schema(EpochMetrics),
    )
    out = tmp_path / "report.html"
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER, store.root, "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert out.exists() and 'id="learning_curves"' in out.read_text()


@pytest.mark.parametrize("module", sorted(modules()))
def test_every_module_imports(module: str) -> None:
    """Benchmarks and CLIs too: a module that no test runs still has to import (names it uses exist)."""
    importlib.import_module(module)


TORCH_BLOCKER = """
import importlib.abc, os, runpy, sys
BLOCKED = os.environ["BLOCKED"].split(",")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"checking a study file imported {name}")
sys.meta_path.insert(0, Block())
sys.argv = ["study.run_sweep", *sys.argv[1:]]
runpy.run_module("study.run_sweep", run_name="__main__")
"""


def run_sweep_without(blocked: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m study.run_sweep ARGS` in a process where importing any of `blocked` fails."""
    return subprocess.run(
        [sys.executable, "-c", TORCH_BLOCKER, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "BLOCKED": blocked},
    )


def test_the_dry_run_sizes_trajectory_snapshots_of_every_swept_model_without_torch() -> None:
    args = ["--set", "measure.trajectory={every_epochs: 1}", "--set", "schedule.epochs=4", "--dry-run"]
    one = run_sweep_without("torch,ray,pandas", "studies/smoke.yaml", *args)
    both = run_sweep_without("torch,ray,pandas", "studies/smoke.yaml", *args, "--set", "sweep.model=[vgg9, wrn16_4]")
    assert one.returncode == 0 and both.returncode == 0, one.stderr[-2000:] + both.stderr[-2000:]
    line = next(x for x in one.stdout.splitlines() if x.startswith("trajectory:"))
    wide = next(x for x in both.stdout.splitlines() if x.startswith("trajectory:"))
    assert "up to" not in line and "up to" in wide  # WRN-16-4's snapshots are larger than VGG9's


@pytest.mark.parametrize("study", ["smoke", "remedies", "tuned", "depth"])
def test_checking_a_study_file_imports_neither_torch_nor_ray(study: str) -> None:
    """--dry-run and every study-file check answer at once: importing torch alone takes ~2 s here."""
    result = run_sweep_without("torch,ray,pandas", f"studies/{study}.yaml", "--dry-run")
    assert result.returncode == 0 and f"study {study}:" in result.stdout, result.stderr[-2000:]
    bad = run_sweep_without("torch,ray,pandas", f"studies/{study}.yaml", "--set", "model.arch=vgg99", "--dry-run")
    assert bad.returncode == 2 and "model.arch: unknown 'vgg99'" in bad.stderr, bad.stderr[-2000:]


def test_the_catalog_names_exactly_what_the_registries_hold() -> None:
    import numpy as np
    import torch

    from trainables import catalog
    from trainables.augment import apply, sample_draws
    from trainables.data import DATASETS
    from trainables.models import MODELS, register_model
    from trainables.optim import OPTIMIZERS

    assert set(catalog.MODEL_NAMES) == set(MODELS)
    assert set(catalog.OPTIMIZER_NAMES) == set(OPTIMIZERS)
    assert set(catalog.DATASET_NAMES) == set(DATASETS)
    # Augmentations have no registry but `apply`: every name the catalog allows changes a batch, but none.
    images, labels = torch.rand(8, 3, 32, 32), torch.arange(8)
    for name in catalog.AUGMENTATIONS:
        aug = catalog.Augmentation(name, 1.0 if name in catalog.LABEL_MIXING else 0.0, 16 if name == "cutout" else 0)
        draws = sample_draws(aug, 8, 1, 8, (32, 32), torch.Generator().manual_seed(0), np.random.default_rng(0))
        out = apply(aug, images, labels, draws, 0, slice(0, 8))
        assert torch.equal(out.images, images) == (name == "none"), name
    with pytest.raises(ValueError, match="not in trainables/catalog.py"):
        register_model("vgg99")


def test_storage_and_existing_results_are_checked_before_torch_or_ray_load(tmp_path: Path) -> None:
    # pyarrow may load: it reads the storage, which may be a bucket.
    unwritable = run_sweep_without("torch,ray", "studies/smoke.yaml", "--storage", "/proc/lbstudy")
    assert unwritable.returncode == 2 and "cannot be written" in unwritable.stderr, unwritable.stderr[-2000:]
    (tmp_path / "smoke" / "results" / "trials").mkdir(parents=True)
    (tmp_path / "smoke" / "results" / "trials" / "t.parquet").write_bytes(b"")
    existing = run_sweep_without("torch,ray", "studies/smoke.yaml", "--storage", str(tmp_path))
    assert existing.returncode == 2 and "already has results" in existing.stderr, existing.stderr[-2000:]


def test_resume_refuses_a_study_whose_settings_changed_before_torch_or_ray_load(tmp_path: Path) -> None:
    """--resume with schedule.epochs edited used to train 4 new trials beside the 4 old ones, and the
    figures pooled 2- and 3-epoch trials as seeds. Now: exit 2 before Ray, naming each changed key."""
    import dataclasses

    from study.checks import record_identity
    from study.config import load_study

    study = dataclasses.replace(load_study("studies/smoke.yaml", []), storage=str(tmp_path))
    record_identity(study)  # as the first run writes it
    (tmp_path / "smoke" / "results" / "trials").mkdir(parents=True)
    (tmp_path / "smoke" / "results" / "trials" / "t.parquet").write_bytes(b"")
    common = ["studies/smoke.yaml", "--storage", str(tmp_path), "--resume"]
    changed = run_sweep_without("torch,ray", *common, "--set", "schedule.epochs=3", "--set", "model.width=0.5")
    assert changed.returncode == 2, changed.stderr[-2000:]
    said = changed.stderr.strip()
    assert said.count("\n") == 0 and "schedule.epochs: 2 -> 3" in said and "model.width: 0.25 -> 0.5" in said
    assert "new name" in said
    # The sweep, resources and measurements may change; where the data lies too.
    from study.checks import check_fresh

    moved = dataclasses.replace(study, sweep=dataclasses.replace(study.sweep, seed=(0, 1)))
    check_fresh(dataclasses.replace(moved, data=dataclasses.replace(study.data, root="/elsewhere")), resume=True)
    # A store from before study.json: the newest trial row's resolved study file is the reference.
    (tmp_path / "smoke" / "study.json").unlink()
    import pandas as pd

    row = pd.DataFrame({"trial_id": ["t"], "status": ["completed"], "config": [json.dumps(study.to_dict())]})
    row.to_parquet(tmp_path / "smoke" / "results" / "trials" / "t.parquet")
    old = run_sweep_without("torch,ray", *common, "--set", "schedule.epochs=3")
    assert old.returncode == 2 and "schedule.epochs: 2 -> 3" in old.stderr, old.stderr[-2000:]


@pytest.mark.slow
def test_resume_of_a_finished_study_answers_from_the_store_without_ray(tmp_path: Path) -> None:
    """--resume on a finished study used to start Ray for 44 s to find nothing to do."""
    from conftest import tiny_study_yaml

    from analysis.store import ResultsStore, epoch_schema, trial_schema
    from study.checks import nothing_left
    from study.config import parse_study
    from study.plan import plan_study
    from trainables.trial import EpochMetrics, TrialSpec

    text = tiny_study_yaml("done", tmp_path)
    (tmp_path / "done.yaml").write_text(text)
    study = parse_study(text)
    planned = plan_study(study)
    store = ResultsStore.for_study(str(tmp_path), "done")

    def finished(spec: TrialSpec) -> None:
        store.write("trials", spec.trial_id, [{**spec.to_dict(), "status": "completed"}], trial_schema(TrialSpec))
        row = {"trial_id": spec.trial_id, "epoch": 1, "step": 1}
        store.write("epochs", spec.trial_id, [row], epoch_schema(EpochMetrics))

    for spec in planned[:-1]:
        finished(spec)
    ids = [t.trial_id for t in planned]
    assert nothing_left(study, planned) is None  # one trial still to train
    last = planned[-1]
    store.write("trials", last.trial_id, [{**last.to_dict(), "status": "completed"}], trial_schema(TrialSpec))
    assert nothing_left(study, planned) is None  # its epoch rows are missing: run_study restores them
    finished(last)
    answer = run_sweep_without("torch,ray", str(tmp_path / "done.yaml"), "--resume")
    assert answer.returncode == 0, answer.stderr[-2000:]
    assert f"done: nothing to do: all {len(ids)} trials finished and no measurements written" in answer.stdout
    # A measurement asked for and not written is work left (then Ray starts for it).
    measured = parse_study(text + "measure:\n  eps_sharpness: {samples: 64}\n")
    assert nothing_left(measured, planned) is None


@pytest.mark.slow
def test_study_measure_with_nothing_to_do_answers_from_the_store_without_ray(tmp_path: Path) -> None:
    """It used to start Ray for 25 s and print 'measure: 0 jobs written' either way."""
    import json

    from conftest import tiny_study_yaml

    from analysis.store import ResultsStore, trial_schema
    from study.config import parse_study
    from study.plan import plan_study
    from trainables.trial import TrialSpec

    study = parse_study(tiny_study_yaml("plain", tmp_path))
    store = ResultsStore.for_study(str(tmp_path), "plain")
    for spec in plan_study(study):
        row = {**spec.to_dict(), "status": "completed", "config": json.dumps(study.to_dict())}
        store.write("trials", spec.trial_id, [row], trial_schema(TrialSpec))
    blocker = TORCH_BLOCKER.replace("study.run_sweep", "study.measure")
    answer = subprocess.run(
        [sys.executable, "-c", blocker, store.root],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "BLOCKED": "torch,ray"},
    )
    assert answer.returncode == 0, answer.stderr[-2000:]
    assert "measure: nothing to do: the study file asks for no measurements" in answer.stdout
