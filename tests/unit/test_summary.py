"""`cnnlab summary`: the book's layer tables, totals checked by hand and by FlopCounterMode, no files."""

import json

import pytest
import torch
from helpers import one_error_line
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.cli import main
from cnnlab.commands.summary import summarize
from cnnlab.models import create_model


@pytest.fixture(autouse=True)
def offline_in_empty_dir(tmp_path, monkeypatch):
    """Run in an empty directory with an empty data directory: a summary must leave both untouched."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(tmp_path / "data"))
    yield
    assert list(tmp_path.iterdir()) == [], "cnnlab summary wrote files"


def summary_json(capsys, *overrides: str) -> dict:
    """Run `cnnlab summary <overrides> summary.format=json` and parse what it printed."""
    assert main(["summary", *overrides, "summary.format=json"]) == 0
    return json.loads(capsys.readouterr().out)


def rows(report: dict, depth: int) -> list[tuple[str, list[int]]]:
    """(name, output shape without the batch) of the rows at `depth`."""
    return [(row["name"], row["output_shape"][1:]) for row in report["layers"] if row["depth"] == depth]


def test_lenet_on_fashion_mnist_matches_the_books_layer_table(capsys):
    report = summary_json(capsys, "model=lenet", "dataset=fashion_mnist", "summary.depth=2")
    assert report["input_shape"] == [1, 1, 28, 28]
    assert [shape for _, shape in rows(report, 2)] == [
        [6, 28, 28], [6, 28, 28], [6, 14, 14], [16, 10, 10], [16, 10, 10], [16, 5, 5], [400],
        [120], [120], [84], [84], [10],
    ]  # fmt: skip
    # Closed forms: parameters of conv 5×5 (1→6, 6→16) and linear 400→120→84→10, all with biases;
    # mult-adds = output elements × kernel size × input channels per conv, in × out per linear.
    assert report["total_parameters"] == report["trainable_parameters"] == 61_706
    conv = 6 * 28 * 28 * 25 * 1 + 16 * 10 * 10 * 25 * 6
    assert report["total_mult_adds"] == conv + 400 * 120 + 120 * 84 + 84 * 10 == 416_520
    leaf_outputs = 2 * 6 * 28 * 28 + 6 * 14 * 14 + 2 * 16 * 10 * 10 + 2 * 400 + 2 * 120 + 2 * 84 + 10
    assert report["forward_backward_bytes"] == 2 * 4 * leaf_outputs  # outputs and their gradients, fp32
    assert report["parameter_bytes"] == 4 * 61_706
    assert report["input_bytes"] == 4 * 28 * 28


def test_vgg11_at_224_matches_the_books_block_table(capsys):
    report = summary_json(capsys, "model=vgg11", "resize=224", "summary.depth=2")
    assert rows(report, 2) == [
        ("features.block1", [64, 112, 112]), ("features.block2", [128, 56, 56]),
        ("features.block3", [256, 28, 28]), ("features.block4", [512, 14, 14]),
        ("features.block5", [512, 7, 7]), ("features.flatten", [25088]),
        ("classifier.0", [4096]), ("classifier.1", [4096]), ("classifier.2", [4096]),
        ("classifier.3", [4096]), ("classifier.4", [4096]), ("classifier.5", [4096]),
        ("classifier.6", [10]),
    ]  # fmt: skip
    assert report["total_parameters"] == 128_806_154


def test_resnet18_at_96_matches_the_books_block_table(capsys):
    report = summary_json(capsys, "model=resnet18", "resize=96", "summary.depth=1")
    assert rows(report, 1) == [
        ("stem", [64, 24, 24]), ("stage1", [64, 24, 24]), ("stage2", [128, 12, 12]),
        ("stage3", [256, 6, 6]), ("stage4", [512, 3, 3]), ("head", [10]),
    ]  # fmt: skip
    assert len(report["layers"]) == 6  # summary.depth=1: the model's children only


@pytest.mark.parametrize(
    ("name", "size", "options"),
    [
        (
            "lenet_modern",
            28,
            {
                "init": "kaiming",
                "zero_init_head": True,
                "channels": [32, 64],
                "hidden": [256, 128],
                "batch_norm": True,
            },
        ),
        (
            "vgg",
            32,
            {
                "init": "xavier",
                "zero_init_head": False,
                "arch": [[1, 16], [1, 32], [2, 64], [2, 128], [2, 128]],
            },
        ),
        ("resnet18", 32, {"init": "xavier", "zero_init_head": False, "zero_init_residual": False}),
        (
            "resnext",
            32,
            {
                "init": "xavier",
                "zero_init_head": False,
                "zero_init_residual": False,
                "groups": 32,
                "bot_mul": 1.0,
            },
        ),
    ],
    ids=["lenet_modern", "vgg_small", "resnet18", "resnext"],
)
def test_totals_agree_with_flop_counter_and_parameters(name, size, options):
    model = create_model(name, 3, 10, (size, size), **options).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(2, 3, size, size))
    report = summarize(model, (2, 3, size, size), name)
    assert report.total_mult_adds == counter.get_total_flops() // 2 > 0
    assert report.total_parameters == sum(p.numel() for p in model.parameters())
    # Every parameter and every counted multiply-add belongs to exactly one of the model's children.
    children = [layer for layer in report.layers if layer.depth == 1]
    assert sum(layer.parameters for layer in children) == report.total_parameters
    assert sum(layer.mult_adds for layer in children) == report.total_mult_adds


def test_table_has_the_columns_rows_and_footer(capsys):
    assert main(["summary", "model=lenet", "dataset=fashion_mnist"]) == 0
    out = capsys.readouterr().out
    for column in ("Layer (type)", "Output shape", "Param #", "Mult-adds"):
        assert column in out
    conv = next(line for line in out.splitlines() if "0 (Conv2d)" in line)
    assert "[1, 6, 28, 28]" in conv and "156" in conv and "117,600" in conv
    assert "│   0 (Conv2d)" in conv  # indented under features
    for line in (
        "Total params: 61,706",
        "Trainable params: 61,706",
        "Total mult-adds: 416,520 (416.52 K)",
        "Input size: 1×1×28×28",
        "Forward/backward pass size: 0.11 MB (estimated)",
        "Params size: 0.24 MB",
    ):
        assert line in out


def test_experiment_presets_summarize_the_books_models(capsys):
    vgg = summary_json(capsys, "experiment=d2l_vgg", "summary.depth=2")
    assert vgg["model"] == "vgg" and vgg["input_shape"] == [1, 1, 224, 224]
    assert rows(vgg, 2)[0] == ("features.block1", [16, 112, 112])
    resnext = summary_json(capsys, "experiment=d2l_resnext", "summary.depth=1")
    assert resnext["model"] == "resnext" and resnext["input_shape"] == [1, 1, 96, 96]
    assert rows(resnext, 1)[-2:] == [("stage4", [512, 3, 3]), ("head", [10])]


def test_hydra_flags_still_work(capsys):
    assert main(["summary", "model=vgg_small", "resize=32", "--cfg", "job"]) == 0
    out = capsys.readouterr().out
    assert "summary:\n  depth: 3\n  format: table" in out and "name: vgg" in out
    assert main(["summary", "--help"]) == 0
    assert "vgg_small" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["summary.format=xml"], "summary.format='xml' is not one of: table, json"),
        (["summary.depth=0"], "summary.depth must be an integer ≥ 1"),
        (["model=vgg11", "resize=16"], "the smallest size it accepts is 32×32; set resize=32"),
        (["model=vgs"], "unknown model 'vgs'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, overrides, message):
    assert main(["summary", *overrides]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("cnnlab summary: error: ") and message in line
