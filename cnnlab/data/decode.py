"""Image files → uint8 tensors, decoded in DataLoader worker processes: one decoder serves the in-memory
cache, the streamed batches and `predict`, so their pixels are byte-identical."""

import atexit
import os
import signal
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from cnnlab.errors import DataError, first_line

DECODER_VERSION = 2  # part of the decoded-image cache's key: a change in decoding makes a new cache
DECODE_BATCH = 64  # images per worker task when a folder is decoded into memory


def decode_image(path: Path, image_size: list[int], channels: int) -> torch.Tensor:
    """One image file → uint8 (C, H, W) at `image_size`, read as grayscale or RGB.

    JPEGs are decoded at the smallest of 1/1–1/8 scale that still covers the target (PIL's draft
    mode: about half the time of a full decode, which is all torchvision.io offers); the EXIF
    orientation is applied; 16-bit samples are scaled to 8 bits; transparency is laid on white.
    """
    from PIL import Image, ImageOps

    height, width = image_size
    mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as img:
            side = max(height, width)  # either axis may become the width once the EXIF rotation is applied
            img.draft(mode, (side, side))
            upright = _on_white(_to_8_bit(ImageOps.exif_transpose(img)))
            pixels = np.array(upright.convert(mode).resize((width, height), Image.BILINEAR))
    except Exception as error:  # PIL raises many types (DecompressionBombError, SyntaxError, ...)
        raise DataError(
            f"cannot read image {path}: {first_line(error)}; remove or replace the file"
        ) from None
    return torch.from_numpy(pixels.reshape(height, width, channels)).permute(2, 0, 1)


def _to_8_bit(img):
    """16- and 32-bit integer images scaled to 8 bits (PIL's convert would clip them at 255)."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.clip(np.asarray(img, dtype=np.float64), 0, None)
        # Mode 'I' holds 16-bit PNG and TIFF samples in practice, sometimes 8-bit ones; wider values
        # are scaled by their maximum.
        peak = values.max(initial=0)
        top = 65535.0 if img.mode != "I" or 255 < peak <= 65535 else 255.0 if peak <= 255 else peak
        return Image.fromarray(np.round(values * (255 / top)).astype(np.uint8))
    return img


def _on_white(img):
    """An image with transparency (RGBA, LA, a palette's transparent colour) composited on white, as a
    viewer shows it; PIL's convert would keep whatever colour the transparent pixels happen to hold."""
    from PIL import Image

    if img.mode not in ("RGBA", "LA", "PA", "RGBa") and not (img.mode == "P" and "transparency" in img.info):
        return img
    rgba = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


def worker_count(workers: int | None) -> int:
    """DataLoader worker processes: `workers`, or (None) the cores this process may use, shared among
    the torchrun ranks on this machine."""
    if workers is not None:
        return workers
    try:
        cores = len(os.sched_getaffinity(0))  # taskset, a container's cpuset
    except AttributeError:  # macOS and Windows have no affinity mask
        cores = os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


class FileReader:
    """Decodes batches of one list of files in DataLoader workers that start once and serve every pass
    (`persistent_workers`), each prefetching its next batches while the step runs."""

    def __init__(
        self, files: tuple[tuple[int, Path], ...], image_size: list[int], channels: int, workers: int | None
    ) -> None:
        self.files, self.image_size, self.channels, self.workers = files, image_size, channels, workers
        self._sampler = _Batches()
        self._loader: DataLoader | None = None
        _OPEN_READERS.add(self)

    def close(self) -> None:
        """Stop the workers (the next read starts new ones)."""
        self._loader = None  # its iterator, the only reference to the workers, shuts them down

    def read(self, index: list[list[int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images, labels) CPU batches of the files at each list of `index`, in order; an
        unreadable file is one DataError naming it."""
        if self._loader is None:
            workers = min(worker_count(self.workers), len(self.files))  # no idle workers for a tiny split
            self._loader = DataLoader(
                _ImageFiles(self.files, self.image_size, self.channels),
                batch_sampler=self._sampler,
                num_workers=workers,
                collate_fn=_collate,
                persistent_workers=workers > 0,
                pin_memory=torch.cuda.is_available(),  # a GPU run's copies then overlap the step
                prefetch_factor=4 if workers else None,
                worker_init_fn=_leave_process_group,
                generator=torch.Generator(),  # workers seeded apart from the global RNG (the model init)
            )
        self._sampler.index = index
        for batch in self._loader:
            if isinstance(batch, DataError):
                raise batch
            yield batch


# Persistent workers still running at the interpreter's exit would be terminated by multiprocessing,
# which torch's SIGCHLD handler reports as an error: they are stopped first.
_OPEN_READERS: "weakref.WeakSet[FileReader]" = weakref.WeakSet()
atexit.register(lambda: [reader.close() for reader in list(_OPEN_READERS)])


def decode_all(
    files: list[tuple[int, Path]],
    image_size: list[int],
    channels: int,
    workers: int | None,
    *,
    skip_unreadable: bool,
    progress: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode every file into memory in worker processes: (uint8 images, labels, the reasons of the
    files skipped as unreadable — with `skip_unreadable`; otherwise the first is a DataError).
    `progress(n)` is called as each batch of n files is done."""
    images = torch.empty(len(files), channels, *image_size, dtype=torch.uint8)
    readable = torch.ones(len(files), dtype=torch.bool)
    skipped = []
    index = [
        list(range(first, min(first + DECODE_BATCH, len(files))))
        for first in range(0, len(files), DECODE_BATCH)
    ]
    workers = min(worker_count(workers), len(index))
    loader = DataLoader(
        _ImageFiles(tuple(files), image_size, channels),
        batch_sampler=index,
        num_workers=workers,
        collate_fn=list,  # each item as it came: an image or the error that reading it raised
        worker_init_fn=_leave_process_group,
        generator=torch.Generator(),  # its workers' seeds: the global RNG (the model's init) is not touched
    )
    for chunk, items in zip(index, loader, strict=True):
        for i, item in zip(chunk, items, strict=True):
            if isinstance(item, DataError):
                if not skip_unreadable:
                    raise item
                readable[i] = False
                skipped.append(str(item))
            else:
                images[i] = item[0]
        if progress is not None:
            progress(len(chunk))
    return images[readable], file_labels(files)[readable], skipped


def file_labels(files: list[tuple[int, Path]] | tuple[tuple[int, Path], ...]) -> torch.Tensor:
    """The int64 labels of (label, path) pairs."""
    return torch.tensor([label for label, _ in files], dtype=torch.long)


class _Batches:
    """A batch sampler whose batches the FileReader sets before each pass (the loader, and its
    workers, stay the same)."""

    def __init__(self) -> None:
        self.index: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)


class _ImageFiles(torch.utils.data.Dataset):
    """File i → (uint8 C×H×W image, label), or the DataError that reading it raised."""

    def __init__(self, files: tuple[tuple[int, Path], ...], image_size: list[int], channels: int) -> None:
        self.files, self.image_size, self.channels = files, image_size, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | DataError:
        label, path = self.files[i]
        try:
            return decode_image(path, self.image_size, self.channels), label
        except DataError as error:  # decode_image turns every failure into one naming the file
            # Returned, not raised: DataLoader would re-raise it with the worker's traceback in its message.
            return error


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor] | DataError:
    """Stack a batch's images and labels, or pass on the first error for the main process to raise."""
    for item in items:
        if isinstance(item, DataError):
            return item
    images, labels = zip(*items, strict=True)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def _leave_process_group(worker_id: int) -> None:
    # Ctrl-C reaches the whole foreground process group, and so does SIGTERM from timeout or
    # kill -- -PGID: only the main process should act on them (the training loop's orderly stop:
    # last.pt, exit 130/143), shutting the workers down with their loader. A worker in its own group
    # is not reached; with the default handlers (a forked worker inherits the loop's, which only set
    # a flag) the loader, or the interpreter's exit, can always terminate it. A worker also exits
    # when the main process dies.
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
