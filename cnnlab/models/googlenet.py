"""GoogLeNet (d2l 8.4): a stem, then stages of Inception blocks whose four parallel paths are
concatenated along the channels, global average pooling and one linear layer."""

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from cnnlab.models.init import init_weights
from cnnlab.models.registry import register_model


class Inception(nn.Module):
    """Four paths, concatenated: 1×1 (c1); 1×1 → 3×3 (c2); 1×1 → 5×5 (c3); 3×3 max-pool → 1×1 (c4).
    Output channels: c1 + c2[1] + c3[1] + c4, at the input's resolution."""

    def __init__(self, in_channels: int, c1: int, c2: tuple[int, int], c3: tuple[int, int], c4: int) -> None:
        super().__init__()
        self.b1 = nn.Conv2d(in_channels, c1, kernel_size=1)
        self.b2_1 = nn.Conv2d(in_channels, c2[0], kernel_size=1)
        self.b2_2 = nn.Conv2d(c2[0], c2[1], kernel_size=3, padding=1)
        self.b3_1 = nn.Conv2d(in_channels, c3[0], kernel_size=1)
        self.b3_2 = nn.Conv2d(c3[0], c3[1], kernel_size=5, padding=2)
        self.b4_1 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.b4_2 = nn.Conv2d(in_channels, c4, kernel_size=1)
        self.out_channels = c1 + c2[1] + c3[1] + c4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = F.relu(self.b1(x))
        b2 = F.relu(self.b2_2(F.relu(self.b2_1(x))))
        b3 = F.relu(self.b3_2(F.relu(self.b3_1(x))))
        b4 = F.relu(self.b4_2(self.b4_1(x)))
        return torch.cat((b1, b2, b3, b4), dim=1)


# The book's Inception blocks per stage: (c1, (c2 reduce, c2), (c3 reduce, c3), c4).
STAGES = (
    ((64, (96, 128), (16, 32), 32), (128, (128, 192), (32, 96), 64)),
    (
        (192, (96, 208), (16, 48), 64),
        (160, (112, 224), (24, 64), 64),
        (128, (128, 256), (24, 64), 64),
        (112, (144, 288), (32, 64), 64),
        (256, (160, 320), (32, 128), 128),
    ),
    ((256, (160, 320), (32, 128), 128), (384, (192, 384), (48, 128), 128)),
)


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


class GoogLeNet(nn.Sequential):
    """b1 (7×7/2 conv, pool), b2 (1×1 and 3×3 convs, pool), b3–b5 (Inception stages, pooled between,
    global average pool after the last), then a linear head — the book's b1 … b5 and its Linear."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["b1"] = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3), nn.ReLU(), _pool()
        )
        layers["b2"] = nn.Sequential(
            nn.Conv2d(64, 64, kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(64, 192, kernel_size=3, padding=1),
            nn.ReLU(),
            _pool(),
        )
        channels = 192
        for index, stage in enumerate(STAGES, start=3):
            blocks: list[nn.Module] = []
            for c1, c2, c3, c4 in stage:
                blocks.append(Inception(channels, c1, c2, c3, c4))
                channels = blocks[-1].out_channels
            last = index == 2 + len(STAGES)
            blocks += [nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten()] if last else [_pool()]
            layers[f"b{index}"] = nn.Sequential(*blocks)
        layers["fc"] = nn.Linear(channels, num_classes)
        super().__init__(layers)


@register_model("googlenet")
def googlenet(
    in_channels: int, num_classes: int, input_size: tuple[int, int], init: str, zero_init_head: bool
) -> nn.Module:
    """The book's GoogLeNet (nine Inception blocks; it trains at 96×96)."""
    return init_weights(GoogLeNet(in_channels, num_classes), init, zero_init_head)
