"""Model registry. VGG9 follows Li et al.'s loss-landscape code (tomgoldstein/loss-landscape)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

ModelFactory = Callable[..., nn.Module]
MODELS: dict[str, ModelFactory] = {}

# Conv channel plan of VGG9; "M" is a 2x2 max-pool. Three pools take 32x32 to 4x4.
VGG9_PLAN: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M")
VGG9_HIDDEN = 256


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    def add(factory: ModelFactory) -> ModelFactory:
        MODELS[name] = factory
        return factory

    return add


def build_model(arch: str, *, width: float = 1.0, num_classes: int = 10) -> nn.Module:
    if arch not in MODELS:
        raise KeyError(f"unknown model {arch!r}; known: {sorted(MODELS)}")
    return MODELS[arch](width=width, num_classes=num_classes)


def scaled_channels(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class VGG(nn.Module):
    def __init__(self, plan: tuple[int | str, ...], hidden: int, num_classes: int, image_size: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels, size = 3, image_size
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                size //= 2
            else:
                assert isinstance(item, int)
                layers += [
                    nn.Conv2d(in_channels, item, kernel_size=3, padding=1, bias=True),
                    nn.BatchNorm2d(item),
                    nn.ReLU(inplace=True),
                ]
                in_channels = item
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(in_channels * size * size, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # As in Li et al.: Kaiming-normal (fan_in) convolutions, BN starts as the identity.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@register_model("vgg9")
def vgg9(width: float = 1.0, num_classes: int = 10) -> VGG:
    plan = tuple(item if item == "M" else scaled_channels(int(item), width) for item in VGG9_PLAN)
    return VGG(plan, scaled_channels(VGG9_HIDDEN, width), num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
