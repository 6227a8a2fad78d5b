"""Model registry: VGG9 as in Li et al.'s loss-landscape code (tomgoldstein/loss-landscape), and the deeper
CIFAR networks the seed paper leaves open: ResNet-20/56 (He et al. 2016, option A shortcuts; Li et al.'s
landscape network), PreAct ResNet-18 (the mixup paper's CIFAR-10 model, `preact_resnet18_mixup`, and
kuangliu/pytorch-cifar's, `preact_resnet18`) and WideResNet-16-4 (Zagoruyko &
Komodakis 2016). Every model takes `width` (a channel multiplier; 0.25 for CPU tests) and `num_classes`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from trainables.catalog import MODEL_NAMES, VGG9_HIDDEN, VGG9_PLAN, check_registered, scaled_channels

ModelFactory = Callable[..., nn.Module]
MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    check_registered("model", name, MODEL_NAMES)

    def add(factory: ModelFactory) -> ModelFactory:
        MODELS[name] = factory
        return factory

    return add


def build_model(arch: str, *, width: float = 1.0, num_classes: int = 10, ghost_batch: int | None = None) -> nn.Module:
    """The registered model `arch`; with `ghost_batch`, its BatchNorm layers normalize in ghost batches."""
    if arch not in MODELS:
        raise KeyError(f"unknown model {arch!r}; known: {sorted(MODELS)}")
    model = MODELS[arch](width=width, num_classes=num_classes)
    if ghost_batch is not None:
        use_ghost_batch_norm(model, ghost_batch)
    return model


class _GhostBatchNorm:
    """Ghost batch normalization (Hoffer, Hubara & Soudry 2017, Algorithm 1): in training, the batch is
    cut into ghost batches of `ghost_batch` images, each normalized by its own mean and variance, and
    the running statistics take one momentum update per ghost batch, in order (the paper's
    (1 - m)^k mu + sum_l (1 - m)^(k - l) m mu_l). A batch of at most `ghost_batch` images is plain
    BatchNorm, bit for bit; evaluation uses the running statistics as BatchNorm does. The parameters and
    buffers are BatchNorm's, so checkpoints and every measurement treat the layer as BatchNorm."""

    ghost_batch: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_norm = super().forward  # type: ignore[misc]
        if not self.training or x.shape[0] <= self.ghost_batch:  # type: ignore[attr-defined]
            return batch_norm(x)
        return torch.cat([batch_norm(chunk) for chunk in x.split(self.ghost_batch)])


class GhostBatchNorm1d(_GhostBatchNorm, nn.BatchNorm1d):
    pass


class GhostBatchNorm2d(_GhostBatchNorm, nn.BatchNorm2d):
    pass


GHOST_OF: dict[type[nn.Module], type[nn.Module]] = {nn.BatchNorm1d: GhostBatchNorm1d, nn.BatchNorm2d: GhostBatchNorm2d}


def use_ghost_batch_norm(model: nn.Module, ghost_batch: int) -> None:
    """Replace every BatchNorm1d/2d of `model` (in place) by its ghost-batch version, state included.
    Raises ValueError for a model without one (nothing would act, yet the record would say it did)."""
    if ghost_batch < 1:
        raise ValueError(f"ghost_batch {ghost_batch} must be at least 1")
    if not any(type(m) in GHOST_OF for m in model.modules()):
        raise ValueError(f"ghost_batch {ghost_batch}: {type(model).__name__} has no BatchNorm layer to act on")
    replace_batch_norms(model, ghost_batch)


def replace_batch_norms(model: nn.Module, ghost_batch: int) -> None:
    for name, child in model.named_children():
        kind = GHOST_OF.get(type(child))
        if kind is None:
            replace_batch_norms(child, ghost_batch)
            continue
        assert isinstance(child, nn.modules.batchnorm._BatchNorm)
        tensor = next(iter(child.state_dict().values()))
        ghost = kind(
            child.num_features,
            eps=child.eps,
            momentum=child.momentum,
            affine=child.affine,
            track_running_stats=child.track_running_stats,
            device=tensor.device,
        )
        ghost.load_state_dict(child.state_dict())
        ghost.ghost_batch = ghost_batch
        ghost.train(child.training)
        setattr(model, name, ghost)


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


def kaiming_init(model: nn.Module) -> None:
    """Kaiming-normal (fan_out, as the ResNet papers) convolutions, BN as the identity, zero biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class ShortcutA(nn.Module):
    """He et al.'s option A: the identity, subsampled by the stride, with the new channels zero-padded
    (no parameters, as in the published CIFAR ResNet counts)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra // 2
        return nn.functional.pad(x, (0, 0, 0, 0, half, self.extra - half))


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the shortcut, then ReLU (the CIFAR ResNets of He et al. 2016)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels)
        self.conv2, self.bn2 = conv3x3(out_channels, out_channels), nn.BatchNorm2d(out_channels)
        changes = stride != 1 or in_channels != out_channels
        self.shortcut = ShortcutA(in_channels, out_channels, stride) if changes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    """BN-ReLU-conv twice (He et al.'s pre-activation), a 1x1 convolution shortcut where the shape changes
    (kuangliu/pytorch-cifar's and WideResNet's blocks): an identity shortcut carries the block's input."""

    # facebookresearch/mixup-cifar10's block differs here only: its identity shortcut (an empty Sequential
    # applied to the pre-activated tensor) carries relu(bn1(x)), not x. Same weights, another function.
    identity_carries_preactivation = False

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(in_channels), conv3x3(in_channels, out_channels, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(out_channels), conv3x3(out_channels, out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        if self.shortcut is not None:
            shortcut = self.shortcut(out)
        else:
            shortcut = out if self.identity_carries_preactivation else x
        out = self.conv2(torch.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class MixupPreActBlock(PreActBlock):
    """The mixup paper's pre-activation block (facebookresearch/mixup-cifar10, models/resnet.py)."""

    identity_carries_preactivation = True


class ResNet(nn.Module):
    """A stem convolution, stages of blocks (the first of each stage after the first strides by 2), global
    average pooling and a linear classifier; `head_bn` adds the pre-activation networks' last BN-ReLU."""

    def __init__(
        self,
        block: type[nn.Module],
        stem: int,
        stages: list[tuple[int, int]],
        num_classes: int,
        *,
        stem_bn: bool,
        head_bn: bool,
    ):
        super().__init__()
        self.stem = nn.Sequential(conv3x3(3, stem), *([nn.BatchNorm2d(stem), nn.ReLU()] if stem_bn else []))
        blocks: list[nn.Module] = []
        channels = stem
        for i, (out_channels, count) in enumerate(stages):
            for j in range(count):
                blocks.append(block(channels, out_channels, 2 if i > 0 and j == 0 else 1))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU()) if head_bn else nn.Identity()
        self.classifier = nn.Linear(channels, num_classes)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def cifar_resnet(blocks_per_stage: int, width: float, num_classes: int) -> ResNet:
    c = [scaled_channels(n, width) for n in (16, 32, 64)]
    stages = [(c[0], blocks_per_stage), (c[1], blocks_per_stage), (c[2], blocks_per_stage)]
    return ResNet(BasicBlock, c[0], stages, num_classes, stem_bn=True, head_bn=False)


@register_model("resnet20")
def resnet20(width: float = 1.0, num_classes: int = 10) -> ResNet:
    return cifar_resnet(3, width, num_classes)


@register_model("resnet56")
def resnet56(width: float = 1.0, num_classes: int = 10) -> ResNet:
    return cifar_resnet(9, width, num_classes)


def preact_resnet18_stages(width: float) -> list[tuple[int, int]]:
    return [(scaled_channels(n, width), 2) for n in (64, 128, 256, 512)]  # [2, 2, 2, 2] blocks of 64..512


@register_model("preact_resnet18")
def preact_resnet18(width: float = 1.0, num_classes: int = 10) -> ResNet:
    # kuangliu/pytorch-cifar's PreActResNet18: a bare stem convolution, no last BN (11,171,146 parameters).
    stages = preact_resnet18_stages(width)
    return ResNet(PreActBlock, stages[0][0], stages, num_classes, stem_bn=False, head_bn=False)


@register_model("preact_resnet18_mixup")
def preact_resnet18_mixup(width: float = 1.0, num_classes: int = 10) -> ResNet:
    # facebookresearch/mixup-cifar10's ResNet18, the mixup paper's CIFAR-10 model: the same pre-activation
    # blocks' weights, but BN-ReLU after the stem convolution (11,171,274 parameters) and identity shortcuts
    # that carry the pre-activated input: a different function.
    stages = preact_resnet18_stages(width)
    return ResNet(MixupPreActBlock, stages[0][0], stages, num_classes, stem_bn=True, head_bn=False)


@register_model("wrn16_4")
def wrn16_4(width: float = 1.0, num_classes: int = 10) -> ResNet:
    # WideResNet-16-4: (16 - 4) / 6 = 2 pre-activation blocks per stage of 16k, 32k, 64k channels, k = 4.
    c = [scaled_channels(n, width) for n in (16, 64, 128, 256)]
    return ResNet(PreActBlock, c[0], [(c[1], 2), (c[2], 2), (c[3], 2)], num_classes, stem_bn=False, head_bn=True)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
