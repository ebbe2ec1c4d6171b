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
    stage_outputs,
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


def test_a_visuals_call_takes_well_under_a_second():
    model = book_sized_lenet_modern()
    data = load_dataset("digits", {"test_fraction": 0.2, "split_seed": 0}, 0.1, 0)
    preprocess = Preprocess((28, 28))

    class Discard:  # a writer that keeps what would be written
        def __init__(self) -> None:
            self.images, self.scalars = [], []

        def add_image(self, tag, image, step) -> None:
            self.images.append((tag, image.shape, image.dtype))

        def add_scalar(self, tag, value, step) -> None:
            self.scalars.append(tag)

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
