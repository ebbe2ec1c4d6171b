"""DenseNet (d2l 8.7): dense blocks, in which each convolution sees the concatenation of all the
block's earlier outputs, joined by transition blocks that halve the channels and the resolution."""

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.models.init import init_weights
from cnnlab.models.registry import register_model


def conv_block(in_channels: int, num_channels: int) -> nn.Sequential:
    """BN → ReLU → 3×3 convolution (DenseNet's pre-activation order)."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels), nn.ReLU(), nn.Conv2d(in_channels, num_channels, kernel_size=3, padding=1)
    )


class DenseBlock(nn.Module):
    """`num_convs` conv blocks of `growth_rate` channels, each fed all earlier outputs concatenated:
    out_channels = in_channels + num_convs × growth_rate."""

    def __init__(self, in_channels: int, num_convs: int, growth_rate: int) -> None:
        super().__init__()
        self.net = nn.ModuleList(
            conv_block(in_channels + i * growth_rate, growth_rate) for i in range(num_convs)
        )
        self.out_channels = in_channels + num_convs * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.net:
            x = torch.cat((x, block(x)), dim=1)
        return x


def transition_block(in_channels: int, num_channels: int) -> nn.Sequential:
    """BN → ReLU → 1×1 convolution to `num_channels` → 2×2/2 average pool."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels),
        nn.ReLU(),
        nn.Conv2d(in_channels, num_channels, kernel_size=1),
        nn.AvgPool2d(kernel_size=2, stride=2),
    )


class DenseNet(nn.Sequential):
    """The stem (7×7/2 conv, BN, ReLU, 3×3/2 max-pool), one dense block per entry of `arch` (its
    number of convolutions) with a channel-halving transition between blocks, then BN, ReLU, global
    average pool and a linear head."""

    def __init__(
        self, in_channels: int, num_classes: int, num_channels: int, growth_rate: int, arch: Sequence[int]
    ) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["stem"] = nn.Sequential(
            nn.Conv2d(in_channels, num_channels, kernel_size=7, stride=2, padding=3),
            nn.BatchNorm2d(num_channels),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        channels = num_channels
        for index, num_convs in enumerate(arch, start=1):
            block = DenseBlock(channels, num_convs, growth_rate)
            layers[f"dense{index}"] = block
            channels = block.out_channels
            if index < len(arch):
                layers[f"transition{index}"] = transition_block(channels, channels // 2)
                channels //= 2
        layers["head"] = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Flatten(),
            nn.Linear(channels, num_classes),
        )
        super().__init__(layers)


@register_model("densenet")
def densenet(
    in_channels: int,
    num_classes: int,
    input_size: tuple[int, int],
    init: str,
    zero_init_head: bool,
    num_channels: int,
    growth_rate: int,
    arch: list[int],
) -> nn.Module:
    """DenseNet with `arch` = convolutions per dense block (the book's (4, 4, 4, 4), growth rate 32)."""
    if not arch or any(int(n) < 1 for n in arch) or growth_rate < 1 or num_channels < 2:
        raise ValueError(
            f"densenet needs arch = a non-empty list of convolutions per block ≥ 1, growth_rate ≥ 1 and "
            f"num_channels ≥ 2, got arch={list(arch)}, growth_rate={growth_rate}, num_channels={num_channels}"
            "; e.g. model.arch=[4,4,4,4] model.growth_rate=32"
        )
    model = DenseNet(in_channels, num_classes, num_channels, growth_rate, [int(n) for n in arch])
    return init_weights(model, init, zero_init_head)
