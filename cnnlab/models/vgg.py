"""VGG (d2l 8.2): blocks of 3×3 convolutions and a max-pool, then the 4096-4096 dense head."""

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.models.alexnet import dense_head
from cnnlab.models.init import init_weights
from cnnlab.models.registry import register_model


def vgg_block(in_channels: int, num_convs: int, out_channels: int) -> nn.Sequential:
    """`num_convs` × (3×3 conv, padding 1, + ReLU), then a 2×2 max-pool that halves the resolution."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
        in_channels = out_channels
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """`features`: one VGG block per (num_convs, out_channels) of `arch`, then Flatten; `classifier`:
    Linear(4096) → ReLU → Dropout(0.5) → Linear(4096) → ReLU → Dropout(0.5) → Linear(num_classes).

    The flatten width is computed from `input_size` (the book's LazyLinear finds it at the first
    forward). Each block halves the resolution, so a size below 2**len(arch) cannot be built.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        input_size: tuple[int, int],
        arch: Sequence[tuple[int, int]],
    ) -> None:
        super().__init__()
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for index, (num_convs, out_channels) in enumerate(arch, start=1):
            blocks[f"block{index}"] = vgg_block(channels, num_convs, out_channels)
            channels = out_channels
        blocks["flatten"] = nn.Flatten()
        self.features = nn.Sequential(blocks)
        with torch.device("meta"):
            flat = self.features(torch.empty(1, in_channels, *input_size)).shape[1]
        self.classifier = dense_head(flat, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("vgg")
def vgg(
    in_channels: int,
    num_classes: int,
    input_size: tuple[int, int],
    init: str,
    zero_init_head: bool,
    arch: list[list[int]],
) -> nn.Module:
    """VGG with `arch` = [[num_convs, out_channels], ...] (presets: vgg11, vgg_small)."""
    if not arch or any(len(block) != 2 or min(block) < 1 for block in arch):
        raise ValueError(f"arch must be a non-empty list of [num_convs, out_channels] ≥ 1, got {arch}")
    model = VGG(in_channels, num_classes, input_size, [tuple(block) for block in arch])
    return init_weights(model, init, zero_init_head)
