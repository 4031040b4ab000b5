"""Two SSL views of a whole batch at once, on the device the model runs on.

`BatchedTwoViews` takes decoded uint8 images (B, C, H, W) and their sample indices and returns
both views (B, 2, C, S, S), normalised, with the recipe of `build_pretrain_transform`: random
resized crop, horizontal flip, colour jitter (p=0.8, ops in a random order per sample),
grayscale (p=0.2, three channels) and, for the "imagenet" recipe, Gaussian blur (p=0.5).

Every random parameter is a counter-based hash of (seed, epoch, sample index, view, draw), so a
sample's views depend neither on the other samples of its batch, nor on the number of processes,
nor on where a run resumed, exactly as with the per-image `TwoViewTransform`. Parameters are drawn
on the CPU (a few hundred numbers per batch) and the pixels are transformed on the images' device.

Why not kornia's augmentation modules or torchvision v2 on batches: torchvision v2 applies one set
of parameters to a whole batch, and kornia's modules draw per-sample parameters from the global
RNG of the batch, so a sample's view would depend on its batch. The pixel work uses one
`grid_sample` for crop + resize + flip (faster on CPU than kornia's `crop_and_resize` or
torchvision's `roi_align`, and the same bilinear sampling), torch blends for brightness, contrast
and saturation (torchvision's definitions), and kornia for hue and the per-sample Gaussian blur.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import kornia
import torch
import torch.nn.functional as F

from .transforms import _check_args, blur_kernel_size, recipe_crop_scale

_MASK32 = 0xFFFFFFFF
# Odd multipliers below 2**31: a 32-bit value times one stays below 2**63 (no int64 overflow).
_MIX_1, _MIX_2 = 0x7FEB352D, 0x68E31DA5
_LUMA = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
_CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes before its fallback
_RATIO = (3 / 4, 4 / 3)
_JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}
_JITTER_P, _GRAYSCALE_P, _BLUR_P, _BLUR_SIGMA = 0.8, 0.2, 0.5, (0.1, 2.0)
# Uniform draws per view: crop attempts (2 each), crop position (2), flip, jitter gate, four jitter
# factors, four order keys, grayscale gate, blur gate, blur sigma.
_DRAWS = 2 * _CROP_ATTEMPTS + 2 + 1 + 1 + 4 + 4 + 1 + 1 + 1


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xorshift-multiply rounds) of int64 values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * _MIX_1) & _MASK32
    x = x ^ (x >> 15)
    x = (x * _MIX_2) & _MASK32
    return x ^ (x >> 16)


def per_sample_uniforms(seed: int, epoch: int, indices: torch.Tensor, view: int, num: int) -> torch.Tensor:
    """(B, num) float32 uniforms in [0, 1), a pure function of (seed, epoch, index, view, draw).

    Args:
        seed: Run seed (>= 0).
        epoch: Epoch (>= 0).
        indices: (B,) sample indices (>= 0).
        view: 0 or 1 (the two SSL views; BCL's RandAugment draws for them use 2 and 3).
        num: Draws per sample.
    """
    keys = [seed & _MASK32, seed >> 32, epoch & _MASK32, view]
    state = torch.zeros((), dtype=torch.int64)
    for key in keys:
        state = _mix32(state ^ key)
    indices = indices.to("cpu", torch.int64)
    state = _mix32(_mix32(state ^ (indices & _MASK32)) ^ (indices >> 32))  # (B,)
    draws = torch.arange(num, dtype=torch.int64)
    bits = _mix32((_mix32(state[:, None] ^ draws) + 0x9E3779B9) & _MASK32)  # (B, num)
    return (bits >> 8).float() / float(1 << 24)


def crop_boxes(uniforms: torch.Tensor, height: int, width: int, scale: tuple[float, float]) -> torch.Tensor:
    """torchvision's RandomResizedCrop boxes, vectorised: (B, 4) float (top, left, height, width).

    Args:
        uniforms: (B, 2 * 10 + 2) draws: area and log-ratio of 10 attempts, then the position.
        height, width: Input size.
        scale: Range of the crop's area as a fraction of the image.
    """
    attempts = uniforms[:, : 2 * _CROP_ATTEMPTS].view(-1, _CROP_ATTEMPTS, 2).double()
    area = height * width * (scale[0] + (scale[1] - scale[0]) * attempts[..., 0])
    log_low, log_high = math.log(_RATIO[0]), math.log(_RATIO[1])
    aspect = torch.exp(log_low + (log_high - log_low) * attempts[..., 1])
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # (B, 10)
    first = torch.where(valid.any(1), valid.float().argmax(1), -1)  # first valid attempt, or -1
    rows = torch.arange(len(first))
    h, w = h[rows, first.clamp_min(0)], w[rows, first.clamp_min(0)]
    fallback_h, fallback_w = _fallback_size(height, width)
    h = torch.where(first >= 0, h, float(fallback_h))
    w = torch.where(first >= 0, w, float(fallback_w))
    position = uniforms[:, 2 * _CROP_ATTEMPTS : 2 * _CROP_ATTEMPTS + 2].double()
    top = torch.where(first >= 0, torch.floor(position[:, 0] * (height - h + 1)), (height - h) // 2)
    left = torch.where(first >= 0, torch.floor(position[:, 1] * (width - w + 1)), (width - w) // 2)
    return torch.stack([top, left, h, w], dim=1).float()


def _fallback_size(height: int, width: int) -> tuple[int, int]:
    """torchvision's central crop when no attempt fits: the whole image, clipped to the ratio range."""
    in_ratio = width / height
    if in_ratio < _RATIO[0]:
        return int(round(width / _RATIO[0])), width
    if in_ratio > _RATIO[1]:
        return height, int(round(height * _RATIO[1]))
    return height, width


def resized_crops(images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear crop + resize to (size, size) + optional horizontal flip, per sample, in one pass.

    Args:
        images: (B, C, H, W) float images.
        boxes: (B, 4) (top, left, height, width) in pixels.
        flips: (B,) bool, flip horizontally.
        size: Output side.
    """
    height, width = images.shape[-2:]
    top, left, box_h, box_w = boxes.to(images.device, torch.float32).unbind(1)
    theta = torch.zeros(len(boxes), 2, 3, device=images.device)
    sign = 1.0 - 2.0 * flips.to(images.device, torch.float32)
    theta[:, 0, 0] = sign * box_w / width
    theta[:, 0, 2] = (2 * left + box_w) / width - 1  # box centre, normalised to [-1, 1]
    theta[:, 1, 1] = box_h / height
    theta[:, 1, 2] = (2 * top + box_h) / height - 1
    grid = F.affine_grid(theta, [len(boxes), images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W): luma for three channels, the image itself for one."""
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(_LUMA, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    factor = factor.view(-1, 1, 1, 1)
    return (factor * images + (1 - factor) * other).clamp_(0, 1)


def _brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (images * factor.view(-1, 1, 1, 1)).clamp_(0, 1)


def _contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, _grayscale(images).mean(dim=(1, 2, 3), keepdim=True), factor)


def _saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, _grayscale(images), factor)


def _hue(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # kornia shifts the hue of an RGB image by an angle in radians; torchvision's factor is a
    # fraction of a turn.
    return kornia.enhance.adjust_hue(images, 2 * math.pi * factor)


_JITTER_OPS = {"brightness": _brightness, "contrast": _contrast, "saturation": _saturation, "hue": _hue}


def _apply_where(images: torch.Tensor, mask: torch.Tensor, op, *args: torch.Tensor) -> None:
    """In place: `op` on the samples where `mask` holds (its extra arguments indexed alike).

    `mask` and `args` are CPU draws, so choosing the rows never waits on the images' device.
    """
    rows = mask.nonzero().squeeze(1)
    if len(rows):
        on_device = rows.to(images.device)
        images[on_device] = op(images[on_device], *(arg[rows].to(images.device) for arg in args))


class BatchedTwoViews:
    """Both SSL views of a batch of decoded images, reproducible from (seed, epoch, sample index).

    Args:
        image_size: Output height and width.
        in_chans: 1 or 3 (the decoded images must have this many channels).
        mean: Per-channel mean (length `in_chans`).
        std: Per-channel std (length `in_chans`).
        recipe: "cifar" or "imagenet" (see `build_pretrain_transform`).
        seed: Run seed, >= 0.
        crop_min_scale: Smallest crop area, in (0, 1]; None: the recipe's.
    """

    def __init__(
        self,
        image_size: int,
        in_chans: int,
        mean: Sequence[float],
        std: Sequence[float],
        recipe: str = "cifar",
        seed: int = 0,
        crop_min_scale: float | None = None,
    ) -> None:
        _check_args(image_size, in_chans, mean, std)
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.scale = recipe_crop_scale(recipe, crop_min_scale)
        self.recipe, self.image_size, self.in_chans, self.seed = recipe, image_size, in_chans, seed
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.jitter_ops = ["brightness", "contrast"] + (["saturation", "hue"] if in_chans == 3 else [])
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the next views for `epoch`."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def __call__(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) uint8 images and (B,) indices -> (B, 2, C, S, S) float32 normalised views."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != self.in_chans:
            raise ValueError(
                f"images must be uint8 of shape (B, {self.in_chans}, H, W), got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        pixels = images.float().div_(255.0)
        views = [self.view(pixels, indices, view) for view in (0, 1)]
        return torch.stack(views, dim=1)

    def view(self, pixels: torch.Tensor, indices: torch.Tensor, view: int) -> torch.Tensor:
        """One view (B, C, S, S) of float images in [0, 1]."""
        draws = per_sample_uniforms(self.seed, self.epoch, indices, view, _DRAWS)  # on the CPU
        crop = 2 * _CROP_ATTEMPTS + 2
        boxes = crop_boxes(draws[:, :crop], pixels.shape[-2], pixels.shape[-1], self.scale)
        out = resized_crops(pixels, boxes, draws[:, crop] < 0.5, self.image_size)
        out = self.jitter(out, draws[:, crop + 1 : crop + 10])
        if self.in_chans == 3:
            gray = _grayscale(out).expand_as(out)
            to_gray = (draws[:, crop + 10] < _GRAYSCALE_P).to(out.device).view(-1, 1, 1, 1)
            out = torch.where(to_gray, gray, out)
        if self.recipe == "imagenet":
            out = self.blur(out, draws[:, crop + 11], draws[:, crop + 12])
        return (out - self.mean.to(out.device)) / self.std.to(out.device)

    def jitter(self, images: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """In place: colour jitter with probability 0.8, ops in a random order per sample (as torchvision)."""
        applied = draws[:, 0] < _JITTER_P
        factors = {}
        for column, name in enumerate(self.jitter_ops, start=1):
            spread = _JITTER[name]
            low, high = (-spread, spread) if name == "hue" else (1 - spread, 1 + spread)
            factors[name] = low + (high - low) * draws[:, column]
        order = draws[:, 5 : 5 + len(self.jitter_ops)].argsort(dim=1)  # a uniform random permutation
        for position in range(len(self.jitter_ops)):
            for op_id, name in enumerate(self.jitter_ops):
                mask = applied & (order[:, position] == op_id)
                _apply_where(images, mask, _JITTER_OPS[name], factors[name])
        return images

    def blur(self, images: torch.Tensor, gate: torch.Tensor, sigma_draw: torch.Tensor) -> torch.Tensor:
        """In place: Gaussian blur with probability 0.5, sigma uniform in [0.1, 2] per sample."""
        kernel = blur_kernel_size(self.image_size)
        sigma = _BLUR_SIGMA[0] + (_BLUR_SIGMA[1] - _BLUR_SIGMA[0]) * sigma_draw

        def gaussian(batch: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
            return kornia.filters.gaussian_blur2d(batch, kernel, sigmas[:, None].expand(-1, 2), "reflect")

        _apply_where(images, gate < _BLUR_P, gaussian, sigma)
        return images

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(image_size={self.image_size}, in_chans={self.in_chans}, "
            f"recipe={self.recipe!r}, seed={self.seed})"
        )
