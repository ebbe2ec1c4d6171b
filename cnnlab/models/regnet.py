"""AnyNet and RegNetX-32 (d2l 8.8): a 3×3/2 stem, stages of ResNeXt blocks that each start at stride 2,
and a global-pool head; the design space's choices are the stages' depths and widths, the group
width and the bottleneck ratio."""

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from cnnlab.models.registry import register_model
from cnnlab.models.resnet import ResNeXtBlock, init_residual_net, pooled_head


class AnyNet(nn.Sequential):
    """stem (3×3/2 conv to `stem_channels`, BN, ReLU); one stage per (depth, channels) of `stages`,
    its first ResNeXt block at stride 2 with a 1×1 shortcut; head (global average pool, Flatten,
    Linear). `group_width` is the channels per group of each grouped 3×3 convolution (the book's
    `groups` argument)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        stem_channels: int,
        stages: Sequence[tuple[int, int]],
        group_width: int,
        bot_mul: float,
    ) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["stem"] = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, kernel_size=3, stride=2, padding=1),
            nn.BatchNorm2d(stem_channels),
            nn.ReLU(),
        )
        channels = stem_channels
        for index, (depth, out_channels) in enumerate(stages, start=1):
            bottleneck = round(out_channels * bot_mul)
            if bottleneck < 1 or bottleneck % group_width:
                raise ValueError(
                    f"stage {index}: a bottleneck of {bottleneck} channels ({out_channels} × bot_mul "
                    f"{bot_mul}) is not a multiple of group_width={group_width}; choose a group_width "
                    f"dividing every stage's bottleneck, e.g. model.group_width=16 with widths [32, 80]"
                )
            groups = bottleneck // group_width
            blocks = []
            for position in range(depth):
                stride = 2 if position == 0 else 1
                blocks.append(ResNeXtBlock(channels, out_channels, stride, groups=groups, bot_mul=bot_mul))
                channels = out_channels
            layers[f"stage{index}"] = nn.Sequential(*blocks)
        layers["head"] = pooled_head(channels, num_classes)
        super().__init__(layers)


@register_model("regnetx32")
def regnetx32(
    in_channels: int,
    num_classes: int,
    input_size: tuple[int, int],
    init: str,
    zero_init_head: bool,
    zero_init_residual: bool,
    stem_channels: int,
    depths: list[int],
    widths: list[int],
    group_width: int,
    bot_mul: float,
) -> nn.Module:
    """The book's RegNetX-32 (stem 32, depths (4, 6), widths (32, 80), group width 16, bot_mul 1), or
    any AnyNet of the same design space with other choices."""
    if len(depths) != len(widths) or not depths or min(depths) < 1 or min(widths) < 1 or stem_channels < 1:
        raise ValueError(
            f"regnetx32 needs depths and widths of equal length, all ≥ 1, got depths={list(depths)} and "
            f"widths={list(widths)}; e.g. model.depths=[4,6] model.widths=[32,80]"
        )
    stages = list(zip(depths, widths, strict=True))
    model = AnyNet(in_channels, num_classes, stem_channels, stages, group_width, bot_mul)
    return init_residual_net(model, init, zero_init_head, zero_init_residual)
