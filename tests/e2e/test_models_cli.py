"""The model zoo through `cnnlab train`: every model trains on digits, the compiled book LeNet
learns as the eager one does, and each of chapter 8's book runs composes and trains."""

import csv
import re

import numpy as np
import pytest
import yaml
from helpers import learning_curves, metrics, run_dirs, write_idx


@pytest.mark.parametrize(
    ("model", "resize"), [("vgg11", 32), ("vgg_small", 32), ("resnet18", 16), ("resnext", 16)]
)
def test_cli_trains_each_model_on_digits(cli, model, resize):
    # test_fraction=0.9 leaves 179 training images: one epoch is a few steps.
    result = cli(
        "train", f"model={model}", "dataset=digits", f"resize={resize}", "trainer.epochs=1",
        "dataset.loader.test_fraction=0.9", "trainer.batch_size=32",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_dirs(cli.cwd)
    run = metrics(run_dir)
    assert run["status"] == "finished" and run["epochs"] == 1
    assert 0.0 <= run["final"]["val/acc"] <= 1.0


def test_compiled_book_lenet_on_cpu_learns_as_eager(cli):
    """torch.compile traces LeNet's pooling (a custom autograd Function on CPU) to the same numbers."""
    curves = []
    for compile_setting in ("false", "true"):
        result = cli(
            "train", "model=lenet", "dataset=digits", "trainer.epochs=3",
            f"trainer.compile={compile_setting}", "dataset.loader.test_fraction=0.5", "trainer.batch_size=32",
            "optimizer=adam", "optimizer.lr=0.01", f"hydra.run.dir=outputs/train/{compile_setting}",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        curves.append(learning_curves(cli.cwd / "outputs" / "train" / compile_setting))
    eager, compiled = curves
    assert eager[-1]["val/acc"] > 0.5  # it learns (chance is 0.1)
    assert len(eager) == len(compiled) == 3
    for eager_epoch, compiled_epoch in zip(eager, compiled, strict=True):
        assert eager_epoch.keys() == compiled_epoch.keys()
        for key, value in eager_epoch.items():
            assert compiled_epoch[key] == pytest.approx(value, rel=0.02, abs=0.01), key


def _write_fashion_mnist(cwd):
    """Fashion-MNIST's IDX files, 64 random images per split, where cnnlab's data_dir finds them."""
    raw = cwd / "data" / "fashion_mnist" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, size=(64, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(64) % 10)


# The book's runs of chapter 8 (lr, batch size, epochs as the book has them), at a reduced resize.
PRESETS = [("alexnet", 67, 0.01), ("nin", 67, 0.05), ("googlenet", 32, 0.01), ("lenet_bn", 28, 0.1),
           ("densenet", 32, 0.01), ("regnetx32", 32, 0.05)]  # fmt: skip


@pytest.mark.parametrize(("model", "resize", "lr"), PRESETS, ids=[preset[0] for preset in PRESETS])
def test_each_chapter_8_preset_composes_and_trains_a_few_steps(cli, model, resize, lr):
    """experiment=d2l_<model> on Fashion-MNIST IDX files written here (64 images): one epoch."""
    _write_fashion_mnist(cli.cwd)
    result = cli(
        "train", f"experiment=d2l_{model}", f"resize={resize}", "trainer.epochs=1", "trainer.batch_size=16",
        "dataset.loader.download=false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_dirs(cli.cwd)
    run = metrics(run_dir)
    assert run["status"] == "finished" and run["epochs"] == 1
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["name"] == model and config["optimizer"]["lr"] == lr
    assert config["optimizer"]["momentum"] == 0.0 and config["model"]["init"] == "xavier"
    # The book prints no figure for chapter 8's runs (only plots): the run says so, it invents none.
    section = {"alexnet": "8.1", "nin": "8.3", "googlenet": "8.4", "lenet_bn": "8.5", "densenet": "8.7",
               "regnetx32": "8.8"}[model]  # fmt: skip
    assert run["book"] == {"test_acc": None, "section": section}
    assert re.search(rf"│ book test acc +│ not reported \(d2l\.ai {section}\)", result.stdout)


def test_a_book_run_shows_the_books_figure_beside_its_own_and_the_report_has_a_column_for_it(cli):
    """d2l_lenet carries 7.6's ~0.78: the end-of-run table, metrics.json and the report show it."""
    _write_fashion_mnist(cli.cwd)
    printed = {}
    for name, preset in (("book", ["experiment=d2l_lenet"]), ("own", ["dataset=fashion_mnist"])):
        result = cli(
            "train", *preset, "trainer.epochs=1", "trainer.batch_size=16", "dataset.loader.download=false",
            f"hydra.run.dir=outputs/train/{name}",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        printed[name] = result.stdout
    assert "│ book test acc      │ 0.78 (d2l.ai 7.6)" in printed["book"]
    assert "book test acc" not in printed["own"]
    book = metrics(cli.cwd / "outputs" / "train" / "book")
    assert book["book"] == {"test_acc": 0.78, "section": "7.6"}
    assert metrics(cli.cwd / "outputs" / "train" / "own")["book"] is None
    report = cli("report", "outputs")
    assert report.returncode == 0, report.stderr
    header = next(line for line in report.stdout.splitlines() if "best val acc" in line)
    assert header.index("test acc") < header.index("book") < header.index("final train loss")
    rows = {line.split("│")[1].strip(): line for line in report.stdout.splitlines() if "train/" in line}
    assert "0.78 (d2l.ai 7.6)" in rows["train/book"] and "d2l.ai" not in rows["train/own"]
    table = list(csv.DictReader((cli.cwd / "outputs" / "report.csv").open()))
    by_run = {row["run"]: row for row in table}
    assert by_run["train/book"]["book_test_acc"] == "0.78" and by_run["train/book"]["book_section"] == "7.6"
    assert by_run["train/own"]["book_test_acc"] == ""
