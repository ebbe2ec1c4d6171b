"""What `cnnlab kernel-learn` learns from: named target kernels, synthetic images, and whether the pair
determines the kernel (identifiability) and how large a gradient step it tolerates."""

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from cnnlab.errors import unknown
from cnnlab.ops import patch_matrix

# Kernels in the book's convention: corr2d(X, [[1, -1]]) is X[i, j] − X[i, j+1].
FIXED_TARGETS: dict[str, list[list[float]]] = {
    "edge_vertical": [[1.0, -1.0]],  # the book's K: vertical edges
    "edge_horizontal": [[1.0], [-1.0]],  # its transpose: horizontal edges
    "diagonal": [[0.0, 1.0], [-1.0, 0.0]],  # X[i, j+1] − X[i+1, j]: edges along the main diagonal
    "second_derivative": [[1.0, -2.0, 1.0]],  # central second difference along a row
    "laplacian": [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]],
}
TARGETS = (*FIXED_TARGETS, "gaussian", "directional")
IMAGES = ("stripes", "stripes_sum", "diagonal", "checkerboard", "noise")


def gaussian_kernel(size: int, sigma: float) -> Tensor:
    """A size×size Gaussian blur kernel of standard deviation sigma, summing to 1."""
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    profile = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = profile[:, None] * profile[None, :]
    return kernel / kernel.sum()


def directional_edge_kernel(v: tuple[float, float]) -> Tensor:
    """The 2×2 kernel of −(derivative along v) (exercise 7.2.2): it fires on edges orthogonal to v.

    v = (v_x, v_y) with x along columns and y down the rows, normalized to unit length; forward
    differences in the book's sign convention, so v = (1, 0) gives [[1, −1], [0, 0]].
    """
    norm = math.hypot(*v)
    v_x, v_y = v[0] / norm, v[1] / norm
    return torch.tensor([[v_x + v_y, -v_x], [-v_y, 0.0]]) + 0.0  # + 0.0 turns −0 into 0 for printing


def embed(kernel: Tensor, shape: tuple[int, int]) -> Tensor:
    """`kernel` zero-padded to a larger `shape`, centred (extra row/column at the bottom/right)."""
    top, left = (shape[0] - kernel.shape[0]) // 2, (shape[1] - kernel.shape[1]) // 2
    out = kernel.new_zeros(shape)
    out[top : top + kernel.shape[0], left : left + kernel.shape[1]] = kernel
    return out


def synthetic_image(name: str, size: tuple[int, int], generator: torch.Generator) -> Tensor:
    """One of IMAGES at size (height, width): the book's stripes (or their exercise sum), a diagonal
    edge, a checkerboard or noise."""
    h, w = size
    i, j = torch.arange(h)[:, None], torch.arange(w)[None, :]
    if name == "stripes":  # the book's 6×8 image: ones with columns 2..5 set to zero
        return ((j < w // 4) | (j >= w - w // 4)).float().expand(h, w).clone()
    if name == "stripes_sum":  # the 7.2 exercise's input: stripes + stripes shifted by 1 and 2 columns
        stripes = synthetic_image("stripes", size, generator)
        return stripes + stripes.roll(1, dims=1) + stripes.roll(2, dims=1)
    if name == "diagonal":  # ones on and above the main diagonal
        return (j >= i).float()
    if name == "checkerboard":  # one-pixel squares
        return ((i + j) % 2).float()
    if name == "noise":  # i.i.d. standard normal pixels: every direction of kernel space gets seen
        return torch.randn(size, generator=generator)
    raise ValueError(unknown("image", name, list(IMAGES)))


def read_grayscale(path: Path) -> Tensor:
    """A PNG/JPEG file as an (h, w) float tensor in [0, 1] (converted to grayscale)."""
    from PIL import Image

    with Image.open(path) as image:
        gray = image.convert("L")
        pixels = torch.frombuffer(bytearray(gray.tobytes()), dtype=torch.uint8)
        return pixels.reshape(gray.height, gray.width).float() / 255


@dataclass(frozen=True)
class Identifiability:
    """How well an image pins down a kernel: the least-squares system patches @ kernel (+ bias) = output."""

    unknowns: int  # kernel entries (+1 with a bias)
    rank: int  # rank of the patch matrix: how many kernel directions the image shows
    target_output_zero: bool  # corr2d(image, target) is all zeros
    curvature: float  # λ_max(PᵀP): the loss Σ(P k − y)² has Hessian 2 PᵀP

    @property
    def identifiable(self) -> bool:
        """Exactly one kernel reproduces the target output."""
        return self.rank == self.unknowns

    def stable_lr(self, momentum: float) -> float:
        """The rate above which (heavy-ball) gradient descent on the summed squared error diverges."""
        # A step of rate lr multiplies the error along the top eigenvector by 1 − 2·lr·λ_max (plus the
        # momentum term); it stays below 1 in size only while lr < (1 + momentum) / λ_max.
        return (1 + momentum) / self.curvature if self.curvature > 0 else math.inf


def identifiability(image: Tensor, target: Tensor, bias: bool) -> Identifiability:
    """Analyse what `image` reveals about a kernel of target's shape (and a bias when `bias`)."""
    P = patch_matrix(image.double(), target.shape)
    output = P @ target.double().reshape(-1)
    if bias:
        P = torch.cat([P, P.new_ones(P.shape[0], 1)], dim=1)
    return Identifiability(
        unknowns=P.shape[1],
        rank=int(torch.linalg.matrix_rank(P).item()),
        target_output_zero=bool((output.abs() < 1e-9).all()),
        curvature=torch.linalg.eigvalsh(P.T @ P)[-1].item(),
    )
