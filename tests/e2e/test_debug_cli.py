"""The debug presets and the keys behind them, run as a user runs them: debug=fast (the pipeline end to
end in two steps), debug=overfit (can the model fit a handful of batches?) and trainer.limit_batches."""

import math
import re

from helpers import metrics, one_error_line, run_dirs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def test_debug_fast_takes_two_steps_writes_the_usual_run_files_and_no_images(cli):
    result = cli("train", "debug=fast")
    assert result.returncode == 0, result.stderr
    run_dir = run_dirs(cli.cwd)[0]
    for name in ("config.yaml", "metrics.json", "last.pt", "best.pt"):
        assert (run_dir / name).is_file(), name
    record = metrics(run_dir)
    assert (record["status"], record["epochs"], record["steps"]) == ("finished", 1, 2)
    assert record["test"] is not None  # the test split was measured (its first batch)
    assert "trainer.limit_batches=2: each epoch takes 2 batches" in result.stdout
    tags = EventAccumulator(str(run_dir)).Reload().Tags()
    assert "train/loss" in tags["scalars"] and tags["images"] == []


def test_debug_overfit_fits_lenet_modern_and_stops_once_it_has(cli):
    result = cli("train", "debug=overfit", "model=lenet_modern")
    assert result.returncode == 0, result.stderr
    record = metrics(run_dirs(cli.cwd)[0])
    history = record["history"]
    assert history[-1]["val/acc"] == 1.0 and all(m["val/acc"] < 1.0 for m in history[:-1])
    assert record["stopped_early"] == "val acc 1.0000 reached trainer.early_stopping.target=1"
    assert len(history) < 60 and record["steps"] == 4 * len(history)  # 4 batches of 64 per epoch
    assert f"overfit: the model fits its 256 training images (accuracy 1.0 from epoch {len(history)})" in (
        result.stdout
    )
    assert record["warnings"] == []


def test_debug_overfit_says_when_the_model_cannot_fit_its_batches(cli):
    result = cli("train", "debug=overfit", "optimizer.lr=1e-5", "trainer.epochs=2")
    assert result.returncode == 0, result.stderr
    record = metrics(run_dirs(cli.cwd)[0])
    assert record["history"][-1]["val/acc"] < 1.0
    (warning,) = record["warnings"]
    assert warning.startswith("overfit: the model cannot fit its 256 training images: its best accuracy")
    assert "check the labels and the preprocessing" in warning and warning in result.stdout
    assert "cannot fit its 256 training images (best accuracy" in result.stdout  # the end-of-run table


def test_limit_batches_counts_batches_or_a_share_and_the_schedule_ends_with_the_shorter_epochs(cli):
    # digits: 1,295 training images in batches of 64 → 21 batches per epoch
    assert cli("train", "trainer.limit_batches=3", "trainer.epochs=2", "debug=fast").returncode == 0
    assert metrics(run_dirs(cli.cwd)[0])["steps"] == 3 * 2
    shared = cli("train", "debug=limit", "trainer.limit_batches=0.5")
    assert shared.returncode == 0, shared.stderr
    record = metrics(run_dirs(cli.cwd)[-1])
    assert record["steps"] == 3 * math.ceil(0.5 * 21)
    # cosine decays to scheduler.min_lr (0) over the limited steps, not over the full epochs
    assert record["history"][-1]["lr"] < 1e-6


def test_detect_anomaly_names_a_module_of_the_model_where_the_plain_run_suggests_it(cli):
    from omegaconf import OmegaConf

    from cnnlab.app.checks import model_spec
    from cnnlab.models import create_model

    plain = cli("train", "optimizer.lr=1e6", "trainer.epochs=1")
    assert plain.returncode == 3
    assert one_error_line(plain.stderr).endswith(
        "and start again (trainer.detect_anomaly=true names the layer that first goes non-finite)"
    )
    watched = cli("train", "optimizer.lr=1e6", "trainer.epochs=1", "trainer.detect_anomaly=true")
    assert watched.returncode == 3
    line = one_error_line(watched.stderr)
    found = re.search(
        r"(a value|a gradient) became non-finite at epoch 1, step (\d+) \(lr [\d.e+]+\) in the "
        r"(forward|backward) of ([\w.]+) \((\w+)\), from finite",
        line,
    )
    assert found, line
    run_config = OmegaConf.load(run_dirs(cli.cwd)[-1] / "config.yaml")  # the model the run built
    name, in_channels, num_classes, options = model_spec(run_config)
    modules = dict(create_model(name, in_channels, num_classes, (28, 28), **options).named_modules())
    assert type(modules[found[4]]).__name__ == found[5]
    plain_step = re.search(r"step (\d+)", one_error_line(plain.stderr))[1]
    assert int(found[2]) <= int(plain_step)  # found at the step the loss went non-finite, or before
    assert metrics(run_dirs(cli.cwd)[-1])["error"] == line.split("error: ", 1)[1]


def test_profile_writes_a_trace_of_steps_after_warm_up_and_prints_the_top_operators(cli):
    import json

    result = cli("train", "trainer.profile=true", "trainer.epochs=1", "trainer.visual_every=null")
    assert result.returncode == 0, result.stderr
    assert "trainer.profile: steps 8–12, the top 10 operators by self time" in result.stdout
    table = result.stdout.split("the top 10 operators by self time")[1]
    rows = table.split("\n-")[2].splitlines()[1:]  # between the header's rule and the closing one
    assert "Self CPU" in table and len(rows) == 10 and sum("aten::" in row for row in rows) >= 5
    (trace,) = run_dirs(cli.cwd)[0].glob("*.pt.trace.json")  # where TensorBoard's profiler plugin looks
    names = {event.get("name", "") for event in json.loads(trace.read_text())["traceEvents"]}
    steps = {name for name in names if name.startswith("ProfilerStep")}
    assert steps == {f"ProfilerStep#{n}" for n in range(7, 12)}  # 0-based: the 8th to the 12th step
    short = cli("train", "trainer.profile=true", "debug=fast")
    assert short.returncode == 0, short.stderr
    assert "trainer.profile: the run took 2 steps, fewer than the 12 a profile needs" in short.stdout
