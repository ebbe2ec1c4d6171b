"""LeNet-5 (d2l 7.6) and its modernized variant (ReLU and max-pooling, the chapter's exercise;
batch normalization after each convolution and hidden linear layer as in d2l 8.5)."""

from collections.abc import Callable

import torch
from torch import nn

from cnnlab.models.init import init_weights
from cnnlab.models.layers import AvgPool2d
from cnnlab.models.registry import register_model
from cnnlab.ops import BatchNorm

# norm(width, dims) → a batch normalization of `width` channels after a conv (dims 2) or linear (1) layer
NormFactory = Callable[[int, int], nn.Module]


def torch_batch_norm(width: int, dims: int) -> nn.Module:
    """PyTorch's BatchNorm2d after a convolution, BatchNorm1d after a linear layer."""
    return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(width)


def scratch_batch_norm(width: int, dims: int) -> nn.Module:
    """The book's from-scratch BatchNorm (cnnlab.ops), after a convolution or a linear layer."""
    return BatchNorm(width, num_dims=4 if dims == 2 else 2)


class LeNet(nn.Module):
    """Two conv/activation/pool stages, then three linear layers.

    The first linear layer's width is computed from `input_size`, so any input the convolutions
    accept works (the book's LazyLinear does this at the first forward; here it is known up front).
    With a `batch_norm` factory, each convolution and hidden linear layer is followed by batch
    normalization before its activation (d2l 8.5), and drops its now redundant bias.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        input_size: tuple[int, int],
        channels: tuple[int, int],
        hidden: tuple[int, int],
        activation: type[nn.Module],
        pool: type[nn.Module],
        batch_norm: NormFactory | None,
    ) -> None:
        super().__init__()
        c1, c2 = channels
        h1, h2 = hidden

        def norm(width: int, dims: int) -> list[nn.Module]:
            return [batch_norm(width, dims)] if batch_norm is not None else []

        bias = batch_norm is None
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=5, padding=2, bias=bias),
            *norm(c1, 2),
            activation(),
            pool(kernel_size=2, stride=2),
            nn.Conv2d(c1, c2, kernel_size=5, bias=bias),
            *norm(c2, 2),
            activation(),
            pool(kernel_size=2, stride=2),
            nn.Flatten(),
        )
        with torch.no_grad():  # a shape probe; eval mode leaves batch-norm statistics untouched
            flat = self.features.eval()(torch.zeros(1, in_channels, *input_size)).shape[1]
        self.features.train()
        self.classifier = nn.Sequential(
            nn.Linear(flat, h1, bias=bias),
            *norm(h1, 1),
            activation(),
            nn.Linear(h1, h2, bias=bias),
            *norm(h2, 1),
            activation(),
            nn.Linear(h2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("lenet")
def lenet(
    in_channels: int, num_classes: int, input_size: tuple[int, int], init: str, zero_init_head: bool
) -> nn.Module:
    """The book's LeNet-5: sigmoid, average pooling, 6/16 channels, 120/84 hidden units."""
    model = LeNet(in_channels, num_classes, input_size, (6, 16), (120, 84), nn.Sigmoid, AvgPool2d, None)
    return init_weights(model, init, zero_init_head)


@register_model("lenet_modern")
def lenet_modern(
    in_channels: int,
    num_classes: int,
    input_size: tuple[int, int],
    init: str,
    zero_init_head: bool,
    channels: tuple[int, int],
    hidden: tuple[int, int],
    batch_norm: bool,
) -> nn.Module:
    """LeNet with ReLU and max-pooling; widths and batch normalization configurable."""
    model = LeNet(
        in_channels,
        num_classes,
        input_size,
        tuple(channels),
        tuple(hidden),
        nn.ReLU,
        nn.MaxPool2d,
        torch_batch_norm if batch_norm else None,
    )
    return init_weights(model, init, zero_init_head)


@register_model("lenet_bn")
def lenet_bn(
    in_channels: int,
    num_classes: int,
    input_size: tuple[int, int],
    init: str,
    zero_init_head: bool,
    scratch: bool,
) -> nn.Module:
    """The book's BN-LeNet (d2l 8.5): LeNet-5 (sigmoid, average pooling) with batch normalization
    before each activation; `scratch` uses the book's from-scratch BatchNorm (cnnlab.ops)."""
    norm = scratch_batch_norm if scratch else torch_batch_norm
    model = LeNet(in_channels, num_classes, input_size, (6, 16), (120, 84), nn.Sigmoid, AvgPool2d, norm)
    return init_weights(model, init, zero_init_head)
