"""Drop-in replacements for torch layers that are slow on some device."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last if `x` is laid out NHWC (and not also plain contiguous), else contiguous."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class _TiledAvgPool(torch.autograd.Function):
    """Average pooling over non-overlapping windows whose backward spreads each output's gradient
    evenly over its window by nearest-neighbour upsampling."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
        ctx.window, ctx.input_size, ctx.memory_format = window, x.shape[-2:], _memory_format(x)
        return F.avg_pool2d(x, window)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        kh, kw = ctx.window
        # The incoming gradient may be laid out differently from the input (a Flatten hands back a
        # contiguous one); upsampling in the input's layout keeps the layers below on their fast path.
        grad = (grad * (1.0 / (kh * kw))).contiguous(memory_format=ctx.memory_format)
        grad = F.interpolate(grad, scale_factor=(kh, kw), mode="nearest")
        height, width = ctx.input_size
        if grad.shape[-2:] != (height, width):  # rows/columns the windows did not cover get none
            grad = F.pad(grad, (0, width - grad.shape[-1], 0, height - grad.shape[-2]))
        return grad.contiguous(memory_format=ctx.memory_format), None


class AvgPool2d(nn.AvgPool2d):
    """nn.AvgPool2d with a faster CPU backward for non-overlapping windows (LeNet's 2×2, stride 2).

    PyTorch's CPU avg_pool2d backward is ~4× slower in bf16 than upsampling the gradient (2.0 vs
    0.49 ms for LeNet's first pooling at batch 128), which made LeNet's bf16 step ~20% slower.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        window = _pair(self.kernel_size)
        tiled = (
            _pair(self.stride or self.kernel_size) == window
            and _pair(self.padding) == (0, 0)
            and not self.ceil_mode
            and self.divisor_override is None
        )
        self._tiled_window = window if tiled else None  # decided once, not on every forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._tiled_window is not None and x.device.type == "cpu" and x.dim() == 4:
            return _TiledAvgPool.apply(x, self._tiled_window)
        return super().forward(x)
