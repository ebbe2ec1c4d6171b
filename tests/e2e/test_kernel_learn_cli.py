"""`cnnlab kernel-learn` (d2l 7.2.4) end to end: the book's run, kernels recovered or diverging, the
scratch and torch layers agreeing."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main
from cnnlab.kernels import (
    gaussian_kernel,
)


def learn(tmp_path: Path, *overrides: str) -> tuple[int, dict]:
    """Run kernel-learn in-process into tmp_path/run; (exit code, result.json)."""
    run_dir = tmp_path / "run"
    try:
        code = main(["kernel-learn", *overrides, f"hydra.run.dir={run_dir}"])
    except SystemExit as stop:  # errors raised while running (divergence) leave through SystemExit
        code = stop.code
    result = run_dir / "result.json"
    return code, json.loads(result.read_text()) if result.exists() else {}


def assert_kernel(got: list, expected: list, atol: float) -> None:
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), atol=atol, rtol=0)


# --- the command -------------------------------------------------------------------------------------


def test_default_run_reproduces_the_book(tmp_path):
    """Bare `cnnlab kernel-learn`, as a user runs it: the book's log and a kernel near [1, −1]."""
    done = subprocess.run(
        [sys.executable, "-m", "cnnlab", "kernel-learn"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert [line.split(",")[0] for line in epoch_lines] == [f"epoch {e}" for e in (2, 4, 6, 8, 10)]
    losses = [float(line.split("loss ")[1]) for line in epoch_lines]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.2
    assert lines[-3].endswith(": recovered")
    [result_file] = (tmp_path / "outputs" / "kernel-learn").glob("*/*/result.json")
    result = json.loads(result_file.read_text())
    assert result["status"] == "recovered" and result["target_kernel"] == [[1.0, -1.0]]
    assert max(abs(a - b) for a, b in zip(result["learned_kernel"][0], [1.0, -1.0], strict=True)) < 0.1
    assert len(result["losses"]) == 10 and result["losses"][1] == pytest.approx(losses[0], abs=1e-3)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(result_file.parent)).Reload()
    assert [e.step for e in events.Scalars("loss")] == list(range(1, 11))
    assert set(events.Tags()["images"]) == {"kernel/learned", "kernel/target"}


def test_second_derivative_is_recovered_with_a_1x3_kernel(tmp_path):
    code, result = learn(tmp_path, "target=second_derivative", "kernel_shape=[1,3]", "epochs=30")
    assert code == 0 and result["status"] == "recovered"
    assert_kernel(result["learned_kernel"], [[1.0, -2.0, 1.0]], atol=0.05)


def test_gaussian_blur_is_recovered_on_noise(tmp_path):
    code, result = learn(tmp_path, "target=gaussian", "image=noise", "lr=0.01", "epochs=60")
    assert code == 0 and result["status"] == "recovered" and result["identifiable"]
    learned, target = torch.tensor(result["learned_kernel"]), gaussian_kernel(3, 1.0)
    assert (learned - target).abs().max() < 0.01


def test_a_larger_kernel_learns_zeros_around_the_target(tmp_path):
    code, result = learn(tmp_path, "kernel_shape=[3,3]", "image=noise", "lr=0.01", "epochs=80")
    assert code == 0 and result["status"] == "recovered"
    expected = [[0.0, 0.0, 0.0], [1.0, -1.0, 0.0], [0.0, 0.0, 0.0]]
    assert result["target_kernel"] == expected
    assert_kernel(result["learned_kernel"], expected, atol=0.05)


def test_3x3_kernel_on_the_books_image_diverges_with_a_suggestion(tmp_path, capsys):
    # The book's exercise: a 3×3 kernel on the stripes; here λ_max predicts gd diverges above lr 0.0244.
    code, result = learn(tmp_path, "kernel_shape=[3,3]", "epochs=20")
    out, err = capsys.readouterr()
    assert code == 3
    assert "lr=0.03 is above 0.0244" in out and "cannot determine a 3×3 kernel" in out
    [line] = err.splitlines()
    assert line.startswith("cnnlab kernel-learn: error: diverged at epoch ")
    assert "use a smaller one, e.g. lr=0.02" in line
    assert result["status"] == "diverged" and result["error"] in line
    assert result["losses"][-1] > 100 * result["losses"][0]


def test_a_non_finite_loss_is_divergence(tmp_path, capsys):
    code, result = learn(tmp_path, "lr=1e30", "epochs=5", "log_every=1")
    assert code == 3 and result["status"] == "diverged"
    assert "diverged at epoch" in capsys.readouterr().err
    assert None in result["losses"] or result["losses"][-1] > 100 * result["losses"][0]


def test_a_target_the_image_cannot_show_is_warned_about_before_training(tmp_path, capsys):
    code, result = learn(tmp_path, "target=edge_horizontal", "lr=0.01")
    out = capsys.readouterr().out
    warning = out.index("warning: corr2d(image, target) is all zeros")
    assert warning < out.index("epoch 2,")
    assert "patches span only 1 of 2 dimensions" in out
    assert code == 0 and result["status"] == "not recovered" and not result["identifiable"]
    assert "not recovered — the image does not determine the kernel" in out


@pytest.mark.parametrize("options", [(), ("bias=true", "optim=sgd", "lr=0.005"), ("optim=adam", "lr=0.1")])
def test_scratch_and_torch_layers_give_the_same_losses(tmp_path, options):
    _, scratch = learn(tmp_path / "scratch", "impl=scratch", "seed=5", *options)
    _, torch_ = learn(tmp_path / "torch", "impl=torch", "seed=5", *options)
    assert scratch["losses"] == pytest.approx(torch_["losses"], rel=1e-5)
    assert_kernel(scratch["learned_kernel"], torch_["learned_kernel"], atol=1e-5)


def test_custom_matrix_target_and_png_image(tmp_path):
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (12, 10), "white")
    ImageDraw.Draw(picture).ellipse((2, 1, 9, 8), fill=(200, 30, 30))
    picture.save(tmp_path / "disk.png")
    code, result = learn(
        tmp_path,
        "target=[[1,0],[0,-1]]",
        f"image={tmp_path / 'disk.png'}",
        "optim=adam",
        "lr=0.05",
        "epochs=150",
    )
    assert code == 0 and result["image"] == "10×12 disk.png" and result["target"] == "custom"
    assert_kernel(result["learned_kernel"], [[1.0, 0.0], [0.0, -1.0]], atol=0.1)


# --- one-line errors, exit code 2 --------------------------------------------------------------------


def test_bad_image_path_from_the_cli(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "cnnlab", "kernel-learn", "image=missing.png"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "cnnlab kernel-learn: error: image file 'missing.png' not found; give an existing PNG/JPEG path"
    )
    assert not (tmp_path / "outputs").exists()  # validated before any run directory is made


def test_the_books_3x3_exercise_at_lr_1e_2_diverges(tmp_path, capsys):
    # Notebook 000's exercise: the stripes plus their 1- and 2-column shifts, a 3×3 kernel, lr 1e-2,
    # 16 epochs — the book's loss exploded to 1e38. Gradient descent is stable only below 0.00198 here.
    code, result = learn(tmp_path, "image=stripes_sum", "kernel_shape=[3,3]", "lr=0.01", "epochs=16")
    _, err = capsys.readouterr()
    assert code == 3 and result["status"] == "diverged"
    [line] = err.splitlines()
    assert line.startswith("cnnlab kernel-learn: error: diverged at epoch ")
    assert "smaller" in line
