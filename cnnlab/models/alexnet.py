"""AlexNet (d2l 8.1) and Network in Network (d2l 8.3): the first deep CNN, and the one that replaced
its dense head with 1×1 convolutions and global average pooling."""

from collections import OrderedDict

import torch
from torch import nn

from cnnlab.models.init import init_weights
from cnnlab.models.registry import register_model


def dense_head(in_features: int, num_classes: int) -> nn.Sequential:
    """AlexNet's classifier, which VGG keeps: Linear(4096) → ReLU → Dropout(0.5), twice, then
    Linear(num_classes)."""
    return nn.Sequential(
        nn.Linear(in_features, 4096),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(4096, 4096),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(4096, num_classes),
    )


class AlexNet(nn.Module):
    """Five convolutions (11×11/4, 5×5, three 3×3) with three 3×3/2 max-pools, then the 4096-4096
    dense head with dropout 0.5; the flatten width follows from `input_size` (6400 at 224×224)."""

    def __init__(self, in_channels: int, num_classes: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 96, kernel_size=11, stride=4, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(96, 256, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(256, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Flatten(),
        )
        with torch.device("meta"):
            flat = self.features(torch.empty(1, in_channels, *input_size)).shape[1]
        self.classifier = dense_head(flat, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def nin_block(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, batch_norm: bool
) -> nn.Sequential:
    """A k×k convolution and two 1×1 convolutions, each followed by ReLU: a per-pixel MLP. With
    `batch_norm`, each convolution is followed by batch normalization before its ReLU (and has no bias)."""
    convs = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=not batch_norm),
        nn.Conv2d(out_channels, out_channels, kernel_size=1, bias=not batch_norm),
        nn.Conv2d(out_channels, out_channels, kernel_size=1, bias=not batch_norm),
    ]
    layers: list[nn.Module] = []
    for conv in convs:
        layers += [conv, nn.BatchNorm2d(out_channels), nn.ReLU()] if batch_norm else [conv, nn.ReLU()]
    return nn.Sequential(*layers)


class NiN(nn.Sequential):
    """AlexNet's convolution widths as NiN blocks, 3×3/2 max-pools between them, dropout, a last
    NiN block with one channel per class and global average pooling: no dense layer at all."""

    def __init__(self, in_channels: int, num_classes: int, batch_norm: bool) -> None:
        super().__init__(
            OrderedDict(
                block1=nin_block(in_channels, 96, kernel_size=11, stride=4, padding=0, batch_norm=batch_norm),
                pool1=nn.MaxPool2d(3, stride=2),
                block2=nin_block(96, 256, kernel_size=5, stride=1, padding=2, batch_norm=batch_norm),
                pool2=nn.MaxPool2d(3, stride=2),
                block3=nin_block(256, 384, kernel_size=3, stride=1, padding=1, batch_norm=batch_norm),
                pool3=nn.MaxPool2d(3, stride=2),
                dropout=nn.Dropout(0.5),
                block4=nin_block(384, num_classes, kernel_size=3, stride=1, padding=1, batch_norm=batch_norm),
                pool=nn.AdaptiveAvgPool2d((1, 1)),
                flatten=nn.Flatten(),
            )
        )


@register_model("alexnet")
def alexnet(
    in_channels: int, num_classes: int, input_size: tuple[int, int], init: str, zero_init_head: bool
) -> nn.Module:
    """The book's AlexNet (one input channel for Fashion-MNIST, ten classes by default)."""
    return init_weights(AlexNet(in_channels, num_classes, input_size), init, zero_init_head)


@register_model("nin")
def nin(
    in_channels: int, num_classes: int, input_size: tuple[int, int], init: str, batch_norm: bool
) -> nn.Module:
    """Network in Network (the book's with `batch_norm` false). Its classifier is a convolution
    followed by ReLU, so it has no zero-initialized head (a zero last layer would pass nothing on)."""
    return init_weights(NiN(in_channels, num_classes, batch_norm), init, zero_init_head=False)
