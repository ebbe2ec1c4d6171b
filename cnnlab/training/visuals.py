"""Seeing inside a network: kernels, feature maps, confusion matrix and mistakes, drawn as images;
weight and gradient histograms, precision-recall curves and an embedding of penultimate features.

Pure functions of a model and data; `write_visuals` sends them to a TensorBoard writer. Everything is
drawn with PIL (no matplotlib, and no torchvision: importing it would add a second to every
`cnnlab train`) and returned as CHW uint8 tensors, the layout TensorBoard's `add_image` takes.
"""

import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from google.protobuf import text_format
from PIL import Image, ImageDraw, ImageFont
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
from torch import nn

from cnnlab.data.augment import Augment
from cnnlab.data.batches import Preprocess, batches
from cnnlab.data.sources import AnySplit, Dataset
from cnnlab.files import atomic_write
from cnnlab.training.device import autocast

# Sizes of what TensorBoard shows per run: enough to read, small enough to draw in milliseconds.
TENSORBOARD_STAGES = 2  # feature maps of the first two convolutional stages
TENSORBOARD_CHANNELS = 16  # channels shown per stage
TENSORBOARD_EXAMPLES = 10  # feature-map rows: the first test image of each of the first 10 classes
MISCLASSIFIED_SHOWN = 24
AUGMENTED_SHOWN = 32  # of the first training batch, as augmented
EMBEDDING = "penultimate"  # the projector's tensor name, and its folder in each step's directory
EMBEDDED_SHOWN = 300  # validation images in the embedding projector
_THUMBNAIL = 32  # side (pixels) of a projector thumbnail: 300 of them make a 576-pixel sprite
_TILE = 56  # smallest side (pixels) an image or feature map is magnified to, so 8×8 inputs are visible
_GAP = 4
_WHITE, _BLACK = (255, 255, 255), (0, 0, 0)
_WRONG, _RIGHT = (200, 30, 30), (20, 130, 50)
_DARK_BLUE = (8, 48, 107)


# ---- what the network computes ------------------------------------------------------------------


@torch.inference_mode()
def logits_of(
    model: nn.Module, split: AnySplit, preprocess: Preprocess, batch_size: int, precision: str
) -> torch.Tensor:
    """The model's float32 logits for the images of `split`, in stored order, on the CPU."""
    model.eval()
    outputs = []
    for images, _ in batches(split, batch_size):
        with autocast(split.device, precision):
            outputs.append(model(preprocess(images)).float().cpu())
    return torch.cat(outputs)


@torch.inference_mode()
def stage_outputs(model: nn.Module, inputs: torch.Tensor) -> list[torch.Tensor]:
    """The feature maps at the end of each convolutional stage for preprocessed `inputs`, in order.

    A stage is the stretch of the network that works at one spatial resolution and holds a Conv2d.
    Its output is the last tensor seen at that resolution entering or leaving any leaf module, so
    activations, pooling inputs, concatenations (Inception) and residual sums are all found without
    knowing the architecture.
    """
    latest: dict[tuple[int, int], torch.Tensor] = {}
    conv_sizes: list[tuple[int, int]] = []

    def record(module: nn.Module, args: tuple, output) -> None:
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
            latest[tuple(args[0].shape[-2:])] = args[0]
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            size = tuple(output.shape[-2:])
            latest[size] = output
            if isinstance(module, nn.Conv2d) and size not in conv_sizes:
                conv_sizes.append(size)

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(record) for m in leaves]
    training = model.training
    try:
        model.eval()
        model(inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
    return [latest[size].float() for size in conv_sizes]


@torch.inference_mode()
def penultimate_features(
    model: nn.Module, images: torch.Tensor, preprocess: Preprocess, batch_size: int, precision: str
) -> torch.Tensor | None:
    """What the classifier's last layer reads for uint8 `images`: (N, D) float32 on the CPU; None
    for a model without a Linear or Conv2d.

    That layer is the last Linear, or the last Conv2d in an all-convolutional net (NiN); a 4-D input
    is averaged over its positions.
    """
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    layers = linear or [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not layers:
        return None
    captured = []

    def record(module: nn.Module, args: tuple) -> None:
        features = args[0].float()
        captured.append((features.mean(dim=(2, 3)) if features.dim() == 4 else features.flatten(1)).cpu())

    handle = layers[-1].register_forward_pre_hook(record)
    training = model.training
    try:
        model.eval()
        for chunk in images.split(batch_size):
            with autocast(chunk.device, precision):
                model(preprocess(chunk))
    finally:
        handle.remove()
        model.train(training)
    return torch.cat(captured)


def thumbnails(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) images → float (N, 1 or 3, _THUMBNAIL, _THUMBNAIL) in [0, 1] on the CPU,
    square because the projector's sprite is a square grid of equal cells."""
    shown = images[:, :3] if images.shape[1] == 3 else images[:, :1]
    shown = shown.float().cpu() / 255
    size = (_THUMBNAIL, _THUMBNAIL)
    if max(shown.shape[-2:]) <= _THUMBNAIL:  # small inputs (digits) are magnified with crisp pixels
        return F.interpolate(shown, size=size, mode="nearest")
    return F.interpolate(shown, size=size, mode="bilinear", antialias=True).clamp(0, 1)


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts (num_classes, num_classes): row = true class, column = predicted class."""
    pairs = labels.cpu() * num_classes + predicted.cpu()
    return torch.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


def class_accuracies(matrix: torch.Tensor) -> torch.Tensor:
    """Per-class accuracy (recall) from a confusion matrix; NaN for a class with no images."""
    return matrix.diag().double() / matrix.sum(dim=1).double()


# ---- drawing -------------------------------------------------------------------------------------


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _pil(image: torch.Tensor) -> Image.Image:
    """CHW uint8 → RGB PIL image (grey unless it has exactly 3 channels; then the first one is shown)."""
    array = image.detach().cpu().permute(1, 2, 0).numpy()
    return Image.fromarray(array if array.shape[2] == 3 else array[..., 0]).convert("RGB")


def _chw(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


def _magnify(image: Image.Image) -> Image.Image:
    """Nearest-neighbour upscale by a whole factor so the short side reaches _TILE (pixels stay crisp)."""
    factor = max(1, math.ceil(_TILE / min(image.size)))
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def _to_uint8(maps: torch.Tensor) -> torch.Tensor:
    """Scale float maps to 0..255 with one range for all of them (so channels compare)."""
    low, high = maps.min(), maps.max()
    scaled = (maps - low) / (high - low) if high > low else torch.zeros_like(maps)
    return (scaled * 255).round().to(torch.uint8)


def _text_size(text: str, font: ImageFont.FreeTypeFont) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return right - left, bottom - top


def _captioned(
    image: Image.Image, lines: list[tuple[str, tuple[int, int, int]]], font_size: int
) -> Image.Image:
    """`image` with coloured text lines under it, centred."""
    font = _font(font_size)
    line_height = font_size + 3
    width = max([image.width, *(_text_size(text, font)[0] + 4 for text, _ in lines)])
    canvas = Image.new("RGB", (width, image.height + line_height * len(lines) + 2), _WHITE)
    canvas.paste(image, ((width - image.width) // 2, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (text, colour) in enumerate(lines):
        draw.text((width / 2, image.height + 2 + i * line_height), text, fill=colour, font=font, anchor="mt")
    return canvas


def _layout(rows: list[list[Image.Image]], row_labels: list[str] | None, title: str | None) -> Image.Image:
    """Paste rows of images on a white canvas (uniform cells), with optional row labels and a title."""
    font = _font(13)
    cell_w = max(im.width for row in rows for im in row)
    cell_h = max(im.height for row in rows for im in row)
    label_w = (
        max((_text_size(label, font)[0] for label in row_labels), default=0) + _GAP * 2 if row_labels else 0
    )
    title_h = 20 if title else 0
    columns = max(len(row) for row in rows)
    width = label_w + columns * (cell_w + _GAP) + _GAP
    height = title_h + len(rows) * (cell_h + _GAP) + _GAP
    canvas = Image.new(
        "RGB", (max(width, _text_size(title, font)[0] + 2 * _GAP if title else 0), height), _WHITE
    )
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((_GAP, 3), title, fill=_BLACK, font=font)
    for r, row in enumerate(rows):
        y = title_h + _GAP + r * (cell_h + _GAP)
        if row_labels:
            draw.text((label_w - _GAP, y + cell_h / 2), row_labels[r], fill=_BLACK, font=font, anchor="rm")
        for c, image in enumerate(row):
            canvas.paste(image, (label_w + _GAP + c * (cell_w + _GAP), y))
    return canvas


def kernel_grid(model: nn.Module) -> torch.Tensor | None:
    """The first Conv2d's kernels as a CHW uint8 grid (RGB when it reads 3 channels); None without one."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        return None
    weight = conv.weight.detach().float().cpu()  # (out, in, kh, kw)
    if weight.shape[1] != 3:  # one grey tile per (output, input) channel pair
        weight = weight.reshape(-1, 1, *weight.shape[-2:])
    low = weight.amin(dim=(1, 2, 3), keepdim=True)
    high = weight.amax(dim=(1, 2, 3), keepdim=True)
    scaled = ((weight - low) / (high - low).clamp_min(1e-12) * 255).round().to(torch.uint8)
    tiles = [_magnify(_pil(kernel)) for kernel in scaled]  # each kernel on its own grey scale
    out_channels, in_channels, height, width = conv.weight.shape
    columns = min(out_channels, 8) if in_channels in (1, 3) else in_channels
    rows = [tiles[i : i + columns] for i in range(0, len(tiles), columns)]
    title = f"{out_channels} kernels of {in_channels}x{height}x{width}"
    return _chw(_layout(rows, None, title))


def feature_map_grid(
    images: torch.Tensor, maps: torch.Tensor, labels: list[str], max_channels: int, title: str
) -> torch.Tensor:
    """One row per image: the input (uint8 CHW), then up to `max_channels` maps of that image.

    All maps share one grey scale (black = smallest value shown, white = largest), so a dark map is a
    quiet channel, not a rescaled one.
    """
    shown = _to_uint8(maps[:, :max_channels].cpu())
    rows = []
    for image, channels in zip(images, shown, strict=True):
        tiles = _tiles(channels)
        rows.append([_pil(image).resize(tiles[0].size, Image.NEAREST), *tiles])
    return _chw(_layout(rows, labels, title))


def describe(maps: torch.Tensor) -> str:
    """'6 maps of 28x28' for a (N,) C, H, W batch of feature maps."""
    channels, height, width = maps.shape[-3:]
    return f"{channels} maps of {height}x{width}"


def _tiles(maps: torch.Tensor) -> list[Image.Image]:
    """uint8 (C, H, W) maps → one magnified RGB tile per channel."""
    return [_magnify(Image.fromarray(m.numpy()).convert("RGB")) for m in maps]


def activation_figure(
    image: torch.Tensor, title: str, stages: list[torch.Tensor], max_channels: int, columns: int
) -> Image.Image:
    """One input (uint8 CHW) under `title`, then each stage's (C, H, W) maps wrapped at `columns`.

    Each stage has its own grey scale (black = its smallest value, white = its largest; printed in
    the stage's title), shared by its channels so that quiet channels look dark.
    """
    sections = [_layout([[_magnify(_pil(image))]], None, title)]
    for number, maps in enumerate(stages, start=1):
        shown = maps[:max_channels].cpu()
        tiles = _tiles(_to_uint8(shown))
        rows = [tiles[i : i + columns] for i in range(0, len(tiles), columns)]
        first = f", first {len(shown)} shown" if len(shown) < len(maps) else ""
        scale = f"black {float(shown.min()):.3g}, white {float(shown.max()):.3g}"
        heading = f"stage {number}: {describe(maps)}{first}; {scale}"
        sections.append(_layout(rows, None, heading))
    canvas = Image.new("RGB", (max(s.width for s in sections), sum(s.height for s in sections)), _WHITE)
    y = 0
    for section in sections:
        canvas.paste(section, (0, y))
        y += section.height
    return canvas


def confusion_figure(matrix: torch.Tensor, classes: list[str]) -> torch.Tensor:
    """The confusion matrix as a labelled CHW uint8 image: rows true, columns predicted, plus accuracy."""
    k = len(classes)
    cell = max(16, min(34, 640 // k))
    font = _font(max(8, cell * 2 // 5))
    label_font = _font(13)
    counts = matrix.cpu()
    rates = counts.double() / counts.sum(dim=1, keepdim=True).clamp_min(1).double()
    accuracy = class_accuracies(counts)
    name_w = max(_text_size(name, label_font)[0] for name in classes) + 2 * _GAP
    left = name_w + 18  # room for the rotated "true" axis caption
    top = name_w + 22  # rotated column names, then the "predicted" caption above them
    acc_w = 56
    image = Image.new("RGB", (left + k * cell + acc_w + _GAP, top + k * cell + _GAP), _WHITE)
    draw = ImageDraw.Draw(image)
    draw.text((left + k * cell / 2, 3), "predicted", fill=_BLACK, font=label_font, anchor="mt")
    draw.text((left + k * cell + acc_w / 2, top - 4), "acc", fill=_BLACK, font=label_font, anchor="mb")
    true_caption = Image.new("RGB", (_text_size("true", label_font)[0] + 4, 16), _WHITE)
    ImageDraw.Draw(true_caption).text((2, 0), "true", fill=_BLACK, font=label_font)
    image.paste(true_caption.rotate(90, expand=True), (2, top + k * cell // 2 - true_caption.width // 2))
    for i, name in enumerate(classes):
        y = top + i * cell
        draw.text((left - _GAP, y + cell / 2), name, fill=_BLACK, font=label_font, anchor="rm")
        column_name = Image.new("RGB", (name_w, cell), _WHITE)
        ImageDraw.Draw(column_name).text((_GAP, cell / 2), name, fill=_BLACK, font=label_font, anchor="lm")
        image.paste(column_name.rotate(90, expand=True), (left + i * cell, top - name_w))
        for j in range(k):
            rate = float(rates[i, j])
            colour = tuple(round(w + (d - w) * rate) for w, d in zip(_WHITE, _DARK_BLUE, strict=True))
            x = left + j * cell
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=colour, outline=(225, 225, 225))
            if counts[i, j]:
                ink = _WHITE if rate > 0.5 else _BLACK
                draw.text(
                    (x + cell / 2, y + cell / 2), str(int(counts[i, j])), fill=ink, font=font, anchor="mm"
                )
        acc = float(accuracy[i])
        text = "—" if math.isnan(acc) else f"{acc:.3f}"
        draw.text(
            (left + k * cell + acc_w / 2, y + cell / 2), text, fill=_BLACK, font=label_font, anchor="mm"
        )
    return _chw(image)


def misclassified_grid(
    split: AnySplit, predicted: torch.Tensor, classes: list[str], limit: int
) -> torch.Tensor | None:
    """Up to `limit` wrongly classified images of `split`, each captioned with predicted and true class."""
    predicted, labels = predicted.cpu(), split.labels.cpu()
    wrong = (predicted != labels).nonzero().flatten()[:limit]
    if not len(wrong):
        return None
    tiles = [
        _captioned(
            _magnify(_pil(image)),
            [(f"pred {classes[int(predicted[i])]}", _WRONG), (f"true {classes[int(labels[i])]}", _RIGHT)],
            11,
        )
        for i, image in zip(wrong.tolist(), split.take(wrong).cpu(), strict=True)
    ]
    columns = 8
    rows = [tiles[i : i + columns] for i in range(0, len(tiles), columns)]
    return _chw(_layout(rows, None, None))


@torch.inference_mode()
def augmented_grid(
    images: torch.Tensor,
    labels: torch.Tensor,
    preprocess: Preprocess,
    augment: Augment,
    draws: dict[str, torch.Tensor],
    classes: list[str],
) -> torch.Tensor:
    """A training batch as the model is fed it — preprocessed, augmented with `draws`, then mapped back
    to pixels — its first AUGMENTED_SHOWN images captioned with their labels, as a CHW uint8 grid."""
    draws = {key: value.to(images.device) for key, value in draws.items()}
    inputs, _ = augment(preprocess(images), labels, draws)
    shown = preprocess.undo(inputs[:AUGMENTED_SHOWN]).cpu()
    tiles = [
        _captioned(_magnify(_pil(image)), [(classes[int(label)], _BLACK)], 11)
        for image, label in zip(shown, labels[:AUGMENTED_SHOWN].tolist(), strict=True)
    ]
    columns = 8
    rows = [tiles[i : i + columns] for i in range(0, len(tiles), columns)]
    return _chw(_layout(rows, None, "the first training batch, augmented (mixed images: their own label)"))


def save_png(image: torch.Tensor | Image.Image, path: Path) -> None:
    """Write a CHW uint8 tensor or PIL image as a PNG, atomically."""
    picture = _pil(image) if isinstance(image, torch.Tensor) else image
    atomic_write(path, lambda file: picture.save(file, format="PNG"))


# ---- TensorBoard ---------------------------------------------------------------------------------


def first_of_each_class(labels: torch.Tensor, num_classes: int) -> list[int]:
    """The index of the first sample of each class present in `labels` (a fixed, reproducible set)."""
    found = {}
    for index, label in enumerate(labels.cpu().tolist()):
        found.setdefault(label, index)
        if len(found) == num_classes:
            break
    return [found[c] for c in sorted(found)]


def write_histograms(writer, model: nn.Module, step: int, gradient_scale: float) -> None:
    """Histograms of each parameter (`weights/<name>`) and of its latest gradient divided by
    `gradient_scale`, the loss scale it still carries (`gradients/<name>`), at `step`."""
    for name, parameter in model.named_parameters():
        writer.add_histogram(f"weights/{name}", parameter.detach().float().cpu(), step)
        if parameter.grad is not None:
            writer.add_histogram(f"gradients/{name}", parameter.grad.float().cpu() / gradient_scale, step)


def _embedding_steps(log_dir: Path) -> list[Path]:
    """The step folders (00005, …) holding an embedding in `log_dir`, by step."""
    found = [p.parent for p in log_dir.glob(f"*/{EMBEDDING}") if p.parent.name.isdigit()]
    return sorted(found, key=lambda folder: int(folder.name))


def write_embedding(
    writer, features: torch.Tensor, names: list[str], label_img: torch.Tensor, step: int
) -> None:
    """The projector's `penultimate` embedding at `step` (in `<step>/penultimate/` of the run directory).

    The projector's config is rewritten to list every step's embedding found there: a resumed run's
    writer knows only its own. Steps past `step` were purged from the events by the resume, so their
    embeddings go too.
    """
    log_dir = Path(writer.get_logdir())
    for folder in _embedding_steps(log_dir):
        if int(folder.name) >= step:  # the step is redone: torch would warn that its folder exists
            shutil.rmtree(folder)
    writer.add_embedding(features, names, label_img, global_step=step, tag=EMBEDDING)
    config = ProjectorConfig()
    for folder in _embedding_steps(log_dir):
        relative = f"{folder.name}/{EMBEDDING}"
        embedding = config.embeddings.add(
            tensor_name=f"{EMBEDDING}:{folder.name}",
            tensor_path=f"{relative}/tensors.tsv",
            metadata_path=f"{relative}/metadata.tsv",
        )
        embedding.sprite.image_path = f"{relative}/sprite.png"
        embedding.sprite.single_image_dim.extend(label_img.shape[-1:-3:-1])  # width, height
    text = text_format.MessageToString(config)
    atomic_write(log_dir / "projector_config.pbtxt", lambda file: file.write(text.encode()))


def write_visuals(
    writer,
    model: nn.Module,
    data: Dataset,
    preprocess: Preprocess,
    step: int,
    batch_size: int,
    precision: str,
    graph: bool,
    gradient_scale: float = 1.0,
) -> None:
    """Log kernels, feature maps, weight and gradient histograms, and on the validation split the
    confusion matrix, per-class accuracy and precision-recall, mistakes and an embedding, at `step`.

    `graph`: also log the model graph (torch.jit.trace, a few hundred ms: once per run is enough).
    `gradient_scale`: the loss scale the parameters' gradients still carry (float16 without clipping).
    """
    training = model.training
    val, classes = data.val, data.classes  # what the run is judged on while it trains
    write_histograms(writer, model, step, gradient_scale)
    kernels = kernel_grid(model)
    if kernels is not None:
        writer.add_image("kernels/first_conv", kernels, step)

    samples = first_of_each_class(val.labels, len(classes))[:TENSORBOARD_EXAMPLES]
    sample_images = val.take(torch.tensor(samples))
    with torch.inference_mode(), autocast(sample_images.device, precision):
        stages = stage_outputs(model, preprocess(sample_images))
    names = [classes[int(val.labels[i])] for i in samples]
    for number, maps in enumerate(stages[:TENSORBOARD_STAGES], start=1):
        first = f", first {TENSORBOARD_CHANNELS}" if maps.shape[1] > TENSORBOARD_CHANNELS else ""
        title = f"stage {number}: {describe(maps)} (input, then channels{first})"
        grid = feature_map_grid(sample_images.cpu(), maps, names, TENSORBOARD_CHANNELS, title)
        writer.add_image(f"features/stage{number}", grid, step)

    logits = logits_of(model, val, preprocess, batch_size, precision)
    predicted = logits.argmax(dim=1)
    probabilities, labels = logits.softmax(dim=1), val.labels.cpu()
    for index, name in enumerate(classes):
        if (labels == index).any():  # a class the split lacks has no curve
            writer.add_pr_curve(f"pr_curve/{name}", labels == index, probabilities[:, index], step)
    matrix = confusion_matrix(predicted, val.labels, len(classes))
    writer.add_image("eval/confusion_matrix", confusion_figure(matrix, classes), step)
    for name, acc in zip(classes, class_accuracies(matrix).tolist(), strict=True):
        if not math.isnan(acc):
            writer.add_scalar(f"class_acc/{name}", acc, step)
    mistakes = misclassified_grid(val, predicted, classes, MISCLASSIFIED_SHOWN)
    if mistakes is not None:
        writer.add_image("eval/misclassified", mistakes, step)

    # Evenly spread over the split, so that a split stored class by class still shows every class.
    shown = torch.linspace(0, len(val) - 1, min(EMBEDDED_SHOWN, len(val))).long()
    shown_images = val.take(shown)
    features = penultimate_features(model, shown_images, preprocess, batch_size, precision)
    if features is not None:
        shown_names = [classes[label] for label in labels[shown].tolist()]
        write_embedding(writer, features, shown_names, thumbnails(shown_images), step)

    if graph:
        with warnings.catch_warnings():  # add_graph traces with torch.jit, which warns it is deprecated
            warnings.simplefilter("ignore")
            writer.add_graph(model, preprocess(sample_images[:1]))
    model.train(training)
    writer.flush()
