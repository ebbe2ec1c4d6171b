"""Dataset sources: uint8 images (N, C, H, W) plus labels, decoded once into memory or streamed from files."""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.splits import stratified_split
from cnnlab.errors import ConfigError, DataError, did_you_mean, first_line
from cnnlab.files import atomic_write


@dataclass(frozen=True)
class Split:
    """One split of a dataset, held in memory."""

    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        """Where the images live, so where batches come out."""
        return self.images.device

    @property
    def channels(self) -> int:
        """Channels per image."""
        return self.images.shape[1]

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """The uint8 images at `index`, on the split's device."""
        return self.images[index.to(self.device)]

    def subset(self, index: torch.Tensor) -> "Split":
        """The split of the samples at `index` (in that order)."""
        index = index.to(self.device)
        return Split(self.images[index], self.labels[index])

    def to(self, device: torch.device) -> "Split":
        """This split with images and labels on `device`."""
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class FileSplit:
    """One split of image files, decoded batch by batch as it is read: only the labels live in memory."""

    files: tuple[tuple[int, Path], ...]  # (label, path)
    image_size: list[int]  # [height, width] every image is decoded at
    channels: int
    labels: torch.Tensor  # int64, (N,), on the device batches are sent to
    workers: int | None  # DataLoader worker processes; None: one per available core

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        """Where batches are sent: the labels' device."""
        return self.labels.device

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """The uint8 images at `index`, decoded now, on the split's device."""
        chosen = [self.files[i] for i in index.tolist()]
        return decode_images(chosen, self.image_size, self.channels).images.to(self.device)

    def subset(self, index: torch.Tensor) -> "FileSplit":
        """The split of the files at `index` (in that order)."""
        files = tuple(self.files[i] for i in index.tolist())
        return replace(self, files=files, labels=self.labels[index.to(self.device)])

    def to(self, device: torch.device) -> "FileSplit":
        """This split with its labels on `device`, where its batches will be sent."""
        return replace(self, labels=self.labels.to(device))


AnySplit = Split | FileSplit  # what batches(), len(), take() and .labels serve alike


@dataclass(frozen=True)
class Dataset:
    """The training, validation and test splits and the class names.

    Validation selects (best.pt, early stopping, sweeps); test is measured once, at the end. A source
    may leave `val` unset (load_dataset carves it from train) and `test` unset (a folder without test/).
    """

    train: AnySplit
    val: AnySplit | None
    test: AnySplit | None
    classes: list[str]

    def to(self, device: torch.device) -> "Dataset":
        """The dataset with every split on `device` (a split shared by val and test stays shared)."""
        splits = (self.train, self.val, self.test)
        moved = {id(split): split.to(device) for split in splits if split is not None}
        return Dataset(*(None if split is None else moved[id(split)] for split in splits), self.classes)


def load_digits(test_fraction: float, split_seed: int) -> Dataset:
    """scikit-learn's bundled 8×8 digits (values 0..16, scaled to 0..255), stratified split."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        bunch.target,
        test_size=test_fraction,
        stratify=bunch.target,
        random_state=split_seed,
    )

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(torch.from_numpy(x), torch.from_numpy(y).long())

    return Dataset(split(x_train, y_train), None, split(x_test, y_test), [str(d) for d in range(10)])


def _torchvision_loader(dataset_name: str) -> Callable[..., Dataset]:
    def load(root: str, download: bool) -> Dataset:
        import torchvision

        cls = getattr(torchvision.datasets, dataset_name)
        root_path = Path(root).expanduser()
        if dataset_name in _IDX_FILES:
            _check_idx_files(root_path / dataset_name / "raw", dataset_name)
        try:
            train, test = (cls(root_path, train=t, download=download) for t in (True, False))
        except RuntimeError as error:  # torchvision: "Dataset not found" (or a failed download)
            raise _missing(dataset_name, root_path, download) from error
        except OSError as error:  # URLError and friends: offline or a blocked host
            raise _missing(dataset_name, root_path, download) from error
        return Dataset(_to_split(train), None, _to_split(test), list(train.classes))

    return load


# The MNIST-format sets' files: (images, labels) per split, as torchvision reads them from <root>/<name>/raw.
_IDX_FILES = {
    name: (
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    )
    for name in ("MNIST", "FashionMNIST")
}


def _idx_shape(path: Path, dims: int) -> tuple[int, ...]:
    """The shape an IDX file's header declares, checked against its magic number and its length."""
    redo = "delete it (with download on, torchvision fetches it again) or copy a good one"
    with path.open("rb") as file:
        header = file.read(4 + 4 * dims)
    if len(header) < 4 + 4 * dims or header[:2] != b"\0\0" or header[2] != 0x08 or header[3] != dims:
        raise DataError(f"{path} is not an IDX file of {dims}-d uint8 data (bad header); {redo}")
    shape = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    expected, size = 4 + 4 * dims + int(np.prod(shape)), path.stat().st_size
    if size != expected:
        raise DataError(
            f"{path} is truncated or corrupt: its header declares {'×'.join(map(str, shape))} values "
            f"({expected:,} bytes) but the file has {size:,} bytes; {redo}"
        )
    return shape


def _check_idx_files(raw: Path, dataset_name: str) -> None:
    """One line for a damaged MNIST-format file (torchvision would report it as missing or crash)."""
    for images_name, labels_name in _IDX_FILES[dataset_name]:
        images, labels = raw / images_name, raw / labels_name
        if not (images.is_file() and labels.is_file()):
            continue  # missing: torchvision downloads it or reports it
        count, *_ = _idx_shape(images, 3)
        (label_count,) = _idx_shape(labels, 1)
        if count != label_count:
            raise DataError(
                f"{images} holds {count:,} images but {labels} holds {label_count:,} labels; the files "
                "come from different sets: copy both again"
            )


def _to_split(dataset) -> Split:
    data = torch.as_tensor(np.asarray(dataset.data))
    images = data[:, None] if data.ndim == 3 else data.permute(0, 3, 1, 2)  # gray or HWC colour
    return Split(images.contiguous(), torch.as_tensor(dataset.targets, dtype=torch.long))


def _missing(dataset_name: str, root: Path, download: bool) -> DataError:
    expected = {
        "FashionMNIST": "FashionMNIST/raw/*-idx?-ubyte files",
        "MNIST": "MNIST/raw/*-idx?-ubyte files",
        "CIFAR10": "cifar-10-batches-py/",
    }[dataset_name]
    how = "the download failed (offline?)" if download else "downloading is off"
    return DataError(
        f"{dataset_name} not found in {root} (expected {expected}) and {how}; copy the files there, "
        "set data_dir=<dir with the files>, or use dataset=digits, which needs no network"
    )


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
FOLDER_SPLITS = ("train", "val", "test")  # an image folder's split folders; train/ is required


def load_imagefolder(
    root: str, image_size: list[int], channels: int, cache_dir: str, stream: bool, workers: int | None
) -> Dataset:
    """`root/train/<class>/*`, and `root/val/<class>/*` and `root/test/<class>/*` where present, at
    `image_size`: streamed from the files by `workers` DataLoader processes (`stream`), or decoded
    once into memory and cached.

    The cache file's name hashes the root, size, channels and every file's size and mtime, so any
    change to the images makes a new decode.
    """
    base = Path(root).expanduser()
    if not (base / "train").is_dir():
        raise DataError(
            f"imagefolder expects {base / 'train'}/<class>/<image> folders (and optionally val/ and test/); "
            "set dataset.loader.root to a folder holding train/"
        )
    if channels not in (1, 3):
        raise ConfigError(f"imagefolder reads 1 (grayscale) or 3 (RGB) channels, not {channels}")
    classes = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
    parts = [part for part in FOLDER_SPLITS if (base / part).is_dir()]
    files = {
        part: [
            (label, path)
            for label, name in enumerate(classes)
            for path in sorted((base / part / name).glob("*"))
            if path.suffix.lower() in IMAGE_SUFFIXES
        ]
        for part in parts
    }
    for part, found in files.items():
        if not found:
            raise DataError(f"no images found under {base / part}/<class>/ (classes: {', '.join(classes)})")
    if stream:
        splits = {
            part: FileSplit(tuple(found), list(image_size), channels, file_labels(found), workers)
            for part, found in files.items()
        }
        return Dataset(splits["train"], splits.get("val"), splits.get("test"), classes)
    fingerprint = [str(base.resolve()), list(image_size), channels]
    for part, found in files.items():
        fingerprint += [
            part,
            *((str(path), path.stat().st_size, path.stat().st_mtime_ns) for _, path in found),
        ]
    digest = hashlib.sha256(json.dumps(fingerprint).encode()).hexdigest()[:16]
    cache = Path(cache_dir).expanduser() / f"imagefolder-{digest}.pt"
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)
            splits = {part: Split(*saved[part]) for part in parts}
        except Exception as error:  # truncated, overwritten, or of another cnnlab version
            reason = first_line(error, 120)
            raise DataError(
                f"the decoded-image cache {cache} is unreadable ({reason}); delete it and run again "
                "(it is rebuilt from the images)"
            ) from None
    else:
        decoded = {part: decode_images(found, image_size, channels) for part, found in files.items()}
        saved = {part: (split.images, split.labels) for part, split in decoded.items()}
        try:  # atomic: a concurrent or killed run never sees half a cache
            atomic_write(cache, lambda file: torch.save(saved, file))
        except RuntimeError as error:  # torch's C++ writer: a full disk
            raise DataError(
                f"cannot write the decoded-image cache {cache} ({str(error).strip()[:120]}); free space "
                "there, set dataset.loader.cache_dir=<another disk>, or stream the images "
                "(dataset.loader.stream=true)"
            ) from None
        splits = {part: Split(*saved[part]) for part in parts}
    return Dataset(splits["train"], splits.get("val"), splits.get("test"), classes)


def decode_image(path: Path, image_size: list[int], channels: int) -> torch.Tensor:
    """One image file → uint8 (C, H, W) at `image_size`, read as grayscale or RGB.

    The one decoder of image files: the in-memory cache, the streaming workers and `predict` all use
    it, so their pixels are byte-identical.
    """
    from PIL import Image

    height, width = image_size
    mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as img:
            pixels = np.array(_to_8_bit(img).convert(mode).resize((width, height), Image.BILINEAR))
    except Exception as error:  # PIL raises many types (DecompressionBombError, SyntaxError, ...)
        reason = first_line(error)
        raise DataError(f"cannot read image {path}: {reason}; remove or replace the file") from None
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


def decode_images(files: list[tuple[int, Path]], image_size: list[int], channels: int) -> Split:
    """(label, path) pairs → a Split of uint8 images at `image_size`, read as grayscale or RGB."""
    images = torch.empty(len(files), channels, *image_size, dtype=torch.uint8)
    for i, (_, path) in enumerate(files):
        images[i] = decode_image(path, image_size, channels)
    return Split(images, file_labels(files))


def file_labels(files: list[tuple[int, Path]]) -> torch.Tensor:
    """The int64 labels of (label, path) pairs."""
    return torch.tensor([label for label, _ in files], dtype=torch.long)


SOURCES: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "fashion_mnist": _torchvision_loader("FashionMNIST"),
    "mnist": _torchvision_loader("MNIST"),
    "cifar10": _torchvision_loader("CIFAR10"),
    "imagefolder": load_imagefolder,
}


def load_dataset(name: str, loader_options: dict, val_fraction: float, split_seed: int) -> Dataset:
    """Load dataset `name` with its `loader_options` (the `dataset.loader` config) and give it a
    validation split: the source's own (an image folder's val/), else `val_fraction` of the training
    split carved off, stratified by `split_seed`; `val_fraction=0` validates on the test split."""
    if name not in SOURCES:
        known = sorted(SOURCES)
        raise ConfigError(
            f"unknown dataset {name!r}{did_you_mean(name, known)}; choose one of: {', '.join(known)}"
        )
    data = SOURCES[name](**loader_options)
    for part, split in (("train", data.train), ("val", data.val), ("test", data.test)):
        low, high = (int(split.labels.min()), int(split.labels.max())) if split and len(split) else (0, 0)
        if not 0 <= low <= high < len(data.classes):
            raise DataError(
                f"dataset {name}: the {part} split has labels {low}..{high} but {len(data.classes)} classes "
                f"(0..{len(data.classes) - 1}); its label files are corrupt"
            )
    if data.val is not None:
        return data
    if val_fraction == 0:
        if data.test is None:
            raise DataError(
                f"dataset {name} has no test split to validate on with dataset.val_fraction=0; "
                "set dataset.val_fraction=0.1 to carve a validation split from train"
            )
        return replace(data, val=data.test)
    kept, held = stratified_split(data.train.labels.cpu(), val_fraction, split_seed)
    if len(held) == 0 or len(kept) == 0:
        raise DataError(
            f"dataset.val_fraction={val_fraction:g} of {len(data.train)} training images leaves "
            f"{len(kept)} to train on and {len(held)} to validate on; choose a fraction that leaves both"
        )
    return replace(data, train=data.train.subset(kept), val=data.train.subset(held))
