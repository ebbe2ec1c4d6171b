"""benchmarks/throughput.py end to end on a tiny setting: it runs both pipelines and prints its JSON lines."""

import json
import subprocess
import sys
from pathlib import Path

import torch

from cnnlab.training.device import resolve_channels_last, resolve_precision

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"
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
        "--skip-epoch", cwd=tmp_path,
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
        "--epoch-repeats", "3", cwd=tmp_path,
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
