import re
from pathlib import Path

import pytest

from study.config import ConfigError, StudyConfig, apply_override, augmentations, load_study, parse_study

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = (
    "name: t\ndata: {dataset: synthetic}\nschedule: {epochs: 4, decay: constant}\nsweep: {batch_size: [64, 128]}\n"
)


def test_minimal_study_gets_design_defaults() -> None:
    study = parse_study("name: x\n")
    assert isinstance(study, StudyConfig)
    assert study.sweep.batch_size == (128, 8192)
    assert [a.label for a in augmentations(study.sweep)] == ["none", "mixup a=1"]  # mixup_alpha [0, 1]
    assert study.schedule.milestones == (150, 225, 275) and study.optim.nesterov is True
    assert study.measure.hessian is None  # absent measure = skipped


def test_single_sweep_value_is_a_list_of_one() -> None:
    study = parse_study(MINIMAL + "")
    assert parse_study(MINIMAL.replace("[64, 128]", "256")).sweep.batch_size == (256,)
    assert study.sweep.seed == (0,)


@pytest.mark.parametrize("study_file", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_study_files_load(study_file: Path) -> None:
    assert load_study(study_file).name == study_file.stem


def test_set_overrides_any_key_with_yaml_values() -> None:
    study = parse_study(
        MINIMAL,
        overrides=["sweep.batch_size=[32,64]", "schedule.epochs=2", "optim.nesterov=false", "measure.hessian.top_k=3"],
    )
    assert study.sweep.batch_size == (32, 64) and study.schedule.epochs == 2 and study.optim.nesterov is False
    assert study.measure.hessian is not None and study.measure.hessian.top_k == 3


def test_yaml_1_1_exponent_without_dot_is_a_number() -> None:
    assert parse_study(MINIMAL + "optim: {weight_decay: 5e-4}\n").optim.weight_decay == 5e-4


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("name: t\nsweep: {batch_sise: [1]}", "unknown key 'batch_sise'; did you mean 'batch_size'?"),
        ("nmae: t", "did you mean 'name'"),
        ("data: {dataset: synthetic}", "'name' is required"),
        ("name: t\nsweep: {batch_size: [128, 1.5]}", "sweep.batch_size[1]: expected an integer"),
        ("name: t\noptim: {nesterov: 'yes'}", "optim.nesterov: expected true or false"),
        ("name: t\nschedule: {epochs: ten}", "schedule.epochs: expected an integer"),
        ("name: t\nschedule: {epochs: 0}", "schedule.epochs: 0 must be in [1, 100,000]"),
        ("name: t\nschedule: {epochs: 100}", "schedule.milestones: [150, 225, 275] lie outside the 100-epoch run"),
        (
            "name: t\nschedule: {epochs: 10, decay: constant, warmup_epochs: 10}",
            "warmup_epochs 10.0: must be >= 0 and shorter",
        ),
        ("name: t\nsweep: {mixup_alpha: [-0.5]}", "sweep.mixup_alpha[0]: -0.5 must be in [0, 1000]"),
        (
            "name: t\nresources: {workers: 3}\nsweep: {batch_size: [128]}",
            "128 cannot be split over resources.workers=3",
        ),
        ("name: t\ndata: {dataset: imagenet}", "data.dataset: unknown 'imagenet'; choose one of"),
        ("name: t\nmodel: {arch: resnet50}", "model.arch: unknown 'resnet50'"),
        ("name: t\nsweep: {lr_scaling: [cubic]}", "sweep.lr_scaling: unknown 'cubic'"),
        ("name: t\nschedule: {decay: exponential}", "schedule.decay: unknown 'exponential'"),
        (
            "name: t\ndata: {dataset: synthetic}\nschedule: {epochs: 2, decay: constant}\nsweep: {batch_size: [8192]}",
            "8192 exceeds the 4096 training images",
        ),
        ("name: t\nmeasure: {interpolate: {pairs: [[128, 4096]]}}", "4096 is not among sweep.batch_size"),
        ("name: t\nresources: {use_gpu: maybe}", "resources.use_gpu: expected 'auto' or true or false"),
        ("name: t\nresources: {gpus_per_worker: 2}", "resources.gpus_per_worker: 2.0 must be in (0, 1]"),
        ("name: [unclosed", "malformed YAML at line 1"),
        ("name: t\nsweep: {augmentation: [mixup], mixup_alpha: [1.0]}", "give mixup_alpha or augmentation, not both"),
        ("name: t\nsweep: {augmentation: [autoaugment]}", "sweep.augmentation: unknown 'autoaugment'"),
        (
            "name: t\nsweep: {augmentation: [{name: cutout, size: 0}]}",
            "sweep.augmentation[0].size: 0 must be in [1, 32]",
        ),
        ("name: t\nsweep: {augmentation: [{name: cutmix, alfa: 1}]}", "did you mean 'alpha'"),
        ("- just\n- a list", "must be a mapping"),
        ("name: t\ndata: 3", "data: expected a mapping"),
    ],
)
def test_each_mistake_gets_one_clear_line(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_study(text, source="s.yaml")
    message = str(error.value)
    assert fragment in message and "\n" not in message and message.startswith("s.yaml: ")


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_override({}, "schedule.epochs")
    with pytest.raises(ConfigError, match="is not a section"):
        apply_override({"name": "x"}, "name.sub=1")


def test_missing_study_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the study file"):
        load_study(tmp_path / "absent.yaml")


def test_config_round_trips_through_its_dict() -> None:
    study = parse_study(MINIMAL + "measure: {hessian: {top_k: 2}, interpolate: {pairs: [[64, 128]]}}\n")
    import yaml

    assert parse_study(yaml.safe_dump(study.to_dict())) == study


def test_fractional_gpus_pack_trials_onto_one_gpu() -> None:
    from study.sweep import SweepError, check_fits, worker_bundle

    one_gpu_node = [{"CPU": 16.0, "GPU": 1.0}]
    study = parse_study("name: t\nresources: {gpus_per_worker: 0.1}")
    assert worker_bundle(study, use_gpu=True) == {"CPU": 1.0, "GPU": 0.1}
    assert check_fits(study, True, one_gpu_node) == 10  # not 9: 1.0 / 0.1 is just below 10 in floating point
    assert check_fits(parse_study("name: t"), True, one_gpu_node) == 1
    assert check_fits(study, False, one_gpu_node) == 16  # on CPUs the GPU share does not count
    two_workers = parse_study("name: t\nresources: {workers: 2, gpus_per_worker: 0.5}\nsweep: {batch_size: [128]}")
    assert check_fits(two_workers, True, one_gpu_node) == 1
    with pytest.raises(SweepError, match="gpus_per_worker"):
        check_fits(parse_study("name: t\nresources: {workers: 2}\nsweep: {batch_size: [128]}"), True, one_gpu_node)


def test_measure_switches_take_true_false_or_settings() -> None:
    on = parse_study(MINIMAL + "measure: {noise_scale: true, hessian: {density: null}}\n").measure
    assert on.noise_scale is not None and on.noise_scale.probe_pairs == 4 and on.hessian.density is None
    assert parse_study(MINIMAL + "measure: {noise_scale: false}\n").measure.noise_scale is None
    tuned = parse_study(
        MINIMAL + "measure: {noise_scale: {probe_pairs: 16, confidence: 0.9}, hessian: {density: {iterations: 30}}}\n"
    ).measure
    assert tuned.noise_scale.probe_pairs == 16 and tuned.noise_scale.confidence == 0.9
    assert tuned.hessian.density.iterations == 30 and tuned.hessian.trace_rel_error == 0.02


@pytest.mark.parametrize(
    "measure, key",
    [
        ("{noise_scale: {probe_pairs: 0}}", "measure.noise_scale"),
        ("{noise_scale: {confidence: 1.5}}", "measure.noise_scale.confidence"),
        ("{hessian: {trace_rel_error: 0}}", "measure.hessian"),
        ("{hessian: {density: {iterations: 1}}}", "measure.hessian.density"),
        ("{eps_sharpness: {method: newton}}", "measure.eps_sharpness.method"),
        ("{interpolate: {bn: freeze}}", "measure.interpolate.bn"),
        ("{trajectory: {every_epochs: 2}}", "measure.trajectory.every_epochs"),  # 4 epochs: 2 snapshots
    ],
)
def test_bad_measure_settings_name_their_key(measure: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_study(MINIMAL + f"measure: {measure}\n")


def test_dry_run_plan_says_what_trajectories_cost_on_disk() -> None:
    from study.plan import format_plan, plan_study

    study = parse_study(MINIMAL + "measure: {trajectory: {every_epochs: 1}}\n")
    line = format_plan(study, plan_study(study)).splitlines()[-1]
    assert line.startswith("trajectory: 4 weight snapshots per trial x ") and "MiB per trial" in line


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "-x", "a b", '"a\\nb"', "a/b", "é", '""'])
def test_a_study_name_cannot_leave_its_storage_folder(name: str) -> None:
    with pytest.raises(ConfigError, match="name: .* must be a folder name"):
        parse_study(f"name: {name}\n")


def test_a_study_name_too_long_for_a_folder_is_one_line_before_anything_runs(tmp_path: Path) -> None:
    """256 characters used to end in a 21-line `OSError: File name too long` once the storage folder existed."""
    import subprocess
    import sys

    with pytest.raises(
        ConfigError, match="name: 256 characters, too long for a folder name: shorten it to at most 200"
    ):
        parse_study(f"name: {'a' * 256}\n")
    assert parse_study(f"name: {'a' * 200}\n").name == "a" * 200
    (tmp_path / "store").mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "study.run_sweep", "studies/smoke.yaml", "--storage", str(tmp_path / "store")]
        + ["--set", f"name={'n' * 256}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "at most 200" in run.stderr and not any((tmp_path / "store").iterdir())


def test_study_names_of_letters_digits_dots_dashes_underscores_are_fine() -> None:
    assert parse_study("name: paper-v2.1_b\n").name == "paper-v2.1_b"


def test_a_binary_study_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="is not a text"):
        load_study(path)


def test_a_key_given_twice_is_an_error_not_last_wins() -> None:
    with pytest.raises(ConfigError, match=r"the key 'epochs' is given twice \(line 4\)"):
        parse_study("name: t\nschedule:\n  epochs: 4\n  epochs: 40\n")
    with pytest.raises(ConfigError, match="'sweep' is given twice"):
        parse_study(MINIMAL + "sweep: {seed: [1]}\n")


@pytest.mark.parametrize(
    "setting, key",
    [
        ("schedule: {epochs: 1e23}", "schedule.epochs"),
        ("schedule: {epochs: 100001}", "schedule.epochs"),
        ("sweep: {batch_size: 1e23}", "sweep.batch_size"),
        ("sweep: {batch_size: [128, 4294967296]}", "sweep.batch_size"),
    ],
)
def test_absurd_sizes_are_typos_said_at_once(setting: str, key: str) -> None:
    import time

    started = time.perf_counter()
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_study("name: t\ndata: {dataset: synthetic}\n" + setting + "\n")
    assert time.perf_counter() - started < 1.0  # no search linear in the batch size


def test_split_search_takes_the_fewest_accumulation_steps_among_divisors() -> None:
    from trainables.catalog import split_global_batch

    assert split_global_batch(8192, 2, 1000) == (512, 8)  # 4096 per worker: 8 steps of 512 (not 5, not 1000)
    assert split_global_batch(7, 1, 3) == (1, 7)  # a prime: only 1 x 7 fits
    assert split_global_batch(2**31, 1, 8192) == (8192, 2**18)


def test_a_set_mistake_is_blamed_on_set_not_on_the_file(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(MINIMAL)
    with pytest.raises(ConfigError, match=r"^--set schedule\.epoch=3: .*unknown key 'epoch'"):
        load_study(path, overrides=["schedule.epoch=3"])
    with pytest.raises(ConfigError, match=r"^--set schedule\.epochs=0: .*schedule\.epochs"):
        load_study(path, overrides=["schedule.epochs=0"])
    # Among several, the one at fault is named, not all of them as a prefix.
    with pytest.raises(ConfigError, match=r"^--set model\.width=abc: model\.width: expected a number"):
        load_study(path, overrides=["schedule.epochs=2", "model.width=abc", "sweep.seed=[1]"])
    path.write_text(MINIMAL + "model: {width: -1}\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: .*model\.width"):
        load_study(path, overrides=["schedule.epochs=2"])  # the file's own mistake stays the file's
