"""A trial's id is what it trains: never where the data lies, what is measured while it trains, or how fast.

The store under tests/data/store-2026-12-07 was made by main of 2026-12-07 (before ids left paths and
measurement settings out), with HOME=/tmp/homeA: its ids hash that HOME's data folder. It must resume with
them from any HOME, with measurements added."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from study.config import parse_study
from study.plan import plan_study, with_stored_ids

ROOT = Path(__file__).resolve().parents[1]
PINNED = ROOT / "tests" / "data" / "store-2026-12-07"
PINNED_IDS = {64: "b64-a0-none-s0-c58bf8", 128: "b128-a0-none-s0-224784"}  # as that store holds them


def pinned_store(tmp_path: Path) -> Path:
    """A copy of the 2026-12-07 store and its study file (storage: the copy); returns the study file."""
    shutil.copytree(PINNED / "pinned", tmp_path / "pinned")
    study_file = tmp_path / "pinned.yaml"
    study_file.write_text((PINNED / "pinned.yaml").read_text().replace("STORAGE", str(tmp_path)))
    return study_file


def ids_under(home: str, text: str, monkeypatch: pytest.MonkeyPatch) -> dict[int, str]:
    monkeypatch.setenv("HOME", home)
    return {t.batch_size: t.trial_id for t in plan_study(parse_study(text))}


def test_paths_measurements_and_speed_switches_leave_the_id_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    base = "name: i\nsweep: {batch_size: [64, 128]}\nschedule: {epochs: 10, decay: constant}\n"
    ids = ids_under("/home/a", base, monkeypatch)
    # The ids of 2026-12-07, pinned: a change to them makes every unfinished trial start again.
    assert ids == {64: "b64-a1-none-s0-2fa40d", 128: "b128-a1-none-s0-05ff05"}
    assert ids_under("/home/b", base, monkeypatch) == ids
    for neutral in (
        "data: {root: /elsewhere}\n",
        "model: {compile: true}\n",
        "measure: {noise_scale: {probe_pairs: 8, probe_batch: 64}}\n",
        "measure: {trajectory: {every_epochs: 2}}\n",
    ):
        assert ids_under("/home/a", base + neutral, monkeypatch) == ids, neutral
    for training in ("optim: {momentum: 0.5}\n", "data: {train_subset: 5000}\n", "model: {width: 0.5}\n"):
        changed = ids_under("/home/a", base + training, monkeypatch)
        assert not set(changed.values()) & set(ids.values()), training


def test_a_store_of_an_earlier_version_keeps_its_ids_from_another_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from analysis.store import ResultsStore
    from study.checks import nothing_left
    from study.status import read_status

    study_file = pinned_store(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "another-home"))
    text = study_file.read_text()
    plain, measured = parse_study(text), parse_study(text + "measure: {noise_scale: {}}\n")
    store = ResultsStore.for_study(str(tmp_path), "pinned")
    stored = store.read("trials")
    assert {t.trial_id for t in plan_study(plain)}.isdisjoint(PINNED_IDS.values())  # today's ids are others
    for study in (plain, measured):
        assert {t.batch_size: t.trial_id for t in with_stored_ids(plan_study(study), stored)} == PINNED_IDS
    answer = nothing_left(plain, plan_study(plain))
    assert answer is not None and "nothing to do: all 2 trials finished" in answer
    # The noise scale cannot be measured on trials trained without its probes: said, and not work left.
    answer = nothing_left(measured, plan_study(measured))
    assert answer is not None and "nothing to do: all 2 trials finished and no measurements written" in answer
    assert "2 finished trials were trained without measure.noise_scale" in answer
    status = read_status(str(tmp_path / "pinned"))
    assert set(status.planned) == set(PINNED_IDS.values())
    assert sorted(status.statuses.values()) == ["completed", "completed"]


def test_measuring_while_training_leaves_the_weights_bit_identical() -> None:
    """Noise-scale probes (forward and backward passes on their own random stream, BatchNorm restored) and
    trajectory snapshots (the adapter keeps the weights) train the same weights as without them."""
    from test_loop import CPU, TINY

    from trainables.loop import train

    def final_weights(**measuring: int) -> dict[str, torch.Tensor]:
        kept: dict[str, dict] = {}
        spec = dataclasses.replace(
            TINY, width=0.125, train_subset=256, test_subset=128, train_eval_samples=128, **measuring
        )
        train(spec, CPU, on_epoch=lambda metrics, make: kept.update(state=make()))
        return kept["state"]["model"]

    plain = final_weights(noise_probes=0, trajectory_every=0)
    measured = final_weights(noise_probes=3, noise_probe_batch=32, trajectory_every=1)
    assert plain.keys() == measured.keys()
    for key, value in plain.items():
        assert torch.equal(value, measured[key]), key


def test_data_is_known_by_its_content_never_by_where_it_lies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A study's images moved elsewhere resume it; other images in their place are refused in one line."""
    import numpy as np
    from PIL import Image
    from test_data import write_image_tree

    from study.checks import SweepError, check_data_fingerprint, record_identity
    from trainables.data import load_dataset

    monkeypatch.setenv("LBSTUDY_CACHE", str(tmp_path / "cache"))
    write_image_tree(tmp_path / "here" / "images")
    shutil.copytree(tmp_path / "here", tmp_path / "moved")
    shutil.copytree(tmp_path / "here", tmp_path / "other")
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(
        tmp_path / "other" / "images" / "train" / "cat" / "0.png"
    )
    here, moved, other = (
        load_dataset("imagefolder", tmp_path / p / "images").fingerprint() for p in ("here", "moved", "other")
    )
    assert here == moved and here != other
    study = parse_study(
        f"name: d\nstorage: {tmp_path / 'results'}\n"
        f"data: {{dataset: imagefolder, root: {tmp_path / 'here' / 'images'}}}\n"
    )
    record_identity(study, here)
    check_data_fingerprint(study, moved)
    with pytest.raises(SweepError, match=rf"holds other images than study 'd' was started with .*{here} -> {other}"):
        check_data_fingerprint(study, other)


def test_every_command_takes_the_study_folder_or_its_results(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """status, measure, report and findings accept <storage>/<name> (what run_sweep prints) and its results/."""
    from analysis import findings, report
    from study import measure, status

    pinned_store(tmp_path)
    study, results = tmp_path / "pinned", tmp_path / "pinned" / "results"
    for folder in (study, results):
        capsys.readouterr()
        assert report.main([str(folder), "-o", str(tmp_path / "r.html")]) == 0
        assert "report: " in capsys.readouterr().out
        assert findings.main([str(folder)]) == 0 and capsys.readouterr().out.startswith("| finding")
        assert measure.main([str(folder)]) == 0
        assert "measure: nothing to do: the study file asks for no measurements" in capsys.readouterr().out
        assert status.main([str(folder)]) == 0 and "study pinned: 2 trials" in capsys.readouterr().out
    assert report.main([str(tmp_path / "nothing")]) == 2
    assert "pass the study's folder that run_sweep printed" in capsys.readouterr().err
    assert findings.main([str(tmp_path / "nothing")]) == 2 and "holds no results" in capsys.readouterr().err


def test_a_csv_export_reads_back_as_the_store_it_came_from(tmp_path: Path) -> None:
    """analysis.export's CSV files (small enough to commit) are a store to the report: the same tables, the
    same figures, the same trial table, from the files alone."""
    import numpy as np

    from analysis.export import export
    from analysis.load import load_results
    from analysis.report import build_figures, render

    pinned_store(tmp_path)
    written = export(str(tmp_path / "pinned"), tmp_path / "export")
    assert {p.name for p in written} == {"trials.csv", "epochs.csv", "record.json"}
    assert sum(p.stat().st_size for p in written) < 20_000  # 2 trials x 2 epochs: a few KB
    store, csv = load_results(str(tmp_path / "pinned" / "results")), load_results(str(tmp_path / "export"))
    assert csv.trial_roles == store.trial_roles and csv.study == store.study
    for table in ("trials", "epochs"):
        ours, theirs = getattr(csv, table), getattr(store, table)
        assert len(ours) == len(theirs)
        for column in ("trial_id", "batch_size", "final_test_acc", "augmentation_label", "test_acc", "epoch"):
            if column in theirs:
                assert list(ours[column]) == list(theirs[column]), (table, column)
    (a, _), (b, _) = build_figures(csv), build_figures(store)
    assert [name for name, _ in a] == [name for name, _ in b]
    for (_, fa), (_, fb) in zip(a, b):
        for ta, tb in zip(fa.data, fb.data):
            if getattr(ta, "y", None) is not None and getattr(tb, "y", None) is not None:
                assert np.allclose(np.asarray(ta.y, dtype=float), np.asarray(tb.y, dtype=float), equal_nan=True)
    assert "b64-a0-none-s0-c58bf8" in render(csv)
