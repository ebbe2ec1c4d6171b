"""Batches by index from in-memory uint8 tensors, preprocessed per batch on the training device."""

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from cnnlab.data.sources import Split


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images, scaled to [0, 1] (float64 sums, in chunks)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].to(torch.float64) / 255
        total += block.sum(dim=(0, 2, 3))
        squares += block.pow(2).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean.pow(2)).clamp_min(1e-12).sqrt()
    return mean.float(), std.float()


class Preprocess:
    """uint8 (N, C, H, W) → float in [0, 1] → antialiased resize → normalize, all on the batch's device."""

    def __init__(
        self,
        size: tuple[int, int] | None,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ) -> None:
        self.size = size
        self.mean = None if mean is None else mean.view(1, -1, 1, 1)
        self.std = None if std is None else std.view(1, -1, 1, 1)

    def to(self, device: torch.device) -> "Preprocess":
        """Move the normalization constants to `device` (once, not per batch)."""
        if self.mean is not None:
            self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255)
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", antialias=True, align_corners=False)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x


def epoch_order(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled sample order of one epoch: a pure function of (seed, epoch), so resuming is exact."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_samples, generator=generator)


def batches(
    split: Split, batch_size: int, order: torch.Tensor | None = None, start: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 images, labels) batches in `order` (default: as stored), from batch `start` on."""
    n = len(split) if order is None else len(order)
    if order is not None:
        order = order.to(split.images.device)
    for first in range(start * batch_size, n, batch_size):
        if order is None:
            yield split.images[first : first + batch_size], split.labels[first : first + batch_size]
        else:
            index = order[first : first + batch_size]
            yield split.images[index], split.labels[index]
