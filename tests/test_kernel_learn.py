"""`cnnlab kernel-learn` (d2l 7.2.4) and its building blocks in cnnlab.kernels."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnlab.cli import main
from cnnlab.kernels import (
    directional_edge_kernel,
    embed,
    gaussian_kernel,
    identifiability,
    read_grayscale,
    synthetic_image,
)
from cnnlab.ops import corr2d


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


def stripes() -> torch.Tensor:
    return synthetic_image("stripes", (6, 8), torch.Generator())


# --- the building blocks -----------------------------------------------------------------------------


def test_stripes_is_the_books_image():
    X = torch.ones(6, 8)
    X[:, 2:6] = 0
    assert torch.equal(stripes(), X)


def test_gaussian_kernel_matches_the_notebook():
    kernel = gaussian_kernel(3, 1.0)
    assert kernel.sum().item() == pytest.approx(1.0)
    expected = torch.tensor([[0.0751, 0.1238, 0.0751], [0.1238, 0.2042, 0.1238], [0.0751, 0.1238, 0.0751]])
    torch.testing.assert_close(kernel, expected, atol=1e-4, rtol=0)


def test_directional_kernel_sees_edges_orthogonal_to_v_only():
    assert directional_edge_kernel((1.0, 0.0)).tolist() == [[1.0, -1.0], [0.0, 0.0]]
    assert "-0" not in str(directional_edge_kernel((1.0, 0.0)).tolist())
    for v in [(1.0, 0.0), (0.0, 2.0), (3.0, -1.0)]:
        K = directional_edge_kernel(v)
        # A ramp that rises along v is "all edge" across v; one rising across v has no edge along v.
        i, j = torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij")
        along, across = v[0] * j + v[1] * i, -v[1] * j + v[0] * i
        assert corr2d(across, K).abs().max() < 1e-5
        torch.testing.assert_close(corr2d(along, K), torch.full((5, 5), -math.hypot(*v)))


def test_embed_centres_the_target_in_a_larger_kernel():
    assert embed(torch.tensor([[1.0, -1.0]]), (3, 3)).tolist() == [[0, 0, 0], [1, -1, 0], [0, 0, 0]]


def test_identifiability_of_the_books_cases():
    K = torch.tensor([[1.0, -1.0]])
    book = identifiability(stripes(), K, bias=False)
    assert book.identifiable and not book.target_output_zero
    assert book.stable_lr(0.0) == pytest.approx(1 / 30)  # λ_max(PᵀP) = 30: lr 3e-2 converges
    transposed = identifiability(stripes(), K.T, bias=False)  # the book's corr2d(X.T, K) = 0 case
    assert transposed.target_output_zero and (transposed.rank, transposed.unknowns) == (1, 2)
    wide = identifiability(stripes(), embed(K, (3, 3)), bias=False)
    assert (wide.rank, wide.unknowns) == (3, 9)
    noise = identifiability(synthetic_image("noise", (6, 8), torch.Generator().manual_seed(0)), K, True)
    assert noise.identifiable and noise.unknowns == 3


def test_read_grayscale_reads_a_png(tmp_path):
    from PIL import Image

    Image.new("RGB", (5, 3), (255, 255, 255)).save(tmp_path / "white.png")
    image = read_grayscale(tmp_path / "white.png")
    assert image.shape == (3, 5) and torch.equal(image, torch.ones(3, 5))


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


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("kernel_shape=[7,7]", "the 7×7 kernel is larger than the 6×8 image"),
        ("image_size=[4,1]", "the 1×2 kernel is larger than the 4×1 image"),
        ("target=[[1,0],[1]]", "target=[[1, 0], [1]] is not a matrix: give equal-length rows of numbers"),
        ("target=[[1,x]]", "is not a matrix"),
        ("target=[]", "target=[] is not a matrix"),
        (
            "target=lapacian",
            "unknown target 'lapacian' (did you mean laplacian?); choose one of: edge_vertical",
        ),
        ("image=checkboard", "unknown image 'checkboard' (did you mean checkerboard?)"),
        ("image=.", "image '.' is a directory"),
        (
            "kernel_shape=[1,1]",
            "kernel_shape=[1, 1] cannot hold the 1×2 target; use kernel_shape=[1,2] or null",
        ),
        ("kernel_shape=3", "kernel_shape must be [height, width]"),
        ("lr=0", "lr must be a number > 0, got 0"),
        ("epochs=0", "epochs must be an integer ≥ 1"),
        ("optim=rmsprop", "optim='rmsprop' is not one of: gd, sgd, adam"),
        ("impl=jax", "impl='jax' is not one of: scratch, torch"),
        ("gaussian.sigma=0", "gaussian.sigma must be a number > 0"),
        ("direction=[0,0]", "direction must be a nonzero vector"),
        ("bias=maybe", "bias must be true or false"),
        ("momentum=1.5", "momentum must be a number ≥ 0 and ≤ 0.999"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, override, message):
    code = main(["kernel-learn", override, f"hydra.run.dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err
    assert err.startswith("cnnlab kernel-learn: error: ")


def test_an_unreadable_image_file(tmp_path, capsys):
    (tmp_path / "fake.png").write_text("not an image")
    assert main(["kernel-learn", f"image={tmp_path / 'fake.png'}"]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_the_books_3x3_exercise_at_lr_1e_2_diverges(tmp_path, capsys):
    # Notebook 000's exercise: the stripes plus their 1- and 2-column shifts, a 3×3 kernel, lr 1e-2,
    # 16 epochs — the book's loss exploded to 1e38. Gradient descent is stable only below 0.00198 here.
    code, result = learn(tmp_path, "image=stripes_sum", "kernel_shape=[3,3]", "lr=0.01", "epochs=16")
    _, err = capsys.readouterr()
    assert code == 3 and result["status"] == "diverged"
    [line] = err.splitlines()
    assert line.startswith("cnnlab kernel-learn: error: diverged at epoch ")
    assert "smaller" in line
