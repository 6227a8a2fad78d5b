"""What a study file may name, and the arithmetic of a plan, without importing torch.

Checking a study file (`--dry-run`, every mistake said before Ray starts) must answer in well under two
seconds, and importing torch alone takes about that. So the names the registries hold (models,
optimizers, datasets, augmentations), the dataset sizes, the batch split and the augmentation record
live here, in plain Python. Each registry refuses a name missing from this catalog when it registers it,
and tests/test_boundaries.py checks that every name here is registered: the two cannot drift apart.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

MODEL_NAMES = (
    "vgg9",
    "resnet20",
    "resnet56",
    "preact_resnet18",
    "preact_resnet18_mixup",
    "wrn16_4",
)  # trainables/models.py
BATCHNORM_MODELS = MODEL_NAMES  # the models with BatchNorm layers: those ghost_batch can act on
OPTIMIZER_NAMES = ("sgd", "lars", "lamb")  # trainables/optim.py
DATASET_NAMES = ("cifar10", "cifar100", "imagefolder", "synthetic")  # trainables/data.py
AUGMENTATIONS = ("none", "mixup", "cutmix", "cutout")  # trainables/augment.py
LABEL_MIXING = ("mixup", "cutmix")  # the augmentations that mix labels (mixup's loss)

SYNTHETIC_TRAIN, SYNTHETIC_TEST, SYNTHETIC_CLASSES = 4096, 1024, 10


def check_registered(kind: str, name: str, catalog: tuple[str, ...]) -> None:
    """Called by each registry as it registers `name`."""
    if name not in catalog:
        raise ValueError(f"{kind} {name!r} is not in trainables/catalog.py; add it there too (study files check it)")


@dataclass(frozen=True)
class Augmentation:
    """One value of the augmentation axis (the operations are in trainables/augment.py)."""

    name: str = "none"
    alpha: float = 0.0  # mixup, cutmix: lambda ~ Beta(alpha, alpha)
    size: int = 0  # cutout: side of the square, pixels

    def __post_init__(self) -> None:
        if self.name not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {self.name!r}; known: {', '.join(AUGMENTATIONS)}")

    @property
    def label(self) -> str:
        if self.name in LABEL_MIXING:
            return f"{self.name} a={self.alpha:g}"
        return f"cutout {self.size}" if self.name == "cutout" else "none"


def dataset_sizes(name: str) -> tuple[int, int] | None:
    """(train, test) sizes known without loading, for validating batch sizes up front."""
    return {
        "cifar10": (50_000, 10_000),
        "cifar100": (50_000, 10_000),
        "synthetic": (SYNTHETIC_TRAIN, SYNTHETIC_TEST),
    }.get(name)


def split_global_batch(global_batch_size: int, workers: int, max_micro_batch: int) -> tuple[int, int]:
    """(micro_batch, accumulation_steps) with workers x micro_batch x accumulation = global batch.

    Takes the fewest accumulation steps whose micro-batch fits in `max_micro_batch`.
    Raises ValueError when the global batch does not divide among the workers.
    """
    if global_batch_size < workers or global_batch_size % workers:
        raise ValueError(f"batch size {global_batch_size} does not split evenly over {workers} workers")
    per_worker = global_batch_size // workers
    # The accumulation steps are a divisor of the per-worker batch: O(sqrt(batch)) candidates, not O(batch).
    small = [d for d in range(1, math.isqrt(per_worker) + 1) if per_worker % d == 0]
    divisors = sorted(set(small + [per_worker // d for d in small]))
    accumulation = next(d for d in divisors if per_worker // d <= max_micro_batch)  # d = per_worker always fits
    return per_worker // accumulation, accumulation


def cache_dir() -> Path:
    return Path(os.environ.get("LBSTUDY_CACHE", "~/.cache/lbstudy")).expanduser()


# Conv channel plan of VGG9 (Li et al.); "M" is a 2x2 max-pool. Three pools take 32x32 to 4x4.
VGG9_PLAN: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M")
VGG9_HIDDEN = 256


def scaled_channels(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def _conv(cin: int, cout: int, k: int = 3, bias: bool = False) -> int:
    return 4 * (cin * cout * k * k + (cout if bias else 0))


def _bn(c: int) -> int:
    return 4 * 4 * c + 8  # weight, bias, running mean and variance (float32); num_batches_tracked (int64)


def _linear(cin: int, cout: int) -> int:
    return 4 * (cin * cout + cout)


def state_bytes(arch: str, width: float, num_classes: int) -> int | None:
    """The size of a model's state_dict (float32 weights and BatchNorm buffers), from its shape alone:
    what `--dry-run` says a trajectory snapshot costs, without building the model; None for a model whose
    shape is not written here (tests/test_record_keys.py checks it against every registered model)."""
    if arch == "vgg9":
        total, cin, size = 0, 3, 32
        for item in VGG9_PLAN:
            if item == "M":
                size //= 2
                continue
            c = scaled_channels(int(item), width)
            total, cin = total + _conv(cin, c, bias=True) + _bn(c), c
        hidden = scaled_channels(VGG9_HIDDEN, width)
        return total + _linear(cin * size * size, hidden) + _bn(hidden) + _linear(hidden, num_classes)
    resnets = {  # stem, [(channels, blocks)], pre-activation blocks, stem BN, head BN
        "resnet20": ((16,), [(16, 3), (32, 3), (64, 3)], False, True, False),
        "resnet56": ((16,), [(16, 9), (32, 9), (64, 9)], False, True, False),
        "preact_resnet18": ((64,), [(64, 2), (128, 2), (256, 2), (512, 2)], True, False, False),
        "preact_resnet18_mixup": ((64,), [(64, 2), (128, 2), (256, 2), (512, 2)], True, True, False),
        "wrn16_4": ((16,), [(64, 2), (128, 2), (256, 2)], True, False, True),
    }
    if arch not in resnets:
        return None
    (stem,), stages, preact, stem_bn, head_bn = resnets[arch]
    cin = scaled_channels(stem, width)
    total = _conv(3, cin) + (_bn(cin) if stem_bn else 0)
    for i, (channels, blocks) in enumerate(stages):
        cout = scaled_channels(channels, width)
        for j in range(blocks):
            changes = (i > 0 and j == 0) or cin != cout
            total += _conv(cin, cout) + _conv(cout, cout) + _bn(cout) + _bn(cin if preact else cout)
            total += _conv(cin, cout, k=1) if preact and changes else 0  # option A shortcuts have no weights
            cin = cout
    return total + (_bn(cin) if head_bn else 0) + _linear(cin, num_classes)
