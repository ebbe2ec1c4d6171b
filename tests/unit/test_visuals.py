"""TensorBoard visuals: the drawing functions behind a run's images, and the cost of a visuals call."""

import math
import re
import time

import torch
import torch.nn.functional as F
from helpers import IMAGE_TAGS
from torch import nn

from cnnlab.data.batches import Preprocess
from cnnlab.data.sources import Split, load_dataset
from cnnlab.models import create_model
from cnnlab.training.visuals import (
    _DARK_BLUE,
    activation_figure,
    class_accuracies,
    confusion_figure,
    confusion_matrix,
    first_of_each_class,
    kernel_grid,
    misclassified_grid,
    penultimate_features,
    stage_outputs,
    thumbnails,
    write_embedding,
    write_histograms,
    write_visuals,
)


def book_sized_lenet_modern() -> nn.Module:
    """lenet_modern with the book's widths and no batch normalization."""
    options = {
        "init": "kaiming",
        "zero_init_head": True,
        "channels": [6, 16],
        "hidden": [120, 84],
        "batch_norm": False,
    }
    return create_model("lenet_modern", 1, 10, (28, 28), **options)


def test_a_visuals_call_takes_well_under_a_second(tmp_path):
    model = book_sized_lenet_modern()
    data = load_dataset("digits", {"test_fraction": 0.2, "split_seed": 0}, 0.1, 0)
    preprocess = Preprocess((28, 28))

    class Discard:  # a writer that keeps what would be written
        def __init__(self) -> None:
            self.images, self.scalars, self.histograms, self.pr_curves, self.embeddings = [], [], [], [], []

        def add_image(self, tag, image, step) -> None:
            self.images.append((tag, image.shape, image.dtype))

        def add_scalar(self, tag, value, step) -> None:
            self.scalars.append(tag)

        def add_histogram(self, tag, values, step) -> None:
            self.histograms.append(tag)

        def add_pr_curve(self, tag, labels, predictions, step) -> None:
            self.pr_curves.append(tag)

        def add_embedding(self, features, metadata, label_img, global_step, tag) -> None:
            self.embeddings.append((tag, features.shape, len(metadata), label_img.shape))

        def get_logdir(self) -> str:
            return str(tmp_path)

        def flush(self) -> None:
            pass

    writer = Discard()
    write_visuals(writer, model, data, preprocess, 1, 1024, "32", graph=False)  # warm-up
    tic = time.perf_counter()
    write_visuals(writer, model, data, preprocess, 2, 1024, "32", graph=False)
    seconds = time.perf_counter() - tic
    assert seconds < 1.0, f"{seconds:.2f} s"  # ~0.1–0.2 s on 2 CPU cores; a 20-epoch run takes ~10 s
    assert {tag for tag, _, _ in writer.images} == IMAGE_TAGS
    assert all(shape[0] == 3 and dtype == torch.uint8 for _, shape, dtype in writer.images)
    assert len(writer.scalars) == 20  # 10 per-class accuracies per call
    parameters = [name for name, _ in model.named_parameters()]
    # no gradients yet: weights only, once per call
    assert writer.histograms == [f"weights/{name}" for name in parameters] * 2
    assert writer.pr_curves[:10] == [f"pr_curve/{digit}" for digit in range(10)]
    # all of digits' 142 validation images, by the 84 features lenet's last Linear reads, as 32×32 thumbnails
    assert writer.embeddings[0] == ("penultimate", (142, 84), 142, (142, 1, 32, 32))


def test_penultimate_features_are_what_the_last_linear_or_conv_reads():
    model = book_sized_lenet_modern()
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    features = penultimate_features(model, images, Preprocess((28, 28)), 2, "32")
    (*_, head) = (m for m in model.modules() if isinstance(m, nn.Linear))
    assert head.in_features == 84 and features.shape == (5, 84) and features.dtype == torch.float32

    # an all-convolutional net: the last Conv2d's input, averaged over its positions
    convolutional = nn.Sequential(nn.Conv2d(1, 7, 3), nn.ReLU(), nn.Conv2d(7, 10, 1), nn.AdaptiveAvgPool2d(1))
    seen = {}
    convolutional[2].register_forward_pre_hook(lambda module, args: seen.update(x=args[0]))
    features = penultimate_features(convolutional, images, Preprocess((28, 28)), 5, "32")
    assert features.shape == (5, 7)
    torch.testing.assert_close(features, seen["x"].mean(dim=(2, 3)))
    assert penultimate_features(nn.Flatten(), images, Preprocess((28, 28)), 5, "32") is None


def test_thumbnails_are_square_unit_range_and_keep_grey_or_colour():
    grey = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    small = thumbnails(grey)
    assert small.shape == (3, 1, 32, 32)
    torch.testing.assert_close(small[:, :, ::4, ::4], grey.float() / 255)  # magnified with crisp pixels
    colour = thumbnails(torch.full((2, 3, 96, 64), 255, dtype=torch.uint8))
    assert colour.shape == (2, 3, 32, 32) and float(colour.min()) == float(colour.max()) == 1.0


def test_gradient_histograms_take_off_the_loss_scale():
    class Keep:
        def __init__(self) -> None:
            self.values = {}

        def add_histogram(self, tag, values, step) -> None:
            self.values[tag] = values

    layer = nn.Linear(3, 2)
    (layer(torch.ones(4, 3)).sum() * 1024).backward()  # as a float16 run's scaled loss leaves them
    writer = Keep()
    write_histograms(writer, layer, 1, gradient_scale=1024.0)
    assert set(writer.values) == {"weights/weight", "weights/bias", "gradients/weight", "gradients/bias"}
    torch.testing.assert_close(writer.values["gradients/bias"], torch.full((2,), 4.0))
    torch.testing.assert_close(writer.values["weights/weight"], layer.weight.detach())


def test_a_resumed_runs_projector_lists_every_step_and_drops_purged_ones(tmp_path):
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
    from torch.utils.tensorboard import SummaryWriter

    def embed(steps: list[int]) -> None:
        writer = SummaryWriter(tmp_path)  # each call is one process's writer, as in a run and its resume
        for step in steps:
            features = torch.full((4, 3), float(step))
            write_embedding(writer, features, list("abcd"), torch.zeros(4, 1, 32, 32), step)
        writer.close()

    def listed() -> list[str]:
        config = text_format.Parse((tmp_path / "projector_config.pbtxt").read_text(), ProjectorConfig())
        return [embedding.tensor_name for embedding in config.embeddings]

    embed([5, 10])
    embed([15])  # resumed from epoch 10's checkpoint
    assert listed() == ["penultimate:00005", "penultimate:00010", "penultimate:00015"]
    embed([10])  # resumed from epoch 9's: 10 is redone and 15 never happened
    assert listed() == ["penultimate:00005", "penultimate:00010"]
    assert sorted(p.name for p in tmp_path.glob("000*")) == ["00005", "00010"]
    rows = (tmp_path / "00010" / "penultimate" / "tensors.tsv").read_text().split()
    assert [float(value) for value in rows] == [10.0] * 12


def test_stages_of_lenet_are_the_activations_after_each_convolution():
    torch.manual_seed(0)
    model = book_sized_lenet_modern()
    x = torch.randn(3, 1, 28, 28)
    stages = stage_outputs(model, x)
    assert [tuple(s.shape) for s in stages] == [(3, 6, 28, 28), (3, 16, 10, 10)]  # d2l 7.6's shapes
    features = model.features
    first = F.relu(features[0](x))
    second = F.relu(features[3](F.max_pool2d(first, 2)))
    torch.testing.assert_close(stages[0], first)
    torch.testing.assert_close(stages[1], second)
    assert model.training  # the model's mode is restored


class TinyResidual(nn.Module):
    """A stem and one stride-2 residual block whose sum and ReLU are functional (no module)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.shortcut = nn.Conv2d(4, 8, 1, stride=2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))

    def stage2(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(F.relu(self.stem(x))))


def test_stage_outputs_find_residual_sums_without_knowing_the_architecture():
    torch.manual_seed(0)
    model, x = TinyResidual().eval(), torch.randn(2, 1, 8, 8)
    first, second = stage_outputs(model, x)
    # The stage ends where the next module reads it: the residual sum after its ReLU, not conv2's output.
    torch.testing.assert_close(first, F.relu(model.stem(x)))
    torch.testing.assert_close(second, model.stage2(F.relu(model.stem(x))))
    assert stage_outputs(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), x) == []


def test_confusion_matrix_counts_and_per_class_accuracy():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    predicted = torch.tensor([0, 1, 1, 1, 0, 2])
    matrix = confusion_matrix(predicted, labels, 4)
    assert matrix.tolist() == [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    accuracy = class_accuracies(matrix).tolist()
    assert accuracy[:3] == [0.5, 2 / 3, 1.0] and math.isnan(accuracy[3])  # no images of class 3


def test_confusion_figure_shades_cells_by_their_share_of_the_row():
    perfect = confusion_figure(torch.eye(3, dtype=torch.long) * 5, ["cat", "dog", "automobile"])
    assert perfect.dtype == torch.uint8 and perfect.shape[0] == 3
    pixels = perfect.permute(1, 2, 0).reshape(-1, 3)
    dark = (pixels == torch.tensor(_DARK_BLUE, dtype=torch.uint8)).all(dim=1).sum()
    assert dark > 3 * 20 * 20  # three full diagonal cells (minus their digits)
    uncertain = confusion_figure(torch.ones(3, 3, dtype=torch.long), ["cat", "dog", "automobile"])
    uncertain_pixels = uncertain.permute(1, 2, 0).reshape(-1, 3)
    assert not (uncertain_pixels == torch.tensor(_DARK_BLUE, dtype=torch.uint8)).all(dim=1).any()
    bigger = confusion_figure(torch.eye(10, dtype=torch.long), [str(d) for d in range(10)])
    assert bigger.shape[1] > perfect.shape[1] and bigger.shape[2] > perfect.shape[2]


def test_misclassified_grid_shows_only_mistakes_up_to_the_limit():
    labels = torch.arange(30) % 10
    split = Split(torch.randint(0, 256, (30, 1, 8, 8), dtype=torch.uint8), labels)
    classes = [str(d) for d in range(10)]
    assert misclassified_grid(split, labels, classes, 24) is None
    wrong = (labels + 1) % 10
    few, many = (misclassified_grid(split, wrong, classes, n) for n in (3, 24))
    assert few.shape[1] < many.shape[1] and few.shape[2] < many.shape[2]  # 1 row of 3 vs 3 rows of 8
    two_rows = misclassified_grid(split, wrong, classes, 16)
    assert two_rows.shape[2] == many.shape[2] and two_rows.shape[1] < many.shape[1]


def test_kernel_grid_draws_grey_kernels_or_rgb_ones():
    grey = nn.Sequential(nn.Conv2d(1, 6, 5))
    colour = nn.Sequential(nn.Conv2d(3, 4, 3))
    grey_grid, colour_grid = kernel_grid(grey), kernel_grid(colour)
    assert grey_grid.shape[0] == colour_grid.shape[0] == 3
    red_minus_green = (colour_grid[0].int() - colour_grid[1].int()).abs().sum()
    assert red_minus_green > 0  # RGB kernels are drawn in colour
    assert (grey_grid[0] == grey_grid[1]).all()  # grey ones are grey
    assert kernel_grid(nn.Linear(3, 2)) is None


def test_activation_figure_has_a_section_per_stage():
    image = torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8)
    one = activation_figure(image, "input", [torch.rand(6, 28, 28)], 64, 16)
    two = activation_figure(image, "input", [torch.rand(6, 28, 28), torch.rand(40, 10, 10)], 64, 16)
    capped = activation_figure(image, "input", [torch.rand(6, 28, 28), torch.rand(40, 10, 10)], 16, 16)
    assert two.height > capped.height > one.height  # 40 maps wrap to 3 rows of 16; capped to 1 row


def test_feature_rows_are_the_first_test_image_of_each_class():
    labels = torch.tensor([3, 1, 3, 0, 1, 2, 0])
    assert first_of_each_class(labels, 4) == [3, 1, 5, 0]  # indices, by class
    assert first_of_each_class(torch.tensor([2, 2, 0]), 4) == [2, 0]  # absent classes are skipped


def written_layouts(run_dir) -> list:
    """Every Custom Scalars layout in the run directory's event files."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.custom_scalar.layout_pb2 import Layout

    layouts = []
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "custom_scalars":
                    layouts.append(Layout.FromString(value.tensor.string_val[0]))
    return layouts


def test_a_new_run_lays_out_train_and_val_curves_on_one_chart_and_a_resumed_one_adds_none(tmp_path):
    from cnnlab.training.logging import RunLogger

    RunLogger(tmp_path, epochs=2).close()
    (layout,) = written_layouts(tmp_path)
    assert [category.title for category in layout.category] == ["curves", "per class"]
    charts = {chart.title: list(chart.multiline.tag) for chart in layout.category[0].chart}
    assert {"train/loss", "val/loss"} <= set(charts["loss"])
    assert {"train/acc", "val/acc"} <= set(charts["accuracy"])
    (per_class,) = layout.category[1].chart
    (pattern,) = per_class.multiline.tag
    assert re.match(pattern, "class_acc/7") and not re.match(pattern, "val/acc")

    RunLogger(tmp_path, epochs=4, purge_step=3).close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    assert len(written_layouts(tmp_path)) == 1
