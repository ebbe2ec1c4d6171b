"""Training-time augmentation of preprocessed batches on their device, with a new draw for every sample:
random crops (padded or resized) and flips, random erasing, mixup and cutmix with soft targets.

torchvision.transforms.v2 draws one set of parameters per call, so every sample of a batch would get
the same crop (and MixUp/CutMix one λ per batch); here each sample has its own, applied in one batched
op. The draws are made on the CPU once per epoch, for every sample a rank trains on in it, from (seed,
epoch, rank) alone — a resumed run draws the same ones, two ranks never the same — and each batch takes
its rows as tensors, so a compiled step holds no generator and the step pays no draw.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

CROPS = ("none", "padded", "resized")
_ERASED_AREA = (0.02, 1 / 3)  # random erasing's rectangle, as torchvision's RandomErasing draws it
_ERASED_RATIO = (0.3, 3.3)
_SEPARABLE_UP_TO = 64  # height + width up to which crops are resampled by matmuls (see _resample)


@dataclass(frozen=True)
class Augment:
    """What is done to each training sample; `draw` picks its random parameters, `__call__` applies them."""

    size: tuple[int, int]  # (height, width) of the preprocessed inputs
    num_classes: int
    crop: str  # none | padded (CIFAR-style: a random crop of the zero-padded image) | resized
    padding: int  # crop=padded: pixels of zeros on each side
    scale: tuple[float, float]  # crop=resized: the crop's share of the image area
    ratio: tuple[float, float]  # crop=resized: its aspect ratio in pixels, width / height
    flip: bool  # horizontal, with probability 1/2
    random_erasing: float  # probability of zeroing a random rectangle
    mixup_alpha: float  # λ ~ Beta(α, α); 0: off
    cutmix_alpha: float  # λ ~ Beta(α, α); 0: off. With both on, each mixed sample picks one.
    mix_prob: float  # share of samples mixed, when mixup or cutmix is on

    @property
    def active(self) -> bool:
        """Whether it changes anything (the step skips it otherwise)."""
        return self.geometric or self.random_erasing > 0 or self.mixes

    @property
    def geometric(self) -> bool:
        """Whether samples are cropped or flipped."""
        return self.crop != "none" or self.flip

    @property
    def mixes(self) -> bool:
        """Whether targets become soft (mixup or cutmix)."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def draw(self, n: int, seed: int, epoch: int, rank: int = 0) -> dict[str, torch.Tensor]:
        """The random parameters of the `n` samples a rank trains on in an epoch, a row each in training
        order (batch b takes rows b·batch_size onwards): a pure function of its arguments (CPU tensors)."""
        rng = np.random.default_rng([seed, epoch, rank])
        height, width = self.size
        draws = {}
        if self.geometric:
            theta = np.zeros((n, 2, 3))
            theta[:, 0, 0] = theta[:, 1, 1] = 1.0
            if self.crop == "padded":  # whole-pixel shifts in [-padding, padding], in grid units
                shifts = rng.integers(-self.padding, self.padding + 1, size=(n, 2))
                theta[:, 0, 2] = 2 * shifts[:, 0] / width
                theta[:, 1, 2] = 2 * shifts[:, 1] / height
            elif self.crop == "resized":
                area = rng.uniform(*self.scale, size=n)
                aspect = np.exp(rng.uniform(*np.log(self.ratio), size=n))
                # The crop's width and height as shares of the image's; a crop that would not fit is
                # clipped to the image (torchvision retries instead, then falls back to a centre crop).
                # (aspect is of pixels: a non-square image's shares differ by its own aspect.)
                crop_w = np.minimum(np.sqrt(area * aspect * height / width), 1.0)
                crop_h = np.minimum(np.sqrt(area / aspect * width / height), 1.0)
                theta[:, 0, 0], theta[:, 1, 1] = crop_w, crop_h
                theta[:, 0, 2] = rng.uniform(-1, 1, size=n) * (1 - crop_w)
                theta[:, 1, 2] = rng.uniform(-1, 1, size=n) * (1 - crop_h)
            if self.flip:
                theta[:, 0, 0] *= np.where(rng.random(n) < 0.5, -1.0, 1.0)
            draws["theta"] = torch.from_numpy(theta).float()
        if self.random_erasing > 0:
            area = rng.uniform(*_ERASED_AREA, size=n) * height * width
            aspect = np.exp(rng.uniform(*np.log(_ERASED_RATIO), size=n))
            box_h = np.minimum(np.round(np.sqrt(area / aspect)), height)
            box_w = np.minimum(np.round(np.sqrt(area * aspect)), width)
            box_h[rng.random(n) >= self.random_erasing] = 0  # not erased
            draws["erase"] = _boxes(rng, box_h, box_w, height, width)
        if self.mixes:
            alphas = [a for a in (self.mixup_alpha, self.cutmix_alpha) if a > 0]
            use_cutmix = rng.random(n) < 0.5 if len(alphas) == 2 else np.full(n, self.cutmix_alpha > 0)
            alpha = np.where(use_cutmix, self.cutmix_alpha, self.mixup_alpha)
            lam = rng.beta(np.maximum(alpha, 1e-6), np.maximum(alpha, 1e-6))
            lam[rng.random(n) >= self.mix_prob] = 1.0  # not mixed
            # CutMix pastes a box of (1 − λ) of the area from the partner, clipped to the image; λ
            # becomes the share of the image that stays the sample's own.
            side = np.sqrt(1 - lam)
            box_h = np.where(use_cutmix, np.round(side * height), 0)
            box_w = np.where(use_cutmix, np.round(side * width), 0)
            centre_y, centre_x = rng.integers(0, height, size=n), rng.integers(0, width, size=n)
            top, left = np.clip(centre_y - box_h // 2, 0, height), np.clip(centre_x - box_w // 2, 0, width)
            bottom = np.clip(centre_y + box_h - box_h // 2, 0, height)
            right = np.clip(centre_x + box_w - box_w // 2, 0, width)
            pasted = (bottom - top) * (right - left) / (height * width)
            lam = np.where(use_cutmix, 1 - pasted, lam)
            draws["cut"] = torch.from_numpy(np.stack([top, bottom, left, right], axis=1)).long()
            draws["mixup"] = torch.from_numpy(np.where(use_cutmix, 1.0, lam)).float()
            draws["lam"] = torch.from_numpy(lam).float()
        return draws

    def __call__(
        self, inputs: torch.Tensor, labels: torch.Tensor, draws: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented inputs and the targets to train on: `labels`, or class probabilities when mixing."""
        x = inputs
        if "theta" in draws:
            # Nearest for whole-pixel shifts and flips: each output pixel is an input pixel, exactly.
            x = _resample(x, draws["theta"].to(x.dtype), nearest=self.crop != "resized")
        if "erase" in draws:
            x = x.masked_fill(_inside(draws["erase"], x.shape[-2:]), 0.0)
        if "lam" not in draws:
            return x, labels
        # Each sample is mixed with the one before it in the (shuffled) batch.
        partner = x.roll(1, dims=0)
        mixup = draws["mixup"].view(-1, 1, 1, 1).to(x.dtype)
        x = torch.where(_inside(draws["cut"], x.shape[-2:]), partner, mixup * x + (1 - mixup) * partner)
        lam = draws["lam"].view(-1, 1)
        one_hot = F.one_hot(labels, self.num_classes).float()
        return x, lam * one_hot + (1 - lam) * one_hot.roll(1, dims=0)


def _resample(x: torch.Tensor, theta: torch.Tensor, nearest: bool) -> torch.Tensor:
    """`grid_sample` of each sample at its (N, 2, 3) scale-and-shift `theta`, zeros outside the image."""
    height, width = x.shape[-2:]
    if height + width > _SEPARABLE_UP_TO:
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        mode = "nearest" if nearest else "bilinear"
        return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
    # Without rotation the sampling is separable: rows and columns are each resampled by an (N, out,
    # in) interpolation matrix. These two batched matmuls beat grid_sample's per-pixel gathers on small
    # images but cost O(height + width) per pixel, so large ones keep grid_sample (docs/performance.md).
    rows = _interpolation(theta[:, 1, 1], theta[:, 1, 2], height, nearest)
    cols = _interpolation(theta[:, 0, 0], theta[:, 0, 2], width, nearest)
    return rows.unsqueeze(1) @ x @ cols.transpose(1, 2).unsqueeze(1)


def _interpolation(scale: torch.Tensor, shift: torch.Tensor, length: int, nearest: bool) -> torch.Tensor:
    """(N, length, length) weights of the input pixels each output pixel samples along one axis
    (align_corners=False coordinates, as affine_grid's); the pixels beyond the edge weigh nothing."""
    pixels = torch.arange(length, dtype=scale.dtype, device=scale.device)
    centre = (length - 1) / 2
    source = scale[:, None] * (pixels - centre) + centre + shift[:, None] * (length / 2)
    if nearest:
        source = source.round()
    return (1 - (source[:, :, None] - pixels).abs()).clamp(min=0)


def _boxes(rng: np.random.Generator, box_h: np.ndarray, box_w: np.ndarray, height: int, width: int):
    """(top, bottom, left, right) of boxes of the given sizes, placed uniformly inside the image."""
    top = np.floor(rng.random(len(box_h)) * (height - box_h + 1))
    left = np.floor(rng.random(len(box_w)) * (width - box_w + 1))
    return torch.from_numpy(np.stack([top, top + box_h, left, left + box_w], axis=1)).long()


def _inside(boxes: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """(N, 1, H, W) mask of the pixels inside each sample's (top, bottom, left, right) box."""
    rows = torch.arange(size[0], device=boxes.device).view(1, -1, 1)
    cols = torch.arange(size[1], device=boxes.device).view(1, 1, -1)
    top, bottom, left, right = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    return ((rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)).unsqueeze(1)
