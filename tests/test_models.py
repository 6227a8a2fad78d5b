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
