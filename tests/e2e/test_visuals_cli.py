"""TensorBoard visuals: what a trained run's event files hold."""

import io

import pytest
import torch
from helpers import IMAGE_TAGS, metrics, run_cli
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cnnlab.data.sources import load_dataset


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One 3-epoch digits run with images every 2 epochs (so at epochs 2 and 3, the last)."""
    root = tmp_path_factory.mktemp("visuals")
    run_dir = root / "run"
    result = run_cli(
        "train", "trainer.epochs=3", "trainer.visual_every=2", f"hydra.run.dir={run_dir}", cwd=root
    )
    assert result.returncode == 0, result.stderr
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return run_dir, events, result


def decoded(events: EventAccumulator, tag: str) -> Image.Image:
    """The last image logged under `tag`."""
    return Image.open(io.BytesIO(events.Images(tag)[-1].encoded_image_string))


def test_event_files_hold_every_image_every_visual_every_epochs_and_at_the_end(trained_run):
    _, events, _ = trained_run
    tags = events.Tags()
    assert set(tags["images"]) == IMAGE_TAGS
    for tag in IMAGE_TAGS:
        assert [e.step for e in events.Images(tag)] == [2, 3], tag
    assert tags["graph"]  # the model graph, written once at the end


def test_feature_map_images_show_one_row_per_class(trained_run):
    _, events, _ = trained_run
    stage1, stage2 = decoded(events, "features/stage1"), decoded(events, "features/stage2")
    # 10 rows (one test image per digit) of 1 input + the first 16 maps (of 32 in stage 1, 64 in
    # stage 2), 56+ px each
    assert stage1.height > 10 * 56 and stage2.height > 10 * 56
    assert 17 * 56 < stage1.width < 18 * 70
    assert 17 * 56 < stage2.width < 18 * 70


def test_per_class_accuracy_scalars_agree_with_the_runs_accuracy(trained_run):
    run_dir, events, _ = trained_run
    per_class = {
        tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"] if tag.startswith("class_acc/")
    }
    assert sorted(per_class) == [f"class_acc/{d}" for d in range(10)]
    test = load_dataset("digits", {"test_fraction": 0.2, "split_seed": 0}, 0.1, 0).val  # what it validates on
    counts = torch.bincount(test.labels, minlength=10).tolist()
    overall = sum(per_class[f"class_acc/{d}"] * counts[d] for d in range(10)) / len(test)
    assert overall == pytest.approx(metrics(run_dir)["final"]["val/acc"], abs=1e-6)


def test_training_prints_no_deprecation_warnings_from_the_graph(trained_run):
    _, _, result = trained_run
    output = result.stderr + result.stdout
    assert "torch.jit" not in output and "deprecated" not in output
