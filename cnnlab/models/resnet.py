"""ResNet-18 and a ResNeXt of the same layout (d2l 8.6): one stem, four stages, one head; only the
block differs.

ResNeXt's `groups` is the number of groups of the grouped 3×3 convolution (the cardinality), as in
torchvision and the ResNeXt paper. The book's `ResNeXtBlock(num_channels, groups, bot_mul)` passes
`groups=bot_channels // groups` to the convolution, so its `groups` argument is the width of one group:
the book's `ResNeXtBlock(32, 16, 1)` (32 bottleneck channels, groups of 16) is `groups=2` here.
"""

from collections import OrderedDict
from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from cnnlab.models.init import init_weights
from cnnlab.models.registry import register_model

# (blocks, output channels) per stage: the book's ResNet-18.
RESNET18_STAGES = ((2, 64), (2, 128), (2, 256), (2, 512))

# block(in_channels, out_channels, stride) → a module mapping in_channels to out_channels
BlockFactory = Callable[[int, int, int], nn.Module]


class Residual(nn.Module):
    """Conv3×3(stride) → BN → ReLU → Conv3×3 → BN, plus the shortcut, then ReLU.

    The shortcut is the identity, or a strided 1×1 convolution when the stride or the channel count
    changes (the book's `use_1x1conv=True`).
    """

    def __init__(self, in_channels: int, num_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, num_channels, kernel_size=3, padding=1, stride=stride)
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(num_channels)
        self.shortcut = (
            nn.Conv2d(in_channels, num_channels, kernel_size=1, stride=stride)
            if stride != 1 or in_channels != num_channels
            else None
        )

    @property
    def last_norm(self) -> nn.BatchNorm2d:
        """The BatchNorm that ends the residual branch."""
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNeXtBlock(nn.Module):
    """1×1 → BN → ReLU → grouped 3×3(stride) → BN → ReLU → 1×1 → BN, plus the shortcut, then ReLU.

    The bottleneck has round(num_channels × bot_mul) channels split into `groups` groups; the shortcut
    is the identity, or a strided 1×1 convolution + BN when the stride or the channel count changes.
    """

    def __init__(self, in_channels: int, num_channels: int, stride: int, groups: int, bot_mul: float) -> None:
        super().__init__()
        bot_channels = round(num_channels * bot_mul)
        if bot_channels < 1 or bot_channels % groups:
            raise ValueError(
                f"ResNeXt bottleneck of {bot_channels} channels ({num_channels} × bot_mul {bot_mul}) "
                f"cannot be split into groups={groups}; pick groups dividing it or another bot_mul"
            )
        self.conv1 = nn.Conv2d(in_channels, bot_channels, kernel_size=1)
        self.bn1 = nn.BatchNorm2d(bot_channels)
        self.conv2 = nn.Conv2d(
            bot_channels, bot_channels, kernel_size=3, padding=1, stride=stride, groups=groups
        )
        self.bn2 = nn.BatchNorm2d(bot_channels)
        self.conv3 = nn.Conv2d(bot_channels, num_channels, kernel_size=1)
        self.bn3 = nn.BatchNorm2d(num_channels)
        self.shortcut = (
            nn.Sequential(
                nn.Conv2d(in_channels, num_channels, kernel_size=1, stride=stride),
                nn.BatchNorm2d(num_channels),
            )
            if stride != 1 or in_channels != num_channels
            else None
        )

    @property
    def last_norm(self) -> nn.BatchNorm2d:
        """The BatchNorm that ends the residual branch."""
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


def pooled_head(channels: int, num_classes: int) -> nn.Sequential:
    """Global average pool → Flatten → Linear: a head for any input size."""
    return nn.Sequential(
        OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(channels, num_classes))
    )


class ResNet(nn.Sequential):
    """`stem` (7×7/2 conv, BN, ReLU, 3×3/2 max-pool), one `stage<i>` per (blocks, channels) of `stages`,
    `head` (global average pool, Flatten, Linear) — the book's b1, b2…b5 and last.

    The first stage keeps the resolution; each later one starts with a stride-2 block. Global pooling
    makes the head independent of the input size, so any size ≥ 1 works.
    """

    def __init__(
        self, in_channels: int, num_classes: int, stages: tuple[tuple[int, int], ...], block: BlockFactory
    ) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["stem"] = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        channels = 64
        for index, (num_blocks, out_channels) in enumerate(stages, start=1):
            blocks = []
            for position in range(num_blocks):
                stride = 2 if position == 0 and index > 1 else 1
                blocks.append(block(channels, out_channels, stride))
                channels = out_channels
            layers[f"stage{index}"] = nn.Sequential(*blocks)
        layers["head"] = pooled_head(channels, num_classes)
        super().__init__(layers)


def init_residual_net(
    model: nn.Module, init: str, zero_init_head: bool, zero_init_residual: bool
) -> nn.Module:
    """`init_weights`, and with `zero_init_residual` each block's last BatchNorm scaled to zero, so
    every block starts as its shortcut (Goyal et al. 2017; torchvision's zero_init_residual)."""
    init_weights(model, init, zero_init_head)
    if zero_init_residual:
        for block in model.modules():
            if isinstance(block, Residual | ResNeXtBlock):
                nn.init.zeros_(block.last_norm.weight)
    return model


@register_model("resnet18")
def resnet18(
    in_channels: int,
    num_classes: int,
    input_size: tuple[int, int],
    init: str,
    zero_init_head: bool,
    zero_init_residual: bool,
) -> nn.Module:
    """The book's ResNet-18: four stages of two residual blocks (64, 128, 256, 512 channels)."""
    model = ResNet(in_channels, num_classes, RESNET18_STAGES, Residual)
    return init_residual_net(model, init, zero_init_head, zero_init_residual)


@register_model("resnext")
def resnext(
    in_channels: int,
    num_classes: int,
    input_size: tuple[int, int],
    init: str,
    zero_init_head: bool,
    zero_init_residual: bool,
    groups: int,
    bot_mul: float,
) -> nn.Module:
    """ResNet-18's layout of ResNeXt blocks: `groups` groups, bottleneck width channels × `bot_mul`."""
    block = partial(ResNeXtBlock, groups=groups, bot_mul=bot_mul)
    model = ResNet(in_channels, num_classes, RESNET18_STAGES, block)
    return init_residual_net(model, init, zero_init_head, zero_init_residual)
