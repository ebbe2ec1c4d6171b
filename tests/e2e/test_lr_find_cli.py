"""`cnnlab lr-find` as a user runs it: the suggestion on digits trains the default run, the files it
writes, and a range in which nothing learns."""

import itertools
import json

from helpers import metrics, one_error_line, run_dirs
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def finder_dirs(root):
    """lr-find's run directories (under outputs/lr_find/)."""
    return [path.parent for path in (root / "outputs" / "lr_find").glob("*/*/lr_find.json")]


def test_the_suggestion_on_digits_trains_the_default_run_and_the_curve_is_recorded(cli):
    found = cli("lr-find")
    assert found.returncode == 0, found.stderr
    (run_dir,) = finder_dirs(cli.cwd)
    record = json.loads((run_dir / "lr_find.json").read_text())
    lrs, suggested = record["lrs"], record["suggested_lr"]
    assert lrs[0] == 1e-7 and len(lrs) <= 100 and all(a < b for a, b in itertools.pairwise(lrs))
    lowest = min(range(len(lrs)), key=record["smoothed"].__getitem__)
    assert abs(suggested - 0.1 * lrs[lowest]) < 1e-12  # the rule it prints
    assert f"optimizer.lr={suggested:.3g}" in found.stdout and "the smoothed loss is lowest" in found.stdout
    assert Image.open(run_dir / "lr_find.png").size == (720, 440)
    tags = EventAccumulator(str(run_dir)).Reload().Tags()
    assert {"lr_find/lr", "lr_find/loss", "lr_find/smoothed_loss"} <= set(tags["scalars"])
    assert "lr_find/curve" in tags["images"]
    assert run_dirs(cli.cwd) == []  # no training run made or touched
    # The default run (its warm-up, cosine schedule and clipping) learns at the suggested rate.
    trained = cli("train", f"optimizer.lr={suggested:.3g}", "trainer.epochs=3", "trainer.visual_every=null")
    assert trained.returncode == 0, trained.stderr
    assert metrics(run_dirs(cli.cwd)[0])["best"]["val/acc"] > 0.9


def test_a_range_where_nothing_learns_is_one_line_and_still_leaves_the_curve(cli):
    result = cli("lr-find", "lr_find.min_lr=1e-9", "lr_find.max_lr=1e-8", "lr_find.steps=5")
    assert result.returncode == 4
    line = one_error_line(result.stderr)
    assert "the smoothed training loss never fell more than 5% below its start" in line
    assert "lr_find.max_lr" in line and "debug=overfit" in line
    (run_dir,) = finder_dirs(cli.cwd)
    assert json.loads((run_dir / "lr_find.json").read_text())["suggested_lr"] is None
    assert (run_dir / "lr_find.png").is_file()
