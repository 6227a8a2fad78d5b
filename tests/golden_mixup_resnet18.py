"""Makes tests/data/golden-mixup-resnet18.json: the mixup paper's published ResNet18 run on fixed weights.

    python tests/golden_mixup_resnet18.py PATH/TO/mixup-cifar10

PATH is a checkout of github.com/facebookresearch/mixup-cifar10 (the golden file was made at eaff31a). Every
state entry of our `preact_resnet18_mixup` is filled from a seeded generator (BN statistics and affine
parameters included, so no layer is the identity), copied entry by entry into the reference's ResNet18, and
the reference's float64 logits on seeded images, in eval and in train mode, are written down. The test
(test_models.py) fills our network the same way and compares its logits with these, without the reference.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

GOLDEN = Path(__file__).parent / "data" / "golden-mixup-resnet18.json"
WEIGHT_SEED, IMAGE_SEED, IMAGES = 0, 1, 8


def fill_deterministically(model: nn.Module) -> nn.Module:
    """Every parameter and BN buffer of `model`, in state-dict order, drawn from one seeded generator; float64."""
    generator = torch.Generator().manual_seed(WEIGHT_SEED)
    model = model.double()
    state = model.state_dict()
    for name, tensor in state.items():
        if name.endswith("num_batches_tracked"):
            continue
        noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
        if name.endswith("running_var"):
            value = 0.5 + noise.abs()
        elif tensor.dim() == 1:  # BN weight, bias, running mean; the classifier's bias
            value = (1.0 if name.endswith(".weight") else 0.0) + 0.2 * noise
        else:  # He-scaled, so activations keep their size through 18 layers
            value = noise * (2.0 / tensor[0].numel()) ** 0.5
        tensor.copy_(value)
    return model


def images() -> torch.Tensor:
    return torch.randn(IMAGES, 3, 32, 32, generator=torch.Generator().manual_seed(IMAGE_SEED), dtype=torch.float64)


def logits(model: nn.Module) -> dict[str, list[list[float]]]:
    out = {}
    with torch.no_grad():
        for mode in ("eval", "train"):
            model.train(mode == "train")
            out[mode] = model(images()).tolist()
    return out


def main(checkout: Path) -> None:
    from trainables.models import build_model

    spec = importlib.util.spec_from_file_location("reference_resnet", checkout / "models" / "resnet.py")
    reference_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference_module)
    ours = fill_deterministically(build_model("preact_resnet18_mixup"))
    reference = reference_module.ResNet18().double()
    ours_state, reference_state = ours.state_dict(), reference.state_dict()
    shapes = [tuple(t.shape) for t in ours_state.values()]
    assert shapes == [tuple(t.shape) for t in reference_state.values()], "state dicts differ in order or shape"
    reference.load_state_dict(dict(zip(reference_state, ours_state.values())))
    revision = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    record = {
        "reference": "facebookresearch/mixup-cifar10 models/resnet.py ResNet18",
        "reference_revision": revision.stdout.strip(),
        "made_by": "python tests/golden_mixup_resnet18.py PATH/TO/mixup-cifar10",
        "torch": torch.__version__,
        "state_entries": len(shapes),
        "logits": logits(reference),
    }
    GOLDEN.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {GOLDEN}: {len(shapes)} state entries copied, logits of {IMAGES} images in eval and train mode")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(Path(sys.argv[1]))
