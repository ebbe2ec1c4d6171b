"""The building blocks of `cnnlab kernel-learn` (d2l 7.2.4) in cnnlab.kernels, and the command's
one-line errors for bad options."""

import math

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


# --- one-line errors, exit code 2 --------------------------------------------------------------------


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
