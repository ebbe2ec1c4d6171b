"""Input-size rules found by construction, not by hand: build the model on the meta device and run it."""

import torch
from torch import nn

from cnnlab.errors import first_line
from cnnlab.models.registry import create_model


def build_error(
    name: str, in_channels: int, num_classes: int, size: tuple[int, int], **options
) -> str | None:
    """Why model `name` cannot be built for and run on a `size` input, or None when it can.

    Runs on the meta device: no memory, no arithmetic.
    """
    try:
        with torch.device("meta"):
            model: nn.Module = create_model(name, in_channels, num_classes, size, **options)
            model.eval()(torch.empty(1, in_channels, *size))
    except (RuntimeError, ValueError) as error:
        return first_line(error)
    return None


def fits(name: str, in_channels: int, num_classes: int, size: tuple[int, int], **options) -> bool:
    """Whether model `name` can be built for and run on a `size` input."""
    return build_error(name, in_channels, num_classes, size, **options) is None


def smallest_input_size(
    name: str, in_channels: int, num_classes: int, limit: int = 1024, **options
) -> int | None:
    """The smallest square side the model accepts (binary search; sizes that fit are upward-closed)."""
    if not fits(name, in_channels, num_classes, (limit, limit), **options):
        return None
    low, high = 1, limit
    while low < high:
        mid = (low + high) // 2
        if fits(name, in_channels, num_classes, (mid, mid), **options):
            high = mid
        else:
            low = mid + 1
    return low
