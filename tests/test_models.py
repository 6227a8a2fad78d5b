import json

import numpy as np
import pytest
import torch
from torch import nn

from trainables.models import MODELS, build_model, count_parameters, vgg9


def test_vgg9_has_li_et_al_parameter_count() -> None:
    assert count_parameters(vgg9(width=1.0, num_classes=10)) == 2_789_706


def test_vgg9_layout_matches_li_et_al() -> None:
    model = vgg9()
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256]
    assert all(c.kernel_size == (3, 3) and c.bias is not None for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 3
    linear = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linear] == [(4096, 256), (256, 10)]
    assert isinstance(model.classifier[1], nn.BatchNorm1d)


def test_init_is_kaiming_fan_in_and_identity_batchnorm() -> None:
    torch.manual_seed(0)
    model = vgg9()
    conv = model.features[3]  # 64 -> 64, fan_in = 576
    assert abs(conv.weight.std().item() - (2 / 576) ** 0.5) < 0.003
    assert torch.all(conv.bias == 0)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("width", [0.25, 0.5])
def test_registry_models_forward(arch: str, width: float) -> None:
    model = build_model(arch, width=width, num_classes=7)
    assert count_parameters(model) < 3_000_000  # size cap keeps the test fast
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 7)


def test_width_scales_channels() -> None:
    model = vgg9(width=0.25)
    assert [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)] == [16, 16, 32, 32, 64, 64, 64]


# The published parameter counts for 10 classes (He et al. 2016 table 6; the mixup paper's PreAct ResNet-18;
# Zagoruyko & Komodakis 2016), in millions as published.
PUBLISHED_MILLIONS = {
    "resnet20": 0.27,
    "resnet56": 0.85,
    "preact_resnet18": 11.17,
    "preact_resnet18_mixup": 11.17,
    "wrn16_4": 2.75,
}


def test_the_mixup_papers_resnet18_is_its_authors_network_not_the_other_preact_one() -> None:
    """facebookresearch/mixup-cifar10's ResNet18: conv3x3(3, 64), BN, ReLU, then PreAct blocks, pooling and
    a linear layer: 11,171,274 parameters. kuangliu/pytorch-cifar's PreActResNet18 has no stem BN: 128
    fewer (11,171,146), and the two compute different functions from the same blocks' weights."""
    mixup, other = build_model("preact_resnet18_mixup"), build_model("preact_resnet18")
    assert count_parameters(mixup) == 11_171_274 and count_parameters(other) == 11_171_146
    assert [type(m) for m in mixup.stem] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert [type(m) for m in other.stem] == [nn.Conv2d]
    assert [type(m).__name__ for m in mixup.children()] == ["Sequential", "Sequential", "Identity", "Linear"]
    torch.manual_seed(0)
    small = build_model("preact_resnet18_mixup", width=0.25).eval()
    bare = build_model("preact_resnet18", width=0.25).eval()
    bare.load_state_dict({k: v for k, v in small.state_dict().items() if not k.startswith("stem.1.")})
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(small(x), bare(x))


def test_the_mixup_papers_resnet18_computes_its_authors_function() -> None:
    """Logits of the published ResNet18 (facebookresearch/mixup-cifar10) on weights filled from a seed, made
    once by tests/golden_mixup_resnet18.py from a checkout of that code: ours on the same weights, float64,
    agrees in eval and in train mode (BN on the batch). Its identity shortcuts carry relu(bn1(x)), not x."""
    from golden_mixup_resnet18 import GOLDEN, fill_deterministically, logits

    golden = json.loads(GOLDEN.read_text())
    ours = fill_deterministically(build_model("preact_resnet18_mixup"))
    assert len(ours.state_dict()) == golden["state_entries"] == 107
    for mode, ours_logits in logits(ours).items():
        expected = torch.tensor(golden["logits"][mode], dtype=torch.float64)
        assert torch.allclose(torch.tensor(ours_logits, dtype=torch.float64), expected, rtol=1e-9, atol=1e-9), mode


@pytest.mark.parametrize("arch", sorted(PUBLISHED_MILLIONS))
def test_deeper_networks_have_their_published_parameter_counts(arch: str) -> None:
    count = count_parameters(build_model(arch, num_classes=10))
    assert round(count / 1e6, 2) == PUBLISHED_MILLIONS[arch], count


def test_resnet_shortcuts_are_option_a_and_preact_ones_convolutions() -> None:
    from trainables.models import BasicBlock, PreActBlock, ShortcutA

    resnet = build_model("resnet20")
    blocks = [m for m in resnet.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 9 and sum(isinstance(b.shortcut, ShortcutA) for b in blocks) == 2  # two stage changes
    x = torch.randn(2, 16, 8, 8)
    padded = ShortcutA(16, 32, 2)(x)
    assert padded.shape == (2, 32, 4, 4) and torch.equal(padded[:, 8:24], x[:, :, ::2, ::2])
    assert padded[:, :8].abs().sum() == 0 and padded[:, 24:].abs().sum() == 0
    preact = [m for m in build_model("preact_resnet18").modules() if isinstance(m, PreActBlock)]
    assert len(preact) == 8 and sum(b.shortcut is not None for b in preact) == 3


@pytest.mark.parametrize("arch", sorted(PUBLISHED_MILLIONS))
def test_every_measurement_runs_on_the_deeper_networks(arch: str) -> None:
    """FLOPs, filter-normalized directions over every conv and linear weight, interpolation, the Hessian's
    top eigenvalue: what the measurement phase does to a trained VGG9, on each new model (width 0.25)."""
    from trainables.flops import train_flops_per_image
    from trainables.landscape import filter_normalized_direction, interpolate
    from trainables.sharpness import top_eigenvalues

    torch.manual_seed(0)
    model = build_model(arch, width=0.25)
    assert train_flops_per_image(model) > 0
    direction = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    for name, weight in model.named_parameters():
        if weight.dim() > 1:  # each filter of the direction has its weight filter's norm
            assert torch.allclose(direction[name].flatten(1).norm(dim=1), weight.flatten(1).norm(dim=1), rtol=1e-4)
        else:
            assert direction[name].abs().sum() == 0
    a = {k: v.clone() for k, v in model.state_dict().items()}
    b = {k: v + 0.01 if v.is_floating_point() else v for k, v in a.items()}
    halfway = interpolate(a, b, 0.5)
    assert torch.allclose(halfway["classifier.weight"], a["classifier.weight"] + 0.005)
    model.eval()
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    params = [p for p in model.parameters() if p.requires_grad]
    eigen = top_eigenvalues(
        lambda batch: nn.functional.cross_entropy(model(batch[0]), batch[1]),
        [(images, labels)],
        params,
        max_iterations=20,
    )
    assert np.isfinite(eigen.values[0]) and eigen.values[0] > 0
