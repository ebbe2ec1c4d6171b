"""benchmarks/throughput.py end to end on a tiny setting: it runs both pipelines and prints its JSON lines."""

import json
import subprocess
import sys
from pathlib import Path

import torch
from helpers import REPO

from cnnlab.training.device import resolve_channels_last, resolve_precision

SCRIPT = REPO / "benchmarks" / "throughput.py"
# LeNet@28 forward FLOPs, 2 per multiply-add: two convolutions, then linear 400→120→84→10.
LENET_FORWARD_FLOPS = 2 * (28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 400 * 120 + 120 * 84 + 84 * 10)


def run_benchmark(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run the script as a user does, from a scratch directory."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_tiny_run_prints_every_figure_as_json_lines(tmp_path):
    result = run_benchmark(
        "--models", "lenet", "--steps", "2", "--warmup", "1", "--images", "640", "--workers", "1",
        "--skip-epoch", "--skip-augment", "--skip-imagefolder", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["kind"] for line in lines] == ["environment", "matmul_peak", "throughput"] + ["goal"] * 4

    environment, peak, row = lines[:3]
    assert environment["torch"] == torch.__version__
    assert environment["device_type"] == "cpu"
    assert environment["threads"] >= 1
    assert (environment["train_images"], environment["test_images"]) == (640, 106)
    cpu = torch.device("cpu")
    precision = resolve_precision("auto", cpu)  # what the configs' 'auto' means on this CPU
    assert peak["dtype"] == f"torch.{'bfloat16' if precision == 'bf16' else 'float32'}" and peak["gflops"] > 0

    assert row["model"] == "lenet" and row["input_size"] == [28, 28]
    assert row["batch_size"] == 128  # the d2l_lenet preset's
    assert row["cnnlab_precision"] == precision
    assert row["cnnlab_channels_last"] is resolve_channels_last("auto", cpu)
    assert row["train_gflop_per_image"] == round(3 * LENET_FORWARD_FLOPS / 1e9, 4)
    for field in ("cnnlab_images_per_s", "cnnlab_fp32_images_per_s", "reference_images_per_s"):
        assert row[field] > 0, field
    assert abs(row["ratio"] - row["cnnlab_images_per_s"] / row["reference_images_per_s"]) < 0.01
    assert abs(row["cnnlab_gflops"] - row["train_gflop_per_image"] * row["cnnlab_images_per_s"]) < 0.1
    assert row["peak_fraction"] > 0 and row["data_handling_fraction"] > 0

    goals = {line["goal"].split(" ")[1]: line for line in lines[3:]}
    assert [goals[name]["status"] for name in ("lenet@28", "resnet18@96", "vgg_small@224")] == ["skipped"] * 3
    handling = goals["data"]
    assert handling["value"] == row["data_handling_fraction"]
    assert handling["status"] == ("pass" if handling["value"] < 0.03 else "fail")


def test_a_chapter_8_model_is_measured_at_its_book_size_against_the_same_goal(tmp_path):
    result = run_benchmark(
        "--models", "lenet_bn", "--steps", "2", "--warmup", "1", "--images", "640", "--workers", "1",
        "--skip-epoch", "--skip-augment", "--skip-imagefolder", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    (row,) = [line for line in lines if line["kind"] == "throughput"]
    assert row["model"] == "lenet_bn" and row["input_size"] == [28, 28] and row["batch_size"] == 128
    assert row["reference_images_per_s"] > 0
    (target,) = [line for line in lines if line["kind"] == "goal" and "lenet_bn" in line["goal"]]
    assert target["goal"] == "cpu: lenet_bn@28 images/s ≥ 2× the reference"
    assert target["value"] == row["ratio"]
    assert target["status"] == ("pass" if row["ratio"] >= 2.0 else "fail")


def test_too_few_images_for_the_steps_is_one_error_line(tmp_path):
    result = run_benchmark(
        "--models", "lenet", "--steps", "5", "--warmup", "1", "--images", "512", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].endswith(
        "--images 512 is too few for --warmup 1 + --steps 5 + 8 prefetched batches of 128; "
        "use --images 1792 or more"
    )
    assert result.stdout == ""


def test_epoch_timing_alternates_the_pipelines_and_compares_medians(tmp_path):
    result = run_benchmark(
        "--models", "lenet", "--steps", "1", "--warmup", "1", "--images", "640", "--workers", "1",
        "--epoch-repeats", "3", "--skip-augment", "--skip-imagefolder", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (epoch,) = [line for line in map(json.loads, result.stdout.splitlines()) if line["kind"] == "epoch"]
    assert (epoch["train_images"], epoch["test_images"], epoch["batch_size"]) == (640, 106, 128)
    assert len(epoch["cnnlab_runs"]) == len(epoch["reference_runs"]) == 3
    assert epoch["cnnlab_seconds"] == sorted(epoch["cnnlab_runs"])[1]
    assert epoch["reference_seconds"] == sorted(epoch["reference_runs"])[1]
    assert epoch["speedup"] == round(epoch["reference_seconds"] / epoch["cnnlab_seconds"], 2)
    assert 0 <= epoch["cnnlab_test_acc"] <= 1 and 0 <= epoch["reference_test_acc"] <= 1
    assert result.stderr.count("cnnlab, then reference") == 3


def test_augmentation_share_and_image_folder_epochs_are_measured(tmp_path):
    result = run_benchmark(
        "--models", "lenet", "--steps", "1", "--warmup", "1", "--images", "640", "--workers", "1",
        "--skip-epoch", "--augment-repeats", "2", "--photos", "12", "--imagefolder-epochs", "2",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = ["environment", "matmul_peak", "throughput", "augment", "imagefolder_epoch"]
    assert [line["kind"] for line in lines] == kinds + ["goal"] * 9  # 4 as before, 2 augment, 3 folder
    environment, augment, folder = lines[0], lines[3], lines[4]
    settings = ("augment_repeats", "photos", "imagefolder_epochs")
    assert [environment[key] for key in settings] == [2, 12, 2]

    # The augmentation's share of LeNet's step (resnet18 is not in --models: its goal is skipped).
    assert (augment["model"], augment["input_size"], augment["batch_size"]) == ("lenet", [28, 28], 128)
    assert (augment["augment"], augment["crop"], augment["flip"]) == ("standard", "resized", True)
    assert len(augment["none_runs"]) == len(augment["augment_runs"]) == 2
    for field in ("none_images_per_s", "augment_images_per_s", "draw_ms_per_batch", "draw_fraction"):
        assert augment[field] > 0, field
    assert augment["none_images_per_s"] == sum(augment["none_runs"]) / 2  # the median of two
    pairs = zip(augment["none_runs"], augment["augment_runs"], strict=True)
    shares = [1 - augmented / plain for plain, augmented in pairs]
    assert augment["share_runs"] == [round(share, 4) for share in shares]
    assert augment["share"] == round(sum(shares) / 2, 4)  # the median of two pairs

    # ResNet-18@96 epochs on the JPEG folder: cnnlab in memory and streamed, the reference, the step.
    assert (folder["model"], folder["input_size"], folder["batch_size"]) == ("resnet18", [96, 96], 128)
    assert (folder["train_images"], folder["val_images"], folder["epochs"]) == (12, 4, 2)
    assert folder["mean_file_kb"] > 20 and folder["cnnlab_workers"] >= 1 and folder["reference_workers"] == 1
    for side in ("in_memory", "streamed", "reference"):
        figures = folder[side]
        for field in ("first_epoch_seconds", "cold_seconds", "warm_seconds", "cold_images_per_s"):
            assert figures[field] > 0, (side, field)
        assert figures["setup_seconds"] >= 0 and len(figures["warm_runs"]) == 1
        assert (
            abs(figures["cold_seconds"] - figures["setup_seconds"] - figures["first_epoch_seconds"]) < 0.002
        )
        assert abs(figures["warm_images_per_s"] * figures["warm_seconds"] / 12 - 1) < 0.01, side  # rounded
    assert folder["step_images_per_s"] > 0 and len(folder["step_runs"]) == 1
    warm = folder["in_memory"]["warm_images_per_s"]
    assert folder["in_memory_vs_step"] == round(warm / folder["step_images_per_s"], 3)
    assert folder["in_memory_vs_reference"] == round(warm / folder["reference"]["warm_images_per_s"], 2)

    goals = lines[5:]
    lenet_goal, resnet_goal = goals[4:6]
    assert lenet_goal["value"] == augment["share"] and lenet_goal["target"] == 0.05
    assert lenet_goal["status"] == ("pass" if augment["share"] < 0.05 else "fail")
    assert resnet_goal["goal"].startswith("cpu: resnet18@96 augment") and resnet_goal["status"] == "skipped"
    ratios = ("in_memory_vs_step", "in_memory_vs_reference", "streamed_vs_reference")
    for line, ratio, target in zip(goals[6:], ratios, (0.9, 3.0, 1.5), strict=True):
        assert "imagefolder" in line["goal"] and (line["value"], line["target"]) == (folder[ratio], target)
        assert line["status"] == ("pass" if folder[ratio] >= target else "fail")
