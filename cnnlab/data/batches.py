"""Batches by index — gathered from in-memory uint8 tensors or decoded from files by DataLoader
workers — preprocessed per batch on the training device."""

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from cnnlab.data.sources import AnySplit, FileSplit, Split

STATS_SAMPLE = 2000  # streamed splits: normalization statistics of at most this many training images
_STATS_BATCH = 100


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
    """uint8 (N, C, H, W) → float in [0, 1], normalized → antialiased resize, all on the batch's device.

    Scaling to [0, 1] and normalizing form one affine map per channel, x / 255 → (x / 255 − mean) / std
    = x · scale + shift, applied in a single pass (one kernel on a GPU). It commutes with the resize,
    whose weights sum to 1, so the result is torchvision's ToTensor → Resize → Normalize.
    """

    def __init__(
        self,
        size: tuple[int, int] | None,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ) -> None:
        self.size = size
        if mean is None:
            mean, std = torch.zeros(1), torch.ones(1)
        self.scale = (1 / (255 * std)).view(1, -1, 1, 1)
        self.shift = (-mean / std).view(1, -1, 1, 1)

    def to(self, device: torch.device) -> "Preprocess":
        """Move the normalization constants to `device` (once, not per batch)."""
        self.scale, self.shift = self.scale.to(device), self.shift.to(device)
        return self

    def undo(self, inputs: torch.Tensor) -> torch.Tensor:
        """Preprocessed inputs back to uint8 pixels (at the model's size), to show what the model sees."""
        return ((inputs - self.shift) / self.scale).round().clamp(0, 255).to(torch.uint8)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.addcmul(self.shift, images, self.scale)  # float32, normalized
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", antialias=True, align_corners=False)
        return x


def epoch_order(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled sample order of one epoch: a pure function of (seed, epoch), so resuming is exact."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_samples, generator=generator)


def split_stats(split: AnySplit) -> tuple[torch.Tensor, torch.Tensor]:
    """`channel_stats` of a split: exact in memory; for a streamed split, of a fixed random sample of
    at most STATS_SAMPLE images (a full pass would read every file before training starts)."""
    if isinstance(split, Split):
        return channel_stats(split.images.cpu())
    # A fixed seed, not trainer.seed: evaluate and predict rebuild the same statistics from the run.
    chosen = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:STATS_SAMPLE]
    on_cpu = split.to(torch.device("cpu"))
    sample = [images for images, _ in batches(on_cpu, _STATS_BATCH, chosen.sort().values)]  # folder order
    return channel_stats(torch.cat(sample))


def batches(
    split: AnySplit, batch_size: int, order: torch.Tensor | None = None, start: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (uint8 images, labels) batches on the split's device in `order` (default: as stored), from
    batch `start` on; a FileSplit's are decoded by DataLoader workers, the same batches in the same order."""
    if isinstance(split, FileSplit):
        yield from _streamed(split, batch_size, order, start)
        return
    if order is None:
        images, labels = split.images, split.labels
    else:
        # One gather for the rest of the epoch, then batches are slices (views): a GPU launches no
        # per-batch indexing kernels. It holds a second copy of the split while the epoch runs.
        rest = order[start * batch_size :].to(split.device)
        images, labels, start = split.images[rest], split.labels[rest], 0
    for first in range(start * batch_size, len(labels), batch_size):
        yield images[first : first + batch_size], labels[first : first + batch_size]


def _streamed(
    split: FileSplit, batch_size: int, order: torch.Tensor | None, start: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`batches` of a FileSplit: decoded by its reader's workers, each batch sent to the split's device."""
    order = torch.arange(len(split)) if order is None else order.cpu()
    index = [
        order[first : first + batch_size].tolist()
        for first in range(start * batch_size, len(order), batch_size)
    ]
    for images, labels in split.reader.read(index):
        yield images.to(split.device, non_blocking=True), labels.to(split.device, non_blocking=True)
