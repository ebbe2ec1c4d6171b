"""Training on a folder of photos through `cnnlab train`: the decode it reports, the cache that serves
the next run, and one-line errors for bad loader options."""

from helpers import metrics, one_error_line, run_dirs
from helpers import write_jpeg_folder as write_folder


def test_training_on_a_folder_of_photos_reports_its_decode_and_augments_by_default(cli):
    write_folder(cli.cwd / "img")
    common = ("dataset=imagefolder", "dataset.loader.root=img", "trainer.epochs=1")  # 2 classes, inferred
    first = cli("train", *common, "trainer.batch_size=4")
    assert first.returncode == 0, first.stderr
    assert "within dataset.loader.memory_budget=0.25 of this process's memory" in first.stdout
    assert "imagefolder: decoded 12 images in" in first.stdout
    second = cli("train", *common, "trainer.batch_size=4")
    assert "decoded 12 images" not in second.stdout  # the cache serves the second run
    runs = run_dirs(cli.cwd)
    saved = (runs[0] / "config.yaml").read_text()
    assert "stream: false" in saved  # what auto decided, for resumes
    assert "num_classes: 2" in saved  # the class folders under img/train
    done = [metrics(run) for run in runs]
    assert done[0]["history"][0]["train/loss"] == done[1]["history"][0]["train/loss"]
    bad = cli("train", *common, "dataset.loader.stream=sometimes")
    assert bad.returncode == 2
    assert "dataset.loader.stream must be auto, true or false, got 'sometimes'" in one_error_line(bad.stderr)
    budget = cli("train", *common, "dataset.loader.memory_budget=0")
    assert budget.returncode == 2 and "dataset.loader.memory_budget must be a number > 0" in budget.stderr
