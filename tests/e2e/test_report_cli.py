"""`cnnlab report` and the report every multirun prints: one table per sweep, report.csv, report.md."""

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import job_records, metrics, run_cli
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cnnlab.cli import main
from cnnlab.runs.curves import PALETTE

LEARNING_RATES = ("0.1", "0.03", "1000000.0")
MODELS = ("lenet", "lenet_modern")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """3 learning rates × 2 LeNets, 1 epoch; the ReLU LeNet diverges at lr=1e6 (the sigmoid one, which
    saturates, does not — without weight decay, which at that rate would blow any weights up)."""
    root = tmp_path_factory.mktemp("report")
    result = run_cli(
        "train",
        "-m",
        "optimizer.lr=0.1,0.03,1e6",
        "model=lenet,lenet_modern",
        "trainer.epochs=1",
        "trainer.clip_grad_norm=null",
        "optimizer.weight_decay=0",
        cwd=root,
    )
    (sweep_dir,) = (root / "outputs" / "train-sweeps").glob("*/*")
    return root, sweep_dir, result


def read_csv(path: Path) -> list[dict[str, str]]:
    """report.csv's rows as dicts."""
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def table_rows(stdout: str) -> list[list[str]]:
    """The cells of each body row of the report table (printed after the jobs' own output)."""
    report = stdout[stdout.index("cnnlab report: ") :]
    return [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in report.splitlines()
        if line.startswith("│")
    ]


def test_multirun_ends_with_the_report_and_lists_the_failed_job(sweep):
    _, sweep_dir, result = sweep
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    failed = [line for line in result.stderr.splitlines() if "job(s) failed" in line]
    assert failed == ["cnnlab train: error: 1 job(s) failed:"]
    listed = result.stderr.splitlines()[-1]
    assert (
        "(model=lenet_modern,optimizer.lr=1000000.0,optimizer.weight_decay=0,"
        "trainer.clip_grad_norm=null,trainer.epochs=1): "
        "loss became non-finite" in listed
    )
    assert (
        f"cnnlab report: 6 run(s) in outputs/train-sweeps/{sweep_dir.parent.name}/{sweep_dir.name}"
        in result.stdout
    )
    rows = table_rows(result.stdout)
    assert len(rows) == 6
    assert [row[-1] for row in rows] == ["finished"] * 5 + ["failed"]
    assert (sweep_dir / "report.md").read_text().count("\n") == 2 + 6  # header, alignment, one line per run


def test_report_csv_has_the_varied_settings_and_real_results_best_first(sweep):
    _, sweep_dir, _ = sweep
    rows = read_csv(sweep_dir / "report.csv")
    assert list(rows[0])[:3] == [
        "run",
        "optimizer.lr",
        "model",
    ]  # trainer.epochs is the same for all: no column
    assert {(row["optimizer.lr"], row["model"]) for row in rows} == {
        (lr, m) for lr in LEARNING_RATES for m in MODELS
    }
    finished = [row for row in rows if row["status"] == "finished"]
    accuracies = [float(row["best_val_acc"]) for row in finished]
    assert len(finished) == 5 and accuracies == sorted(accuracies, reverse=True)
    for row in finished:
        found = metrics(sweep_dir / row["run"])
        assert float(row["best_val_acc"]) == found["best"]["val/acc"]
        assert float(row["final_train_loss"]) == found["final"]["train/loss"]
        assert float(row["images_per_s"]) == found["images_per_s"] > 0
        assert row["epochs"] == row["epochs_planned"] == "1"
    assert (
        accuracies[0] > 0.5 > accuracies[-1]
    )  # a good rate learns in one epoch, lr=1e6 on the sigmoid LeNet does not
    failed = rows[-1]
    assert (failed["optimizer.lr"], failed["model"], failed["status"]) == (
        "1000000.0",
        "lenet_modern",
        "failed",
    )
    assert failed["best_val_acc"] == "" and failed["epochs"] == "0"
    assert failed["error"].startswith("loss became non-finite at epoch 1")


def test_report_command_prints_the_same_table_again(sweep, capsys, monkeypatch):
    root, sweep_dir, result = sweep
    before = (sweep_dir / "report.md").read_text()
    monkeypatch.chdir(root)
    assert main(["report", str(sweep_dir.relative_to(root))]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows == table_rows(result.stdout)
    (failed,) = [record for record in job_records(sweep_dir) if record["status"] == "failed"]
    assert rows[-1][0] == str(failed["num"])  # a multirun job is named by its number
    assert (sweep_dir / "report.md").read_text() == before


def test_report_of_outputs_names_each_run_by_its_sweep(sweep, capsys):
    root, sweep_dir, _ = sweep
    assert main(["report", str(root / "outputs")]) == 0
    rows = table_rows(capsys.readouterr().out)
    prefix = f"train-sweeps/{sweep_dir.parent.name}/{sweep_dir.name}/"
    assert len(rows) == 6 and all(row[0].startswith(prefix) for row in rows)
    assert (root / "outputs" / "report.csv").is_file()


@pytest.mark.parametrize(("alive", "shown"), [(True, "running"), (False, "interrupted")])
def test_a_job_that_never_wrote_metrics_is_reported_from_its_record(sweep, tmp_path, capsys, alive, shown):
    """A job still training, or killed mid-training, has only its record (status running): the report
    shows it as running while its process lives, as interrupted once it is gone."""
    _, sweep_dir, _ = sweep
    copy = tmp_path / "sweep"
    shutil.copytree(sweep_dir, copy)
    best = read_csv(copy / "report.csv")[0]
    (copy / best["run"] / "metrics.json").unlink()
    (record,) = [record for record in job_records(copy) if record["directory"] == best["run"]]
    pid = os.getpid() if alive else record["pid"]  # the sweep's own process has ended
    (copy / ".jobs" / f"{record['num']}.json").write_text(
        json.dumps({**record, "status": "running", "ended": None, "pid": pid})
    )
    assert main(["report", str(copy)]) == 0
    rows = {row[0]: row for row in table_rows(capsys.readouterr().out)}
    assert rows[str(record["num"])][3:] == ["", "", "", "", "", "", shown]  # no results yet
    assert sorted(row[-1] for row in rows.values()) == sorted(
        ["failed", "finished", "finished", "finished", "finished", shown]
    )


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory):
    """2 learning rates × 2 seeds, 1 epoch: two configs, each repeated over two seeds."""
    root = tmp_path_factory.mktemp("seeds")
    result = run_cli("train", "-m", "optimizer.lr=0.1,0.03", "trainer.seed=0,1", "trainer.epochs=1", cwd=root)
    assert result.returncode == 0, result.stderr
    (sweep_dir,) = (root / "outputs" / "train-sweeps").glob("*/*")
    return sweep_dir, result


def test_runs_that_differ_only_in_the_seed_are_grouped_into_mean_std_and_n(seed_sweep):
    sweep_dir, result = seed_sweep
    runs = read_csv(sweep_dir / "report.csv")
    groups = read_csv(sweep_dir / "report-groups.csv")
    assert [group["optimizer.lr"] for group in groups] and len(groups) == 2
    for group in groups:
        accs = [float(run["best_val_acc"]) for run in runs if run["optimizer.lr"] == group["optimizer.lr"]]
        assert group["runs"] == "2" and group["best_val_acc_n"] == "2"
        mean = sum(accs) / 2
        assert float(group["best_val_acc_mean"]) == pytest.approx(mean)
        assert float(group["best_val_acc_std"]) == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5)
    means = [float(group["best_val_acc_mean"]) for group in groups]
    assert means == sorted(means, reverse=True)  # best mean first
    # The figure: each group's mean line in its own colour.
    picture = Image.open(sweep_dir / "report-curves.png").convert("RGB")
    colours = set(
        picture.get_flattened_data() if hasattr(picture, "get_flattened_data") else picture.getdata()
    )
    assert picture.size == (720, 440) and set(PALETTE[:2]) <= colours
    # ...and the same figure in the sweep's TensorBoard, as the sweep directory's own run.
    events = EventAccumulator(str(sweep_dir), size_guidance={"images": 0})
    events.Reload()
    (image,) = events.Images("report/val_acc_by_group")
    assert (image.width, image.height, image.step) == (720, 440, 4)
    # The multirun printed the same groups: one row each, its mean ± std shown to four places.
    printed = result.stdout[result.stdout.index("grouped by optimizer.lr") :]
    for group in groups:
        mean, std = float(group["best_val_acc_mean"]), float(group["best_val_acc_std"])
        assert f"{mean:.4f} ± {std:.4f}" in printed


def test_report_by_chooses_the_grouping_and_an_unknown_key_is_one_line(seed_sweep, capsys):
    sweep_dir, _ = seed_sweep
    assert main(["report", str(sweep_dir), "--by", "trainer.seed"]) == 0
    groups = read_csv(sweep_dir / "report-groups.csv")
    assert sorted(group["trainer.seed"] for group in groups) == ["0", "1"]
    assert "grouped by trainer.seed" in capsys.readouterr().out
    assert main(["report", str(sweep_dir), "--by", "model.nope"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("cnnlab report: error: --by model.nope: no run has this setting")
    assert "optimizer.lr, trainer.seed" in line
