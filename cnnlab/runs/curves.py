"""Line figures drawn with PIL (no plotting library), as PNGs and as TensorBoard images: the report's
grouped runs (each group's validation accuracy per epoch, its mean as a line and its runs' minimum to
maximum as a band) and lr-find's loss against the learning rate."""

import math
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# Distinguishable line colours (Tableau 10's first six), one per group in the legend's order.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75))
WIDTH, HEIGHT, MARGIN = 720, 440, 56


def curves_png(curves: Sequence[tuple[str, list[list[float]]]], metric: str, path: Path) -> None:
    """Write `path`: for each (label, runs' per-epoch values) a mean line and a min–max band over the
    runs, epochs on x and `metric` on y; runs shorter than the longest count where they have values."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image, "RGBA")
    font = ImageFont.load_default(size=13)
    epochs = max(len(run) for _, runs in curves for run in runs)
    values = [v for _, runs in curves for run in runs for v in run]
    low, high = min(values), max(values)
    low, high = (low - 0.05, high + 0.05) if high - low < 1e-9 else (low, high)
    left, top, right, bottom = MARGIN, MARGIN // 2, WIDTH - MARGIN // 2, HEIGHT - MARGIN

    def point(epoch: int, value: float) -> tuple[float, float]:
        x = left + (right - left) * (epoch / max(epochs - 1, 1))
        return x, bottom - (bottom - top) * (value - low) / (high - low)

    draw.rectangle((left, top, right, bottom), outline="black")
    for tick in range(epochs):
        x, _ = point(tick, low)
        draw.text((x, bottom + 4), str(tick + 1), fill="black", font=font, anchor="mt")
    for fraction in (0.0, 0.5, 1.0):
        value = low + fraction * (high - low)
        _, y = point(0, value)
        draw.text((left - 6, y), f"{value:.3f}", fill="black", font=font, anchor="rm")
    draw.text(((left + right) / 2, HEIGHT - 8), "epoch", fill="black", font=font, anchor="mb")
    draw.text((left, 4), metric, fill="black", font=font)
    for index, (label, runs) in enumerate(curves):
        colour = PALETTE[index % len(PALETTE)]
        per_epoch = [[run[e] for run in runs if e < len(run)] for e in range(epochs)]
        per_epoch = [column for column in per_epoch if column]
        band = [point(e, max(c)) for e, c in enumerate(per_epoch)]
        band += [point(e, min(c)) for e, c in reversed(list(enumerate(per_epoch)))]
        if len(band) > 2:
            draw.polygon(band, fill=(*colour, 50))
        mean = [point(e, sum(c) / len(c)) for e, c in enumerate(per_epoch)]
        if len(mean) > 1:
            draw.line(mean, fill=colour, width=3)
        else:  # one epoch: a dot
            draw.ellipse(_dot(mean[0]), fill=colour)
        # The legend in the bottom-right corner, which rising accuracy curves leave empty.
        row = len(curves) - index
        draw.text((right - 8, bottom - 8 - 18 * (row - 1)), label, fill=colour, font=font, anchor="rd")
    image.save(path)


def lr_curve_png(
    lrs: Sequence[float],
    losses: Sequence[float],
    smoothed: Sequence[float],
    suggested: float | None,
    path: Path,
) -> None:
    """Write `path`: each step's loss (grey dots) and the smoothed loss (a line) against the lr on a log
    axis, the `suggested` lr marked by a red vertical line."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image, "RGBA")
    font = ImageFont.load_default(size=13)
    left, top, right, bottom = MARGIN, MARGIN // 2, WIDTH - MARGIN // 2, HEIGHT - MARGIN
    low_x, high_x = math.log10(lrs[0]), math.log10(lrs[-1]) + 1e-9
    # The top is the smoothed curve's: single steps' losses above it are drawn at the frame's edge.
    low_y, high_y = min(*losses, *smoothed), max(smoothed) + 1e-9

    def point(lr: float, loss: float) -> tuple[float, float]:
        x = left + (right - left) * (math.log10(lr) - low_x) / (high_x - low_x)
        fraction = min(max((loss - low_y) / (high_y - low_y), -0.02), 1.02)
        return x, bottom - (bottom - top) * fraction

    draw.rectangle((left, top, right, bottom), outline="black")
    for decade in range(math.ceil(low_x), math.floor(high_x) + 1):
        x, _ = point(10.0**decade, low_y)
        draw.line((x, bottom, x, bottom + 4), fill="black")
        draw.text((x, bottom + 6), f"1e{decade}", fill="black", font=font, anchor="mt")
    for fraction in (0.0, 0.5, 1.0):
        value = low_y + fraction * (high_y - low_y)
        _, y = point(lrs[0], value)
        draw.text((left - 6, y), f"{value:.3f}", fill="black", font=font, anchor="rm")
    draw.text(
        ((left + right) / 2, HEIGHT - 8), "learning rate (log scale)", fill="black", font=font, anchor="mb"
    )
    draw.text((left, 4), "training loss: each step (dots), smoothed (line)", fill="black", font=font)
    for lr, loss in zip(lrs, losses, strict=True):
        draw.ellipse(_dot(point(lr, loss)), fill=(150, 150, 150, 160))
    if len(lrs) > 1:
        draw.line([point(lr, loss) for lr, loss in zip(lrs, smoothed, strict=True)], fill=PALETTE[0], width=3)
    if suggested is not None:
        x = min(max(point(suggested, low_y)[0], left), right)
        draw.line((x, top, x, bottom), fill=PALETTE[3], width=2)
        draw.text((x + 6, top + 6), f"suggested lr {suggested:.3g}", fill=PALETTE[3], font=font)
    image.save(path)


def _dot(center: tuple[float, float]) -> tuple[float, float, float, float]:
    x, y = center
    return x - 3, y - 3, x + 3, y + 3


def add_to_tensorboard(png: Path, logdir: Path, tag: str, step: int) -> None:
    """The PNG `png` as image `tag` in a new event file of `logdir` (a sweep directory: TensorBoard shows
    it as that directory's own run, beside its jobs'). Written with tensorboard's own event writer:
    `cnnlab report` needs no torch."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    with Image.open(png) as image:
        width, height = image.size
    picture = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=png.read_bytes())
    summary = Summary(value=[Summary.Value(tag=tag, image=picture)])
    writer = EventFileWriter(str(logdir))
    writer.add_event(Event(wall_time=time.time(), step=step, summary=summary))
    writer.close()
