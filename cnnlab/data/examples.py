"""The files the README's examples read: a few digits as PNG files and a small folder of photos."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cnnlab.data.sources import bundled_digits

PHOTO_CLASSES = ("circles", "squares")


def write_digit_files(folder: Path, count: int = 6) -> list[Path]:
    """The last `count` of the bundled 8×8 digits as grayscale PNGs named `digit_<i>_label<y>.png`."""
    images, labels = bundled_digits()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (pixels, label) in enumerate(zip(images[-count:], labels[-count:], strict=True)):
        path = folder / f"digit_{i}_label{label}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def write_photo_folder(root: Path, train_per_class: int = 60, val_per_class: int = 20, seed: int = 0) -> int:
    """An image folder (`train/` and `val/`, one folder per class) of synthetic colour JPEGs at mixed
    sizes: a circle or a square of random colour, size and place on a noisy background. Returns the
    number of files written."""
    rng = np.random.default_rng(seed)
    written = 0
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for label, name in enumerate(PHOTO_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                _photo(rng, square=label == 1).save(folder / f"{i:03d}.jpg", quality=90)
                written += 1
    return written


def _photo(rng: np.random.Generator, square: bool) -> Image.Image:
    """One synthetic photo: a coloured shape over a smooth gradient with sensor-like noise."""
    width, height = int(rng.integers(160, 481)), int(rng.integers(120, 361))
    ramp = np.linspace(0, 1, width)[None, :, None] * rng.uniform(40, 120, size=3)
    background = rng.uniform(60, 160, size=3) + ramp + rng.normal(0, 12, size=(height, width, 3))
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    size = int(rng.uniform(0.3, 0.6) * min(width, height))
    left, top = int(rng.integers(0, width - size)), int(rng.integers(0, height - size))
    box = (left, top, left + size, top + size)
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    draw = ImageDraw.Draw(image)
    (draw.rectangle if square else draw.ellipse)(box, fill=colour)
    return image
