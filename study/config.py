"""The study file: frozen dataclasses that mirror the YAML one to one, loading, overrides, validation.

Every user mistake raises `ConfigError` with one line that names the key and says what to change.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.util
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from study.errors import (
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_IMAGES,
    MAX_SEED,
    RANGE,
    ConfigError,
    Range,
    checked_elsewhere,
    ranged,
    shown,
)
from study.errors import check as _check
from study.errors import one_of as _one_of
from study.keys import all_grids, interpolable_keys, plain_values, searched_keys  # noqa: F401 - re-exported
from study.measures import MEASURES
from trainables.catalog import (  # names and arithmetic only: checking a study file never imports torch
    AUGMENTATIONS,
    BATCHNORM_MODELS,
    DATASET_NAMES,
    MODEL_NAMES,
    OPTIMIZER_NAMES,
    Augmentation,
    dataset_sizes,
    split_global_batch,
)
from trainables.lr import DECAYS, LR_SCALING, training_regime

MAX_WIDTH = 16.0  # VGG9 at width 16 has 1024-8192 channels: beyond it a typo, not a model


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "cifar10"
    root: str = "~/.cache/lbstudy/data"
    train_subset: int | None = ranged(None, 1, MAX_IMAGES)
    test_subset: int | None = ranged(None, 1, MAX_IMAGES)
    augment: bool = True


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "vgg9"
    width: float = ranged(1.0, 0.0, MAX_WIDTH, low_open=True)
    compile: Literal["auto"] | bool = "auto"  # torch.compile the training step; auto = on CUDA only
    # BatchNorm statistics over ghost batches of this many images (Hoffer et al. 2017), whatever the
    # micro-batch; null = over the micro-batch. Must divide every trial's micro-batch.
    ghost_batch: int | None = ranged(None, 1, MAX_BATCH)


# The ranges of the values a key may take, whether given once (optim.base_lr) or swept (sweep.base_lr).
LR = Range(0.0, 1000.0, low_open=True)
WEIGHT_DECAY = Range(0.0, 1.0)
MOMENTUM = Range(0.0, 1.0, high_open=True)
SMOOTHING = Range(0.0, 1.0, high_open=True)
WARMUP = Range(0.0, MAX_EPOCHS, high_open=True)  # and shorter than the run: validate_sections
BATCH = Range(1, MAX_BATCH)
SEED = Range(0, MAX_SEED)
MIXUP_ALPHA = Range(0.0, 1000.0)  # 0 = no mixup


def _in(default: Any, values: Range) -> Any:
    return field(default=default, metadata={RANGE: values})


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "sgd"  # sgd | lars | lamb (trainables/optim.py)
    base_lr: float = _in(0.1, LR)
    base_batch_size: int = _in(128, BATCH)
    momentum: float = _in(0.9, MOMENTUM)  # sgd and lars (lamb has its published betas)
    nesterov: bool = True
    weight_decay: float = _in(5.0e-4, WEIGHT_DECAY)
    # lars: eta of the local rate eta ||w|| / (||g|| + wd ||w||)
    trust_coefficient: float = ranged(0.001, 0.0, 1.0, low_open=True)
    label_smoothing: float = _in(0.0, SMOOTHING)  # of the cross-entropy's targets (mixed targets too)
    # which parameters weight decay applies to, for every optimizer alike: all (torch's SGD, the seed
    # paper's) or weights (conv and linear weights; BN and biases not: the large-batch recipe)
    decayed: Literal["all", "weights"] = "all"


@dataclass(frozen=True)
class ScheduleConfig:
    epochs: int = ranged(300, 1, MAX_EPOCHS)
    warmup_epochs: float = _in(0.0, WARMUP)
    decay: str = "step"
    milestones: tuple[int, ...] = ranged((150, 225, 275), 1, MAX_EPOCHS)  # and within the run: validate_sections
    gamma: float = ranged(0.1, 0.0, 1.0, low_open=True)
    # epochs: every batch size trains `epochs` epochs. steps: Hoffer et al.'s regime adaptation, every
    # batch size takes the optimizer steps base_batch_size takes in `epochs` epochs: epochs and
    # milestones x batch_size / base_batch_size (rounded).
    budget: Literal["epochs", "steps"] = "epochs"


@dataclass(frozen=True)
class AugmentationConfig:
    """One value of the `augmentation` sweep axis: `mixup` or {name: cutmix, alpha: 1.0} or {name: cutout, size: 16}."""

    name: str
    alpha: float = ranged(1.0, 0.0, 1000.0, low_open=True)  # mixup, cutmix
    size: int = ranged(16, 1, 32)  # cutout: pixels of a 32x32 image


DEFAULT_MIXUP_ALPHA = (0.0, 1.0)


@dataclass(frozen=True)
class SweepConfig:
    """Each key is a list; every combination is one trial. A single value means a list of one."""

    batch_size: tuple[int, ...] = _in((128, 8192), BATCH)
    # mixup_alpha is shorthand for augmentation [none (alpha 0) or {name: mixup, alpha}]; when neither
    # is given the sweep is mixup_alpha [0.0, 1.0].
    mixup_alpha: tuple[float, ...] | None = _in(None, MIXUP_ALPHA)
    augmentation: tuple[AugmentationConfig, ...] | None = None
    lr_scaling: tuple[str, ...] = ("none",)
    seed: tuple[int, ...] = _in((0,), SEED)
    # When given, these replace the single values of optim/schedule.
    base_lr: tuple[float, ...] | None = _in(None, LR)
    weight_decay: tuple[float, ...] | None = _in(None, WEIGHT_DECAY)
    warmup_epochs: tuple[float, ...] | None = _in(None, WARMUP)
    model: tuple[str, ...] | None = None  # architectures (model.arch names) compared: the depth question
    optimizer: tuple[str, ...] | None = None  # the large-batch remedies: sgd, lars, lamb
    ghost_batch: tuple[int | None, ...] | None = _in(None, BATCH)  # null = plain BatchNorm
    budget: tuple[Literal["epochs", "steps"], ...] | None = None  # steps = train longer at large batch
    label_smoothing: tuple[float, ...] | None = _in(None, SMOOTHING)
    # More grids, each the main one with some keys replaced: the trials are the union (a baseline
    # beside a grid of remedies: `also: [{batch_size: 128, optimizer: sgd, ghost_batch: null}]`).
    also: tuple[SweepConfig, ...] = ()


@dataclass(frozen=True)
class ResourcesConfig:
    workers: int = ranged(1, 1, 4096)
    use_gpu: Literal["auto"] | bool = "auto"
    cpus_per_worker: float = ranged(1.0, 0.0, 4096.0, low_open=True)
    # A fraction packs several workers onto one GPU (0.25: four small-batch trials share it).
    gpus_per_worker: float = ranged(1.0, 0.0, 1.0, low_open=True)
    max_micro_batch: int = _in(8192, BATCH)
    max_concurrent_trials: int | None = ranged(None, 1, 100_000)
    max_failures: int = ranged(2, 0, 100)  # restarts of a trial's workers from their last checkpoint


@dataclass(frozen=True)
class EvalConfig:
    every_epochs: int = ranged(1, 1, MAX_EPOCHS)
    train_eval_samples: int | None = ranged(10_000, 1, MAX_IMAGES)


@dataclass(frozen=True)
class DistributionConfig:
    """Where a searched key's samples come from: exactly one of the three."""

    # [low, high], both > 0: uniform in log space. Every value a distribution can draw must lie in the
    # searched key's own range (validate_search).
    loguniform: tuple[float, float] | None = checked_elsewhere(None, "validate_search")
    uniform: tuple[float, float] | None = checked_elsewhere(None, "validate_search")
    choice: tuple[float, ...] | None = checked_elsewhere(None, "validate_search")


@dataclass(frozen=True)
class SearchSpaceConfig:
    """The searched keys (each a sweep key too: a searched key may not also be swept)."""

    base_lr: DistributionConfig | None = None
    warmup_epochs: DistributionConfig | None = None
    momentum: DistributionConfig | None = None
    weight_decay: DistributionConfig | None = None


@dataclass(frozen=True)
class AshaConfig:
    """Ray Tune's ASHA: at every rung (grace_period x reduction_factor^k epochs) a sample continues only if
    its test accuracy is in the top 1 / reduction_factor of its group's samples that reached that rung."""

    grace_period: int = ranged(1, 1, MAX_EPOCHS)  # epochs before any sample may be stopped (< the run's)
    reduction_factor: int = ranged(2, 2, 1000)


@dataclass(frozen=True)
class SearchConfig:
    """Tune hyperparameters per group of trials (Shallue et al. 2018): `samples` points of `space` in every
    group (a grid point of the sweep keys, seed excluded), then the best of each group with `final_seeds`.
    The samples are drawn from `seed`, so a resumed study draws the same ones."""

    space: SearchSpaceConfig = field(default_factory=SearchSpaceConfig)
    samples: int = ranged(8, 1, 10_000)
    # best_test_acc: the highest; steps_to_target: the fewest optimizer steps to `target` test accuracy
    # (Shallue et al.'s measure; samples that never reach it lose to those that do)
    objective: Literal["best_test_acc", "steps_to_target"] = "best_test_acc"
    target: float | None = ranged(None, 0.0, 1.0, low_open=True, high_open=True)  # test accuracy, steps_to_target
    asha: AshaConfig | None = None
    final_seeds: tuple[int, ...] = _in((0, 1, 2), SEED)
    seed: int = _in(0, SEED)


# Measurements after training, one key per registered measure (study/measures/); an absent key skips it.
MeasureConfig = dataclasses.make_dataclass(
    "MeasureConfig",
    [(name, measure.settings | None, field(default=None)) for name, measure in MEASURES.items()],
    frozen=True,
    namespace={"__doc__": "Measurements after training; an absent key skips that measure (`name: true`: defaults)."},
)


@dataclass(frozen=True)
class MlflowConfig:
    """MLflow: one run per trial in `experiment` (the study's name when null) on `tracking_uri` (null:
    MLflow's own default, MLFLOW_TRACKING_URI or ./mlruns)."""

    tracking_uri: str | None = None
    experiment: str | None = None


@dataclass(frozen=True)
class WandbConfig:
    """Weights & Biases: one run per trial in `project`, grouped by the study's name; offline runs are
    files under <storage>/<name>/wandb/ (local storage) to `wandb sync` later."""

    project: str = "lbstudy"
    entity: str | None = None  # a team or user; null: the logged-in user's default
    mode: Literal["online", "offline"] = "online"


@dataclass(frozen=True)
class TrackingConfig:
    """Experiment trackers the driver writes to besides the Parquet results (TensorBoard always, where
    storage is local). A tracker that fails warns once and is dropped: it never stops a trial."""

    mlflow: MlflowConfig | None = None
    wandb: WandbConfig | None = None


@dataclass(frozen=True)
class StudyConfig:
    name: str
    storage: str = "~/lbstudy-results"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    search: SearchConfig | None = None
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples -> lists, as YAML would write them


# ---------------------------------------------------------------------------------------------
# Loading: YAML -> nested dicts -> typed dataclasses, strictly.


def augmentations(sweep: SweepConfig) -> tuple[Augmentation, ...]:
    """The augmentation axis, with mixup_alpha (and its default) expressed in it."""
    if sweep.augmentation is not None:
        return tuple(
            Augmentation(a.name, a.alpha if a.name in ("mixup", "cutmix") else 0.0, a.size if a.name == "cutout" else 0)
            for a in sweep.augmentation
        )
    return tuple(
        Augmentation("mixup", alpha) if alpha > 0 else Augmentation("none")
        for alpha in (sweep.mixup_alpha if sweep.mixup_alpha is not None else DEFAULT_MIXUP_ALPHA)
    )


# A study file is a page of settings: larger input is a mistake (or an attack), refused before it is parsed.
MAX_FILE_BYTES = 1_000_000
MAX_YAML_NODES = 100_000  # values and keys after every alias is expanded (a "billion laughs" file has 10^9)
MAX_LIST = 10_000  # items of any one list


def load_study(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """Read a study file, apply `--set KEY=VALUE` overrides, build and validate the config."""
    path = Path(path)
    try:
        size = path.stat().st_size if path.is_file() else 0
        if size > MAX_FILE_BYTES:
            raise ConfigError(
                f"{path}: {size:,} bytes is not a study file (at most {MAX_FILE_BYTES:,}); pass a YAML study "
                "file such as studies/smoke.yaml"
            )
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the study file ({error.strerror}); check the path") from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path}: is not a text (UTF-8) file; pass a YAML study file such as studies/smoke.yaml"
        ) from None
    return parse_study(text, source=str(path), overrides=overrides)


def parse_study(text: str, *, source: str = "<study>", overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"{source}: {len(text):,} characters is not a study file (at most {MAX_FILE_BYTES:,})")
    try:
        raw = strict_yaml(text)
    except RefusedYAML as error:
        raise ConfigError(f"{source}: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"{source}: malformed YAML{where}: {problem}; fix the syntax there") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: a study file must be a mapping of keys (name:, data:, sweep: ...), not a {type(raw).__name__}"
        )
    file_only = copy.deepcopy(raw)
    for override in overrides:
        apply_override(raw, override)
    try:
        study = build(StudyConfig, raw, "")
    except ConfigError as error:
        raise ConfigError(f"{blame(file_only, overrides, source)}: {error}") from None
    try:
        validate(study, "")
    except ConfigError as error:
        raise ConfigError(f"{blame(file_only, overrides, source)}{error}") from None
    return study


def blame(file_only: dict[str, Any], overrides: list[str] | tuple[str, ...], source: str) -> str:
    """Who to blame for a mistake: the study file, or, when the file alone is valid, the first `--set`
    override that makes it invalid (applied in order, as the command line gives them)."""
    if not overrides:
        return source
    raw = copy.deepcopy(file_only)
    for override in (None, *overrides):
        if override is not None:
            apply_override(raw, override)
        try:
            validate(build(StudyConfig, copy.deepcopy(raw), ""), "")
        except ConfigError:
            return source if override is None else f"--set {override}"
    return f"--set {' '.join(overrides)}"


class RefusedYAML(yaml.YAMLError):
    """YAML that parses but is refused: a key given twice, aliases that expand without end, a number
    too long to read; the message says which, in one line."""


def strict_yaml(text: str) -> Any:
    """yaml.safe_load, except that a key given twice in one mapping raises RefusedYAML, and a
    document that aliases expand past MAX_YAML_NODES values is refused before it is built."""
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if expanded_size(node) > MAX_YAML_NODES:
            raise RefusedYAML(
                f"its aliases (*name) expand to more than {MAX_YAML_NODES:,} values; write the values out, "
                "without aliases"
            )
        try:
            return loader.construct_document(node)
        except ValueError as error:  # Python refuses to read an integer of over 4,300 digits
            raise RefusedYAML(f"a value cannot be read ({shown(str(error), 120)}); write a shorter number") from None
    finally:
        loader.dispose()


def expanded_size(root: yaml.Node) -> int:
    """How many nodes the document has once every alias is expanded, counted over the composed graph
    (an alias is the node it names, shared): linear in the file, however far the aliases would expand."""
    sizes: dict[int, int] = {}
    order: list[yaml.Node] = []
    stack, seen = [root], set()
    while stack:  # children before parents, each shared node once
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(part for pair in node.value for part in pair)
    for node in reversed(order):
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        sizes[id(node)] = min(1 + sum(sizes.get(id(c), 1) for c in children), MAX_YAML_NODES + 1)
    return sizes[id(root)]


class StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error, not last-wins."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise RefusedYAML(f"the key {shown(key)} is given twice (line {line}); keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply `KEY.PATH=VALUE` (VALUE in YAML syntax) to the raw study dict, in place."""
    if len(override) > MAX_FILE_BYTES:
        raise ConfigError(f"--set {shown(override)}: longer than a whole study file may be; a typo?")
    key, sep, value_text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {shown(override)}: expected KEY=VALUE, for example --set schedule.epochs=2")
    try:
        value = strict_yaml(value_text) if value_text.strip() else None
    except RefusedYAML as error:
        raise ConfigError(f"--set {shown(override)}: {error}") from None
    except yaml.YAMLError:
        raise ConfigError(
            f"--set {shown(override)}: the value is not valid YAML; quote strings, write lists as [a, b]"
        ) from None
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {shown(override)}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if isinstance(hint, type):
        return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}.get(
            hint.__name__, hint.__name__
        )
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {len(args)} values"
    return str(hint)


def build(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass `cls` from a raw dict, rejecting unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'the study'}: expected a mapping of keys, got {shown(raw)}")
    if cls is SweepConfig and "also" in raw:
        return build_sweep_with_also(raw, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ConfigError(
                f"{where + ': ' if where else ''}unknown key {shown(key)}; {_suggest(str(key), list(fields))}"
            )
    kwargs = {}
    for name, f in fields.items():
        if name in raw:
            value = raw[name]
            # A sweep key takes a single value or a list; a single value is a list of one.
            if cls is SweepConfig and value is not None and not isinstance(value, list):
                value = [value]
            if cls is SweepConfig and name == "augmentation" and value is not None:
                value = [{"name": v} if isinstance(v, str) else v for v in value]  # `mixup` = {name: mixup}
            kwargs[name] = convert(hints[name], value, f"{where}.{name}" if where else name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where + ': ' if where else ''}the key {name!r} is required")
    return cls(**kwargs)


def build_sweep_with_also(raw: dict[str, Any], where: str) -> SweepConfig:
    """The main grid, and each `also` entry as the main grid with the entry's keys replaced."""
    main = {k: v for k, v in raw.items() if k != "also"}
    entries = raw["also"] if raw["also"] is not None else []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{where}.also: expected a list of mappings of sweep keys, got {shown(raw['also'])}")
    also = []
    for i, entry in enumerate(entries):
        if "also" in entry:
            raise ConfigError(f"{where}.also[{i}]: an extra grid cannot have its own also")
        base = dict(main)
        if {"mixup_alpha", "augmentation"} & set(entry):  # one axis: the entry's spelling replaces the main's
            base.pop("mixup_alpha", None)
            base.pop("augmentation", None)
        also.append(build(SweepConfig, {**base, **entry}, f"{where}.also[{i}]"))
    return dataclasses.replace(build(SweepConfig, main, where), also=tuple(also))


def convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        # `hessian:` alone (or `noise_scale: true`) means the defaults.
        return build(hint, {} if value is None or value is True else value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        if value is False and type(None) in args and any(dataclasses.is_dataclass(x) for x in args):
            return None  # `noise_scale: false` switches a measure off
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(arg, value, where)
            except ConfigError as error:
                errors.append(error)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{where}: expected {_type_name(hint)}, got {shown(value)}")
    if origin is Literal:
        if value in typing.get_args(hint) and type(value) in {type(a) for a in typing.get_args(hint)}:
            return value
        raise ConfigError(f"{where}: expected {_type_name(hint)}, got {shown(value)}")
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {_type_name(hint)}, got {shown(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            if len(value) > MAX_LIST:
                raise ConfigError(f"{where}: a list of {len(value):,} values, more than {MAX_LIST:,}; a typo?")
            return tuple(convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {shown(value)}")
        return tuple(convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if hint is Any:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a single value, got {shown(value)}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{where}: expected {_type_name(hint)}, got {shown(value)}")


# ---------------------------------------------------------------------------------------------
# Validation: what the types cannot say.


# A study's folder under its storage: no separators, no leading dot ('.', '..', hidden folders), no
# whitespace or control characters.
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_NAME_CHARS = 200  # a folder name (and <name>-report.html): 255 bytes at most on common file systems


def validate(study: StudyConfig, source: str = "<study>") -> None:
    """Every value of the study by type and range, phase by phase; raises ConfigError at the first mistake."""
    s = f"{source}: "
    for step in (
        validate_name,
        validate_every_number,
        validate_names,
        validate_sections,
        validate_sweep_lists,
        validate_augmentations,
        validate_size,
        validate_resources,
        validate_batches,
        validate_regimes,
        validate_measure,
        validate_tracking,
    ):
        step(study, s)
    if study.search is not None:
        validate_search(study, s)
    validate_extra_grids(study, s)


def section_value(study: StudyConfig, key: str) -> Any:
    """The study's single value of a sweep key that also has a home in a section (optim.base_lr, ...)."""
    if key == "model":
        return study.model.arch
    for section in (study.optim, study.schedule, study.data, study.model, study.eval):
        if hasattr(section, key):
            return getattr(section, key)
    raise KeyError(f"sweep.{key} has no default: give it a non-null default in SweepConfig")


def key_values(study: StudyConfig, key: str) -> tuple[Any, ...]:
    """A sweep key's values: its list, or the single value of the section key of the same name (the
    augmentation axis with mixup_alpha expressed in it). What the checks and the planner both read."""
    if key == "augmentation":
        return augmentations(study.sweep)
    values = getattr(study.sweep, key)
    return values if values is not None else (section_value(study, key),)


def validate_name(study: StudyConfig, s: str) -> None:
    _check(
        isinstance(study.name, str) and STUDY_NAME.fullmatch(study.name) is not None,
        f"{s}name: {shown(study.name)} must be a folder name of letters, digits, '.', '_' and '-' that starts with a "
        "letter or digit (it becomes <storage>/<name>/)",
    )
    _check(
        len(study.name) <= MAX_NAME_CHARS,
        f"{s}name: {len(study.name)} characters, too long for a folder name: shorten it to at most {MAX_NAME_CHARS}",
    )


def validate_every_number(study: StudyConfig, s: str) -> None:
    """Every number of the study, in every section, list and nested section, against its field's range."""
    validate_ranges(study, s, "")


def validate_ranges(config: Any, s: str, where: str) -> None:
    for f in dataclasses.fields(config):
        declared = f.metadata.get(RANGE)
        allowed = declared if isinstance(declared, Range) else Range()  # elsewhere-checked: finite here
        for path, value in _leaves(getattr(config, f.name), f"{where}.{f.name}" if where else f.name):
            if dataclasses.is_dataclass(value):
                validate_ranges(value, s, path)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                _check(allowed.holds(value), f"{s}{path}: {shown(value)} must be {allowed.text()}")


def _leaves(value: Any, path: str) -> typing.Iterator[tuple[str, Any]]:
    """(key path, value) of each single value in a field: list items one by one, nothing for null."""
    if isinstance(value, tuple):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}[{i}]")
    elif value is not None:
        yield path, value


# More trials than this is a typo (a seed list of thousands, a search of a million samples): planning them
# alone would take minutes.
MAX_TRIALS = 100_000


def planned_trials(study: StudyConfig) -> int:
    """How many trials the study plans at most, counted without planning them (grids' overlaps counted twice)."""
    total = 0
    for grid in all_grids(study.sweep):
        one = dataclasses.replace(study, sweep=grid)
        axes = [f.name for f in dataclasses.fields(grid) if f.name not in ("mixup_alpha", "also")]
        if study.search is not None:
            axes.remove("seed")
        total += math.prod(len(key_values(one, key)) for key in axes)
    return total * (study.search.samples if study.search is not None else 1)


def validate_size(study: StudyConfig, s: str) -> None:
    count = planned_trials(study)
    _check(
        count <= MAX_TRIALS,
        f"{s}sweep: the study plans {count:,} trials, more than {MAX_TRIALS:,}; a typo? "
        "shorten the sweep lists (or search.samples)",
    )


def validate_names(study: StudyConfig, s: str) -> None:
    """Names a registry must hold: datasets, models, decays, lr rules, optimizers."""
    sweep = study.sweep
    _one_of(study.data.dataset, DATASET_NAMES, f"{s}data.dataset")
    _one_of(study.model.arch, MODEL_NAMES, f"{s}model.arch")
    for arch in sweep.model or ():
        _one_of(arch, MODEL_NAMES, f"{s}sweep.model")
    _one_of(study.schedule.decay, DECAYS, f"{s}schedule.decay")
    for rule in sweep.lr_scaling:
        _one_of(rule, LR_SCALING, f"{s}sweep.lr_scaling")
    _one_of(study.optim.optimizer, OPTIMIZER_NAMES, f"{s}optim.optimizer")
    for name in sweep.optimizer or ():
        _one_of(name, OPTIMIZER_NAMES, f"{s}sweep.optimizer")


def validate_sections(study: StudyConfig, s: str) -> None:
    """The ranges of data, model, optim and schedule values, each swept value included."""
    data, schedule = study.data, study.schedule
    for key in ("train_subset", "test_subset"):
        value = getattr(data, key)
        _check(value is None or value > 0, f"{s}data.{key}: must be a positive number of images or null")
    _check(study.model.width > 0, f"{s}model.width: must be > 0")
    _check(study.optim.base_batch_size > 0, f"{s}optim.base_batch_size: must be > 0")
    for lr in key_values(study, "base_lr"):
        _check(lr > 0 and math.isfinite(lr), f"{s}base_lr {lr}: must be a positive number")
    for wd in key_values(study, "weight_decay"):
        _check(wd >= 0, f"{s}weight_decay {wd}: must be >= 0")
    _check(0 <= study.optim.momentum < 1, f"{s}optim.momentum: must be in [0, 1)")
    _check(schedule.epochs >= 1, f"{s}schedule.epochs: {schedule.epochs} must be at least 1")
    _check(
        schedule.epochs <= MAX_EPOCHS,
        f"{s}schedule.epochs: {schedule.epochs} is more than {MAX_EPOCHS:,} epochs; a typo? give the number of epochs",
    )
    _check(0 < schedule.gamma <= 1, f"{s}schedule.gamma: must be in (0, 1]")
    if schedule.decay == "step":
        _check(
            all(0 < m < schedule.epochs for m in schedule.milestones),
            f"{s}schedule.milestones: {list(schedule.milestones)} lie outside the {schedule.epochs}-epoch run; "
            f"use milestones between 1 and {schedule.epochs - 1}, or schedule.decay: constant",
        )
        _check(
            list(schedule.milestones) == sorted(set(schedule.milestones)),
            f"{s}schedule.milestones: {list(schedule.milestones)} must be increasing",
        )
    for warmup in key_values(study, "warmup_epochs"):
        _check(
            0 <= warmup < schedule.epochs,
            f"{s}warmup_epochs {warmup}: must be >= 0 and shorter than the {schedule.epochs}-epoch run",
        )
    _check(study.optim.trust_coefficient > 0, f"{s}optim.trust_coefficient: must be > 0 (You et al. use 0.001)")
    for smoothing in key_values(study, "label_smoothing"):
        _check(0 <= smoothing < 1, f"{s}label_smoothing {smoothing}: must be in [0, 1) (0 = none, 0.1 is usual)")
    _check(study.eval.every_epochs >= 1, f"{s}eval.every_epochs: must be at least 1")
    _check(
        study.eval.train_eval_samples is None or study.eval.train_eval_samples >= 1,
        f"{s}eval.train_eval_samples: must be positive, or null for the whole training set",
    )


def validate_sweep_lists(study: StudyConfig, s: str) -> None:
    """A sweep key given as a list gives at least one value: every key, by the config's own fields (an
    empty list would plan no trial at all)."""
    sweep = study.sweep
    for key in (f.name for f in dataclasses.fields(sweep) if f.name != "also"):
        values = getattr(sweep, key)
        _check(values is None or len(values) > 0, f"{s}sweep.{key}: give at least one value")
    _check(
        sweep.mixup_alpha is None or sweep.augmentation is None,
        f"{s}sweep: give mixup_alpha or augmentation, not both (mixup_alpha [a] is augmentation "
        "[{name: mixup, alpha: a}])",
    )


def validate_augmentations(study: StudyConfig, s: str) -> None:
    sweep = study.sweep
    for alpha in sweep.mixup_alpha or ():
        _check(alpha >= 0 and math.isfinite(alpha), f"{s}sweep.mixup_alpha: {alpha} must be >= 0 (0 = no mixup)")
    for aug in sweep.augmentation or ():
        _one_of(aug.name, AUGMENTATIONS, f"{s}sweep.augmentation")
        _check(
            aug.alpha > 0 and math.isfinite(aug.alpha),
            f"{s}sweep.augmentation: {aug.name} alpha {aug.alpha} must be > 0",
        )
        _check(1 <= aug.size <= 32, f"{s}sweep.augmentation: cutout size {aug.size} must be between 1 and 32 pixels")


def validate_resources(study: StudyConfig, s: str) -> None:
    res = study.resources
    _check(res.workers >= 1, f"{s}resources.workers: must be at least 1")
    _check(res.cpus_per_worker > 0, f"{s}resources.cpus_per_worker: must be > 0")
    _check(
        0 < res.gpus_per_worker <= 1,
        f"{s}resources.gpus_per_worker: {res.gpus_per_worker} must be in (0, 1]: "
        "a worker trains on one GPU; use a fraction to share one",
    )
    _check(res.max_micro_batch >= 1, f"{s}resources.max_micro_batch: must be at least 1")
    _check(
        res.max_concurrent_trials is None or res.max_concurrent_trials >= 1,
        f"{s}resources.max_concurrent_trials: must be at least 1, or null",
    )
    _check(res.max_failures >= 0, f"{s}resources.max_failures: must be >= 0")


def validate_batches(study: StudyConfig, s: str) -> None:
    """Subsets within the dataset, and every batch size positive, splittable over the workers and no
    larger than the training images."""
    data, res = study.data, study.resources
    sizes = dataset_sizes(data.dataset)
    train_images = data.train_subset or (sizes[0] if sizes else None)
    if sizes and data.train_subset:
        _check(
            data.train_subset <= sizes[0],
            f"{s}data.train_subset: {data.train_subset} exceeds the {sizes[0]} training images of {data.dataset}",
        )
    if sizes and data.test_subset:
        _check(
            data.test_subset <= sizes[1],
            f"{s}data.test_subset: {data.test_subset} exceeds the {sizes[1]} test images of {data.dataset}",
        )
    for batch in study.sweep.batch_size:
        _check(batch >= 1, f"{s}sweep.batch_size: {batch} must be positive")
        _check(batch <= MAX_BATCH, f"{s}sweep.batch_size: {batch} is more than 2^31 images per step; a typo?")
        try:
            split_global_batch(batch, res.workers, res.max_micro_batch)
        except ValueError:
            raise ConfigError(
                f"{s}sweep.batch_size: {batch} cannot be split over resources.workers={res.workers}; "
                "use a batch size divisible by the number of workers"
            ) from None
        if train_images is not None:
            _check(
                batch <= train_images,
                f"{s}sweep.batch_size: {batch} exceeds the {train_images} training "
                "images; lower it or raise data.train_subset",
            )


def validate_extra_grids(study: StudyConfig, s: str) -> None:
    for i, grid in enumerate(study.sweep.also):
        _check(study.search is None, f"{s}sweep.also: extra grids cannot be combined with search yet; drop one")
        try:  # every check of the main grid, on the extra one (measurements: checked over all grids)
            validate(dataclasses.replace(study, sweep=grid, measure=MeasureConfig()), "")
        except ConfigError as error:
            raise ConfigError(f"{s}sweep.also[{i}]: {str(error).removeprefix(': ')}") from None


def validate_regimes(study: StudyConfig, s: str) -> None:
    """Ghost batches that divide every micro-batch; the epochs and milestones of every batch size under
    every budget (train longer: epochs x batch / base batch) within the limits the plain ones obey."""
    sweep, schedule, res = study.sweep, study.schedule, study.resources
    for ghost in key_values(study, "ghost_batch"):
        if ghost is None:
            continue
        where = f"{s}{'sweep' if sweep.ghost_batch else 'model'}.ghost_batch"
        _check(ghost >= 1, f"{where}: {ghost} must be a positive number of images, or null for plain BatchNorm")
        for arch in key_values(study, "model"):
            _check(
                arch in BATCHNORM_MODELS,
                f"{where}: {ghost} acts on BatchNorm layers and {arch} has none; use null for {arch}",
            )
        for batch in sweep.batch_size:
            try:
                micro = split_global_batch(batch, res.workers, res.max_micro_batch)[0]
            except ValueError:  # an impossible split is said for batch_size itself
                continue
            _check(
                micro % ghost == 0,
                f"{where}: {ghost} does not divide the micro-batch {micro} of batch_size {batch} "
                f"({res.workers} worker(s), resources.max_micro_batch {res.max_micro_batch}); "
                "use a divisor of every micro-batch",
            )
    budgets = key_values(study, "budget")
    where = f"{s}{'sweep' if sweep.budget else 'schedule'}.budget"
    if "steps" in budgets and study.search is not None:
        raise ConfigError(f"{where}: steps (epochs scaled with the batch) cannot be searched yet; use epochs")
    for budget in budgets:
        for batch in sweep.batch_size:
            epochs, milestones = training_regime(
                schedule.epochs, schedule.milestones, budget, batch, study.optim.base_batch_size
            )
            _check(
                epochs <= MAX_EPOCHS,
                f"{where}: {budget} gives batch_size {batch} {epochs:,} epochs, more than {MAX_EPOCHS:,}; "
                "lower schedule.epochs or the batch size",
            )
            if schedule.decay == "step":
                _check(
                    list(milestones) == sorted(set(milestones)) and all(0 < m < epochs for m in milestones),
                    f"{where}: {budget} turns schedule.milestones into {list(milestones)} of a {epochs}-epoch run "
                    f"at batch_size {batch}; space the milestones further apart",
                )
            for warmup in key_values(study, "warmup_epochs"):
                _check(
                    warmup < epochs,
                    f"{where}: {budget} gives batch_size {batch} {epochs} epochs, not more than "
                    f"warmup_epochs {warmup}; shorten the warmup",
                )


def validate_search(study: StudyConfig, s: str) -> None:
    search = study.search
    assert search is not None
    keys = searched_keys(search)
    _check(bool(keys), f"{s}search.space: name at least one key to search ({', '.join(SEARCHABLE)})")
    for key in keys:
        where = f"{s}search.space.{key}"
        dist: DistributionConfig = getattr(search.space, key)
        given = [name for name in ("loguniform", "uniform", "choice") if getattr(dist, name) is not None]
        _check(len(given) == 1, f"{where}: give exactly one of loguniform, uniform, choice")
        if dist.loguniform is not None:
            low, high = dist.loguniform
            _check(0 < low < high, f"{where}.loguniform: needs 0 < low < high")
        if dist.uniform is not None:
            _check(dist.uniform[0] < dist.uniform[1], f"{where}.uniform: needs low < high")
        if dist.choice is not None:
            _check(len(dist.choice) >= 1, f"{where}.choice: give at least one value")
        _check(
            getattr(study.sweep, key, None) is None,
            f"{s}search.space.{key}: it is also swept (sweep.{key}); search it or sweep it, not both",
        )
        validate_draws(study, key, dist, f"{where}.{given[0]}")
    _check(search.samples >= 1, f"{s}search.samples: must be at least 1")
    if search.objective == "steps_to_target":
        _check(
            search.target is not None and 0 < search.target < 1,
            f"{s}search.target: steps_to_target needs a target test accuracy in (0, 1), e.g. 0.9",
        )
    _check(len(search.final_seeds) >= 1, f"{s}search.final_seeds: give at least one seed for the winners")
    if search.asha is not None:
        _check(
            search.asha.grace_period <= study.schedule.epochs,
            f"{s}search.asha.grace_period: {search.asha.grace_period} epochs is longer than the "
            f"{study.schedule.epochs}-epoch run; use at most schedule.epochs",
        )
        _check(search.asha.reduction_factor >= 2, f"{s}search.asha.reduction_factor: must be at least 2")
        _check(
            study.eval.every_epochs == 1,
            f"{s}search.asha: compares test accuracy every epoch; set eval.every_epochs: 1",
        )


SEARCHABLE = [f.name for f in dataclasses.fields(SearchSpaceConfig)]


def validate_draws(study: StudyConfig, key: str, dist: DistributionConfig, where: str) -> None:
    """Every value a distribution can draw is one the key may take: each end of a (log)uniform interval and
    each choice, put in the study as the key's one value, passes every check the study's own values pass
    (its range, and those that depend on other keys: a warmup shorter than the run)."""
    ends = dist.choice if dist.choice is not None else (dist.loguniform or dist.uniform or ())
    for value in ends:
        probe = dataclasses.replace(study, search=None, measure=MeasureConfig())
        if hasattr(study.sweep, key):
            probe = dataclasses.replace(probe, sweep=dataclasses.replace(study.sweep, **{key: (value,)}))
        else:  # a key of its section only (optim.momentum)
            section = next(name for name in ("optim", "schedule") if hasattr(getattr(study, name), key))
            probe = dataclasses.replace(
                probe, **{section: dataclasses.replace(getattr(study, section), **{key: value})}
            )
        try:
            validate(probe, "")
        except ConfigError as error:
            raise ConfigError(
                f"{where}: can draw {value:g}, which {key} may not take ({str(error).removeprefix(': ')}); "
                "keep the distribution inside the key's range"
            ) from None


def validate_measure(study: StudyConfig, s: str) -> None:
    """Each requested measurement's settings, by its own plug-in's checks."""
    for name, measure in MEASURES.items():
        settings = getattr(study.measure, name)
        if settings is not None:
            measure.validate(study, settings, s)


# W&B refuses these in a project name (its own check, said here before Ray starts instead of at a run)
WANDB_PROJECT_FORBIDDEN = set("/\\#?%:")


def validate_tracking(study: StudyConfig, s: str) -> None:
    """Each tracker's names, and its client installed: a missing extra is said before Ray starts."""
    mlflow, wandb = study.tracking.mlflow, study.tracking.wandb
    if mlflow is not None:
        for key in ("tracking_uri", "experiment"):
            value = getattr(mlflow, key)
            _check(value is None or value.strip() != "", f"{s}tracking.mlflow.{key}: empty; give one, or null")
        _check(
            importlib.util.find_spec("mlflow") is not None,
            f"{s}tracking.mlflow: MLflow is not installed; pip install -e '.[mlflow]', or remove tracking.mlflow",
        )
    if wandb is not None:
        project = wandb.project
        _check(
            project.strip() != "" and len(project) <= 128 and not set(project) & WANDB_PROJECT_FORBIDDEN,
            f"{s}tracking.wandb.project: {wandb.project!r} is not a W&B project name; use at most 128 characters "
            "without / \\ # ? % :",
        )
        _check(wandb.entity is None or wandb.entity.strip(), f"{s}tracking.wandb.entity: empty; give one, or null")
        _check(
            importlib.util.find_spec("wandb") is not None,
            f"{s}tracking.wandb: W&B (wandb) is not installed; pip install -e '.[wandb]', or remove tracking.wandb",
        )
