"""Dataset sources: uint8 images (N, C, H, W) plus labels, decoded once into memory or streamed from files."""

import hashlib
import json
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.decode import DECODER_VERSION, FileReader, decode_all, file_labels
from cnnlab.data.splits import stratified_split
from cnnlab.errors import ConfigError, DataError, first_line, unknown
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
    # Its workers, started on the first read and kept for every later one (shared by `to`'s copies).
    reader: FileReader = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.reader is None:
            reader = FileReader(self.files, self.image_size, self.channels, self.workers)
            object.__setattr__(self, "reader", reader)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        """Where batches are sent: the labels' device."""
        return self.labels.device

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """The uint8 images at `index`, decoded now (in this process), on the split's device."""
        chosen = [self.files[i] for i in index.tolist()]
        return decode_all(chosen, self.image_size, self.channels, 0, skip_unreadable=False)[0].to(self.device)

    def subset(self, index: torch.Tensor) -> "FileSplit":
        """The split of the files at `index` (in that order), with workers of its own."""
        files = tuple(self.files[i] for i in index.tolist())
        return replace(self, files=files, labels=self.labels[index.to(self.device)], reader=None)

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
    notes: tuple[str, ...] = ()  # what loading decided or skipped, for the run to tell the user

    def to(self, device: torch.device) -> "Dataset":
        """The dataset with every split on `device` (a split shared by val and test stays shared)."""
        splits = (self.train, self.val, self.test)
        moved = {id(split): split.to(device) for split in splits if split is not None}
        return replace(
            self,
            **{
                k: None if split is None else moved[id(split)]
                for k, split in zip(("train", "val", "test"), splits, strict=True)
            },
        )


def bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits as uint8 images (N, 8, 8) scaled from 0..16 to 0..255, and
    their labels."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return np.round(bunch.images * (255 / 16)).astype(np.uint8), bunch.target


def load_digits(test_fraction: float, split_seed: int) -> Dataset:
    """The bundled digits (`bundled_digits`), stratified split."""
    from sklearn.model_selection import train_test_split

    images, labels = bundled_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        images[:, None],  # (N, 1, 8, 8)
        labels,
        test_size=test_fraction,
        stratify=labels,
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


Progress = Callable[[int], AbstractContextManager[Callable[[int], None]]]  # total → advance(n)


def load_imagefolder(
    root: str,
    image_size: list[int],
    channels: int,
    cache_dir: str,
    stream: bool | str,
    workers: int | None,
    memory_budget: float,
    skip_unreadable: bool,
    progress: Progress | None = None,
) -> Dataset:
    """`root/train/<class>/*`, and `root/val/<class>/*` and `root/test/<class>/*` where present, at
    `image_size`: decoded once into memory and cached (`stream=False`), or streamed from the files by
    `workers` DataLoader processes (True); `"auto"` decodes into memory when the decoded images take at
    most `memory_budget` of the RAM. An unreadable file is an error naming it, or, with
    `skip_unreadable`, left out and counted. `progress(total)` shows a first decode.

    The cache file's name hashes the root, size, channels, decoder and every file's size and mtime, so
    any change to the images makes a new decode.
    """
    base = Path(root).expanduser()
    classes = folder_classes(root)
    if channels not in (1, 3):
        raise ConfigError(f"imagefolder reads 1 (grayscale) or 3 (RGB) channels, not {channels}")
    parts = [part for part in FOLDER_SPLITS if (base / part).is_dir()]
    files = {part: _image_files(base / part, classes) for part in parts}
    total = sum(len(found) for found in files.values())
    image_bytes = channels * image_size[0] * image_size[1]
    # Each epoch gathers its shuffled order of the training images: a second copy of them.
    needed = (total + len(files["train"])) * image_bytes
    budget = memory_budget * _memory_for_data()
    notes = []
    if stream == "auto":
        stream = needed > budget
        where = "streamed from the files" if stream else "decoded into memory"
        notes.append(
            f"imagefolder: {total:,} images at {image_size[0]}×{image_size[1]} need {_size(needed)} decoded "
            f"(training images twice), {'over' if stream else 'within'} dataset.loader.memory_budget="
            f"{memory_budget:g} of this process's memory ({_size(budget)}): {where}"
        )
    if stream:
        splits = {}
        for part, found in files.items():
            if skip_unreadable:
                found, skipped = _openable(found)
                notes += _skipped_note(skipped, base / part)
            splits[part] = FileSplit(tuple(found), list(image_size), channels, file_labels(found), workers)
        return Dataset(splits["train"], splits.get("val"), splits.get("test"), classes, tuple(notes))
    fingerprint = [DECODER_VERSION, str(base.resolve()), classes, list(image_size), channels, skip_unreadable]
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
            splits = {part: Split(*saved[part][:2]) for part in parts}
        except Exception as error:  # truncated, overwritten, or of another cnnlab version
            reason = first_line(error, 120)
            raise DataError(
                f"the decoded-image cache {cache} is unreadable ({reason}); delete it and run again "
                "(it is rebuilt from the images)"
            ) from None
    else:
        tic = time.perf_counter()
        with (progress or (lambda total: nullcontext(lambda n: None)))(total) as advance:
            saved = {
                part: decode_all(
                    found, image_size, channels, workers, skip_unreadable=skip_unreadable, progress=advance
                )
                for part, found in files.items()
            }
        notes.append(
            f"imagefolder: decoded {total:,} images in {time.perf_counter() - tic:.1f} s, cached in {cache} "
            "for the next runs"
        )
        try:  # atomic: a concurrent or killed run never sees half a cache
            atomic_write(cache, lambda file: torch.save(saved, file))
        except RuntimeError as error:  # torch's C++ writer: a full disk
            raise DataError(
                f"cannot write the decoded-image cache {cache} ({str(error).strip()[:120]}); free space "
                "there, set dataset.loader.cache_dir=<another disk>, or stream the images "
                "(dataset.loader.stream=true)"
            ) from None
        splits = {part: Split(*saved[part][:2]) for part in parts}
    for part in parts:
        notes += _skipped_note(saved[part][2], base / part)
        if not len(splits[part]):
            raise DataError(f"no readable images under {base / part}/<class>/: all {len(files[part])} failed")
    return Dataset(splits["train"], splits.get("val"), splits.get("test"), classes, tuple(notes))


def folder_classes(root: str) -> list[str]:
    """The class names of an image folder: the sub-folders of `root`/train, sorted."""
    train = Path(root).expanduser() / "train"
    if not train.is_dir():
        raise DataError(
            f"imagefolder expects {train}/<class>/<image> folders (and optionally val/ and test/); "
            "set dataset.loader.root to a folder holding train/"
        )
    return sorted(p.name for p in train.iterdir() if p.is_dir())


def _image_files(folder: Path, classes: list[str]) -> list[tuple[int, Path]]:
    """The (label, path) pairs of the images in `folder`/<class>/, or one line on why there are none."""
    found = [
        (label, path)
        for label, name in enumerate(classes)
        for path in sorted((folder / name).glob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not found:
        others = sorted({p.suffix.lower() or p.name for p in folder.glob("*/*") if p.is_file()})
        seen = f"; found only {', '.join(others[:5])} files" if others else ""
        raise DataError(
            f"no images found under {folder}/<class>/ (classes: {', '.join(classes) or 'none'}){seen}; "
            f"images end in {', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    return found


def _openable(files: list[tuple[int, Path]]) -> tuple[list[tuple[int, Path]], list[str]]:
    """The files whose headers PIL can read and verify, and the reasons of the others (for streaming,
    where a file is first decoded mid-epoch; one that is broken past its header is still an error)."""
    from PIL import Image

    kept, skipped = [], []
    for label, path in files:
        try:
            with Image.open(path) as img:
                img.verify()
            kept.append((label, path))
        except Exception as error:  # PIL raises many types
            skipped.append(f"cannot read image {path}: {first_line(error)}")
    return kept, skipped


def _skipped_note(skipped: list[str], folder: Path) -> list[str]:
    if not skipped:
        return []
    return [
        f"imagefolder: skipped {len(skipped)} unreadable image(s) under {folder} "
        f"(dataset.loader.skip_unreadable=true); the first: {skipped[0]}"
    ]


def _memory_for_data() -> int:
    """Bytes of memory this process may fill with data: the machine's RAM, or its container's limit
    (cgroup v2 or v1) if lower, shared among the torchrun ranks on this machine (each holds a copy)."""
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limit = min(limit, int(text))
    return limit // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def _size(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:,.0f} {unit}" if unit == "B" else f"{num_bytes:,.1f} {unit}"
        num_bytes /= 1024
    return ""


SOURCES: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "fashion_mnist": _torchvision_loader("FashionMNIST"),
    "mnist": _torchvision_loader("MNIST"),
    "cifar10": _torchvision_loader("CIFAR10"),
    "imagefolder": load_imagefolder,
}


def load_dataset(
    name: str, loader_options: dict, val_fraction: float, split_seed: int, progress: Progress | None = None
) -> Dataset:
    """Load dataset `name` with its `loader_options` (the `dataset.loader` config) and give it a
    validation split: the source's own (an image folder's val/), else `val_fraction` of the training
    split carved off, stratified by `split_seed`; `val_fraction=0` validates on the test split.
    `progress` shows a first decode of image files."""
    if name not in SOURCES:
        known = sorted(SOURCES)
        raise ConfigError(unknown("dataset", name, known))
    data = SOURCES[name](**loader_options, **({"progress": progress} if name == "imagefolder" else {}))
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
