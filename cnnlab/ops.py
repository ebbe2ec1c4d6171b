"""The book's reference operations of chapter 7, written from scratch and vectorized (no loop over pixels).

Each one matches torch.nn.functional (tests check both on many random shapes) but stays as close to
d2l's code as a vectorized version can: read these to see what a convolution or a pooling layer does.
"""

import torch
from torch import Tensor, nn

Size = int | tuple[int, int]


def _pair(value: Size) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def conv_output_shape(n: Size, k: Size, p: Size, s: Size) -> tuple[int, int]:
    """Output (height, width) of an n input, k kernel, p padding per side, s stride: ⌊(n − k + 2p + s)/s⌋."""
    return tuple(
        (n_ - k_ + 2 * p_ + s_) // s_ for n_, k_, p_, s_ in zip(*map(_pair, (n, k, p, s)), strict=True)
    )


def windows(X: Tensor, kernel_size: Size, stride: Size = 1) -> Tensor:
    """Every kernel-sized window of X's last two axes, as a view: (..., out_h, out_w, k_h, k_w)."""
    (k_h, k_w), (s_h, s_w) = _pair(kernel_size), _pair(stride)
    if k_h > X.shape[-2] or k_w > X.shape[-1]:
        raise ValueError(f"a {k_h}×{k_w} window does not fit in a {X.shape[-2]}×{X.shape[-1]} input")
    # unfold strides over the input without copying it: window (i, j) starts at (i·s_h, j·s_w).
    return X.unfold(-2, k_h, s_h).unfold(-2, k_w, s_w)


def corr2d(X: Tensor, K: Tensor) -> Tensor:
    """2-D cross-correlation of an (h, w) input with a (k_h, k_w) kernel (d2l 7.2.1)."""
    return torch.einsum("ijkl,kl->ij", windows(X, K.shape), K)


def patch_matrix(X: Tensor, kernel_size: Size) -> Tensor:
    """The (out_h·out_w, k_h·k_w) matrix of X's flattened windows: corr2d(X, K) = patches @ K.flatten()."""
    patches = windows(X, kernel_size)
    return patches.reshape(-1, patches.shape[-2] * patches.shape[-1])


def kernel_matrix(K: Tensor, input_shape: tuple[int, int]) -> Tensor:
    """The (out_h·out_w, h·w) matrix W with corr2d(X, K).flatten() = W @ X.flatten() (exercise 7.2.4)."""
    (h, w), (k_h, k_w) = input_shape, K.shape
    out_h, out_w = conv_output_shape((h, w), (k_h, k_w), 0, 1)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"a {k_h}×{k_w} kernel does not fit in a {h}×{w} input")
    # Row (i, j) of W holds K at the input positions (i + a, j + b) that output (i, j) reads.
    i, j = torch.meshgrid(torch.arange(out_h), torch.arange(out_w), indexing="ij")
    a, b = torch.meshgrid(torch.arange(k_h), torch.arange(k_w), indexing="ij")
    columns = (i.reshape(-1, 1) + a.reshape(1, -1)) * w + (j.reshape(-1, 1) + b.reshape(1, -1))
    W = K.new_zeros(out_h * out_w, h * w)
    return W.scatter(1, columns, K.reshape(1, -1).expand(out_h * out_w, -1))


def corr2d_matmul(X: Tensor, K: Tensor) -> Tensor:
    """corr2d computed as one matrix product with kernel_matrix(K)."""
    out_shape = conv_output_shape(X.shape, K.shape, 0, 1)
    return (kernel_matrix(K, X.shape) @ X.reshape(-1)).reshape(out_shape)


class Conv2D(nn.Module):
    """A learnable convolutional layer built on corr2d: weight (k_h, k_w) and a scalar bias (d2l 7.2.2)."""

    def __init__(self, kernel_size: Size, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(_pair(kernel_size)))
        self.bias = nn.Parameter(torch.zeros(1)) if bias else None

    def forward(self, X: Tensor) -> Tensor:
        """corr2d(X, weight) + bias for an (h, w) input."""
        Y = corr2d(X, self.weight)
        return Y if self.bias is None else Y + self.bias


def corr2d_multi_in(X: Tensor, K: Tensor) -> Tensor:
    """Cross-correlation of a (c, h, w) input with a (c, k_h, k_w) kernel, summed over channels (7.4.1)."""
    return torch.einsum("cijkl,ckl->ij", windows(X, K.shape[-2:]), K)


def corr2d_multi_in_out(X: Tensor, K: Tensor) -> Tensor:
    """A (c_i, h, w) input with a (c_o, c_i, k_h, k_w) kernel gives a (c_o, out_h, out_w) output (7.4.2)."""
    return torch.einsum("cijkl,ockl->oij", windows(X, K.shape[-2:]), K)


def corr2d_multi_in_out_1x1(X: Tensor, K: Tensor) -> Tensor:
    """A 1×1 convolution is a matrix product: (c_o, c_i) weights times (c_i, h·w) pixels (7.4.3)."""
    c_i, h, w = X.shape
    Y = K.reshape(K.shape[0], c_i) @ X.reshape(c_i, h * w)
    return Y.reshape(K.shape[0], h, w)


def pool2d(X: Tensor, pool_size: Size, mode: str = "max", padding: Size = 0, stride: Size = 1) -> Tensor:
    """Max or average pooling of X's last two axes, each channel on its own (7.5).

    Stride 1 by default as in the book's pool2d (nn.MaxPool2d defaults the stride to the window).
    Like torch, max pooling pads with −∞ and average pooling with zeros that count in the mean.
    """
    if mode not in ("max", "avg"):
        raise ValueError(f"pooling mode must be 'max' or 'avg', got {mode!r}")
    p_h, p_w = _pair(padding)
    fill = float("-inf") if mode == "max" else 0.0
    padded = nn.functional.pad(X, (p_w, p_w, p_h, p_h), value=fill)
    patches = windows(padded, pool_size, stride)
    return patches.amax(dim=(-2, -1)) if mode == "max" else patches.mean(dim=(-2, -1))


def _reflect_indices(n: int, p: int) -> Tensor:
    if p >= n:
        raise ValueError(f"mirror padding {p} needs an input larger than {p}, got {n}")
    # Positions −p … n−1+p folded back into the input without repeating the edge: −1 → 1, n → n−2.
    index = torch.arange(-p, n + p).abs()
    return torch.where(index > n - 1, 2 * (n - 1) - index, index)


def mirror_pad(X: Tensor, padding: Size) -> Tensor:
    """Reflect ("mirror") padding of X's last two axes, the edge not repeated (F.pad mode='reflect')."""
    p_h, p_w = _pair(padding)
    rows = _reflect_indices(X.shape[-2], p_h)
    columns = _reflect_indices(X.shape[-1], p_w)
    return X[..., rows[:, None], columns[None, :]]


def batch_norm(
    X: Tensor,
    gamma: Tensor,
    beta: Tensor,
    moving_mean: Tensor,
    moving_var: Tensor,
    training: bool,
    eps: float = 1e-5,
    momentum: float = 0.1,
) -> Tensor:
    """Batch normalization (d2l 8.5) of a (N, C) or (N, C, H, W) batch, statistics per channel.

    Training normalizes by the batch's mean and biased variance and moves the running statistics
    `momentum` of the way towards them, in place; evaluation normalizes by the running ones. The
    running variance takes the unbiased batch variance, as nn.BatchNorm does (the book's own code
    takes the biased one, so its running statistics differ slightly from PyTorch's)."""
    if not training:
        X_hat = (X - moving_mean) / torch.sqrt(moving_var + eps)
        return gamma * X_hat + beta
    dims = (0,) if X.dim() == 2 else (0, 2, 3)
    mean = X.mean(dim=dims, keepdim=True)
    var = ((X - mean) ** 2).mean(dim=dims, keepdim=True)
    X_hat = (X - mean) / torch.sqrt(var + eps)
    count = X.numel() // X.shape[1]
    with torch.no_grad():
        moving_mean.mul_(1 - momentum).add_(momentum * mean)
        moving_var.mul_(1 - momentum).add_(momentum * var * count / max(count - 1, 1))
    return gamma * X_hat + beta


class BatchNorm(nn.Module):
    """The book's from-scratch BatchNorm layer: learned scale `gamma` and shift `beta`, running
    statistics as buffers; `num_dims` 2 after a linear layer, 4 after a convolution."""

    def __init__(self, num_features: int, num_dims: int) -> None:
        super().__init__()
        shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
        self.gamma = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        self.register_buffer("moving_mean", torch.zeros(shape))
        self.register_buffer("moving_var", torch.ones(shape))

    def forward(self, X: Tensor) -> Tensor:
        return batch_norm(X, self.gamma, self.beta, self.moving_mean, self.moving_var, self.training)
