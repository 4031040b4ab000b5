"""RandAugment for a whole batch with a magnitude, ops and signs of its own for every sample.

BCL's memory-boosted views (`MemoryBoostedTwoViewTransform`) give each sample RandAugment at a
magnitude set by its remembered loss. torchvision's `v2.RandAugment` takes one magnitude per call
and draws its ops from the global RNG, so the per-image path calls it once per image in the loader
workers. `rand_augment` does the same augmentation for a batch at once: torchvision's augmentation
space (the same 14 ops, magnitude tables and signs) and torchvision's float-tensor definition of
every op, with per-sample parameters:

- ShearX / ShearY / TranslateX / TranslateY / Rotate: one `grid_sample` (nearest, zero fill) with
  the per-sample inverse matrices `torchvision.transforms.v2.functional.affine` / `rotate` build;
- Brightness / Color / Contrast: the batched colour jitter's blends (`BatchedTwoViews`), with
  per-sample factors (Color is saturation); Sharpness: a blend with a 3x3 smoothing;
- Posterize / Solarize: per-sample bits and thresholds;
- AutoContrast / Equalize (no magnitude): torchvision's own batched functions.

Ops and signs come from caller-given uniforms (`per_sample_uniforms`), so a sample's augmentation
depends on (seed, epoch, index, view) only, never on its batch. Each op is tested equal to
torchvision's on float tensors (tests/test_batched_randaugment.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from .batched_views import _JITTER_OPS, BatchedTwoViews, _apply_where, per_sample_uniforms
from .transforms import MemoryBoost

# torchvision's RandAugment augmentation space, in its order: (magnitudes of num_bins bins for an
# image of height x width, or None; whether a magnitude takes a random sign).
AUGMENTATION_SPACE: dict[str, tuple[Callable[[int, int, int], torch.Tensor | None], bool]] = {
    "Identity": (lambda bins, height, width: None, False),
    "ShearX": (lambda bins, height, width: torch.linspace(0.0, 0.3, bins), True),
    "ShearY": (lambda bins, height, width: torch.linspace(0.0, 0.3, bins), True),
    "TranslateX": (lambda bins, height, width: torch.linspace(0.0, 150.0 / 331.0 * width, bins), True),
    "TranslateY": (lambda bins, height, width: torch.linspace(0.0, 150.0 / 331.0 * height, bins), True),
    "Rotate": (lambda bins, height, width: torch.linspace(0.0, 30.0, bins), True),
    "Brightness": (lambda bins, height, width: torch.linspace(0.0, 0.9, bins), True),
    "Color": (lambda bins, height, width: torch.linspace(0.0, 0.9, bins), True),
    "Contrast": (lambda bins, height, width: torch.linspace(0.0, 0.9, bins), True),
    "Sharpness": (lambda bins, height, width: torch.linspace(0.0, 0.9, bins), True),
    "Posterize": (
        lambda bins, height, width: (8 - (torch.arange(bins) / ((bins - 1) / 4))).round().int(),
        False,
    ),
    "Solarize": (lambda bins, height, width: torch.linspace(1.0, 0.0, bins), False),
    "AutoContrast": (lambda bins, height, width: None, False),
    "Equalize": (lambda bins, height, width: None, False),
}
OPS = tuple(AUGMENTATION_SPACE)
COLOUR_OPS = {"Brightness": _JITTER_OPS["brightness"], "Color": _JITTER_OPS["saturation"],
              "Contrast": _JITTER_OPS["contrast"]}  # fmt: skip
DRAWS_PER_OP = 2  # which op, and the sign of its magnitude


def inverse_affine_matrices(
    angle: torch.Tensor, translate: torch.Tensor, shear: torch.Tensor, center: torch.Tensor
) -> torch.Tensor:
    """torchvision's inverse affine matrix (scale 1) for every sample: (B, 2, 3) float64.

    Args:
        angle: (B,) degrees.
        translate: (B, 2) pixels (x, y).
        shear: (B, 2) degrees (x, y).
        center: (B, 2) pixels relative to the image centre.
    """
    rot, sx, sy = torch.deg2rad(angle.double()), *torch.deg2rad(shear.double()).unbind(1)
    cx, cy = center.double().unbind(1)
    tx, ty = translate.double().unbind(1)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m0, m1, m3, m4 = d, -b, -c, a  # the inverse of [[a, b], [c, d]] (its determinant is 1)
    m2 = cx - m0 * (cx + tx) - m1 * (cy + ty)
    m5 = cy - m3 * (cx + tx) - m4 * (cy + ty)
    return torch.stack([torch.stack([m0, m1, m2], 1), torch.stack([m3, m4, m5], 1)], 1)


def warp(images: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour warp with zero fill, one inverse matrix (B, 2, 3) per image, as torchvision's."""
    batch, _, height, width = images.shape
    theta = matrices.to(images.device, images.dtype)
    base = torch.empty(1, height, width, 3, dtype=images.dtype, device=images.device)
    base[..., 0].copy_(torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, width, device=images.device))
    y = torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, height, device=images.device)
    base[..., 1].copy_(y.unsqueeze(-1))
    base[..., 2].fill_(1)
    scale = torch.tensor([0.5 * width, 0.5 * height], dtype=images.dtype, device=images.device)
    grid = base.view(1, height * width, 3).expand(batch, -1, -1).bmm(theta.transpose(1, 2).div(scale))
    grid = grid.view(batch, height, width, 2)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _geometric(name: str, images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    height, width = images.shape[-2:]
    magnitude = magnitude.double()  # the matrices in float64, as torchvision's (Python floats)
    zeros, none = torch.zeros_like(magnitude), magnitude.new_zeros(len(magnitude), 2)
    if name in ("ShearX", "ShearY"):
        degrees = torch.rad2deg(torch.atan(magnitude))
        shear = torch.stack([degrees, zeros] if name == "ShearX" else [zeros, degrees], 1)
        corner = magnitude.new_tensor([-0.5 * width, -0.5 * height]).expand(len(magnitude), 2)  # (0, 0)
        return warp(images, inverse_affine_matrices(zeros, none, shear, corner))
    if name in ("TranslateX", "TranslateY"):
        pixels = magnitude.trunc()  # torchvision's int(magnitude)
        translate = torch.stack([pixels, zeros] if name == "TranslateX" else [zeros, pixels], 1)
        return warp(images, inverse_affine_matrices(zeros, translate, none, none))
    # Rotate: torchvision's rotate builds its matrix with the angle negated.
    return warp(images, inverse_affine_matrices(-magnitude, none, none, none))


def _sharpness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_sharpness (float): blend with a 3x3 smoothing, border pixels kept."""
    if images.shape[-1] <= 2 or images.shape[-2] <= 2:
        return images
    channels = images.shape[1]
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], dtype=images.dtype, device=images.device)
    output = images.clone()
    blurred = F.conv2d(output, kernel.expand(channels, 1, 3, 3), groups=channels)
    inner = output[..., 1:-1, 1:-1]
    inner.add_((blurred - inner) * (1.0 - factor.view(-1, 1, 1, 1)))
    return output.clamp_(0, 1)


def _posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    levels = (2.0 ** bits.to(images.dtype)).view(-1, 1, 1, 1)
    return torch.minimum((images * levels).floor_(), levels - 1).div_(levels)


def _solarize(images: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return torch.where(images >= threshold.view(-1, 1, 1, 1), 1.0 - images, images)


def _op(name: str, images: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """`name` applied to float images in [0, 1], (B, C, H, W), with per-sample magnitudes (B,) beside them."""
    if name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
        return _geometric(name, images, magnitude)
    magnitude = magnitude.to(images.dtype)
    if name in COLOUR_OPS:  # the batched colour jitter's ops, torchvision's definitions
        return COLOUR_OPS[name](images, 1.0 + magnitude)
    if name == "Sharpness":
        return _sharpness(images, 1.0 + magnitude)
    if name == "Posterize":
        return _posterize(images, magnitude)
    if name == "Solarize":
        return _solarize(images, magnitude)
    if name == "AutoContrast":
        return TF.autocontrast(images)
    if name == "Equalize":
        return TF.equalize(images)
    raise ValueError(f"op={name!r} is invalid: allowed: {OPS}.")


def rand_augment(
    images: torch.Tensor, magnitudes: torch.Tensor, draws: torch.Tensor, num_magnitude_bins: int
) -> torch.Tensor:
    """RandAugment of every image at its own magnitude; magnitude 0 leaves an image untouched.

    Args:
        images: (B, C, H, W) float images in [0, 1] (not modified).
        magnitudes: (B,) integer magnitude bins in [0, num_magnitude_bins), on the CPU.
        draws: (B, 2 * num_ops) uniforms in [0, 1) on the CPU: per op, which op and its sign.
            Rows and parameters are chosen on the CPU (`_apply_where`), so nothing waits on the
            images' device.
        num_magnitude_bins: Bins of torchvision's magnitude tables (max magnitude + 1).

    Returns:
        (B, C, H, W) augmented images.
    """
    if draws.shape[1] % DRAWS_PER_OP or draws.shape[0] != len(images) or magnitudes.shape != (len(images),):
        raise ValueError(
            f"draws must be (B, {DRAWS_PER_OP} * num_ops) and magnitudes (B,) for B={len(images)} images, "
            f"got {tuple(draws.shape)} and {tuple(magnitudes.shape)}"
        )
    magnitudes = magnitudes.long()
    if magnitudes.numel() and (magnitudes.min() < 0 or magnitudes.max() >= num_magnitude_bins):
        raise ValueError(f"magnitudes must lie in [0, {num_magnitude_bins}), got {magnitudes.tolist()}")
    height, width = images.shape[-2:]
    tables = {name: (table(num_magnitude_bins, height, width), signed)
              for name, (table, signed) in AUGMENTATION_SPACE.items()}  # fmt: skip
    boosted = magnitudes > 0
    out = images.clone()
    for slot in range(draws.shape[1] // DRAWS_PER_OP):
        op_ids = (draws[:, DRAWS_PER_OP * slot] * len(OPS)).long().clamp_(max=len(OPS) - 1)
        negative = draws[:, DRAWS_PER_OP * slot + 1] <= 0.5  # torchvision: rand() <= 0.5 flips the sign
        for op_id, name in enumerate(OPS):
            if name == "Identity":
                continue
            values, signed = tables[name]
            magnitude = torch.zeros(len(out)) if values is None else values[magnitudes].float()
            if signed:
                magnitude = torch.where(negative, -magnitude, magnitude)
            _apply_where(out, boosted & (op_ids == op_id), partial(_op, name), magnitude)
    return out


def num_draws(num_ops: int) -> int:
    """Uniforms `rand_augment` takes per sample for `num_ops` ops."""
    if num_ops < 1:
        raise ValueError(f"num_ops must be >= 1, got {num_ops}")
    return DRAWS_PER_OP * num_ops


class BatchedMemoryBoostedTwoViews(MemoryBoost, BatchedTwoViews):
    """BCL's memory-boosted views of a whole batch: `BatchedTwoViews` after a per-sample RandAugment.

    The batched counterpart of `MemoryBoostedTwoViewTransform`: a sample of strength s in [0, 1]
    first gets `num_ops` RandAugment ops at magnitude round(s * max_magnitude)
    (`gh_hf.data.batched_randaugment.rand_augment`: torchvision's augmentation space, per-sample
    ops, signs and magnitudes), then the usual SSL view. A sample of strength 0 gets exactly the
    view `BatchedTwoViews` makes. The ops and signs are drawn from (seed, epoch, index, view) like
    every other parameter, so views stay independent of the batch, the process count and resumes.

    Args:
        image_size, in_chans, mean, std, recipe, seed, crop_min_scale: As `BatchedTwoViews`.
        num_samples: Size of the training split (strengths are indexed by `index`).
        num_ops: RandAugment ops per view (k).
        max_magnitude: Magnitude of strength 1 (30 in BCL).
    """

    def __init__(
        self,
        image_size: int,
        in_chans: int,
        mean: Sequence[float],
        std: Sequence[float],
        num_samples: int,
        recipe: str = "cifar",
        seed: int = 0,
        crop_min_scale: float | None = None,
        num_ops: int = 2,
        max_magnitude: int = 30,
    ) -> None:
        super().__init__(image_size, in_chans, mean, std, recipe, seed, crop_min_scale)
        self.init_boost(num_samples, num_ops, max_magnitude)

    def view(self, pixels: torch.Tensor, indices: torch.Tensor, view: int) -> torch.Tensor:
        draws = per_sample_uniforms(self.seed, self.epoch, indices, view + 2, num_draws(self.num_ops))
        boosted = rand_augment(pixels, self.magnitudes(indices), draws, self.max_magnitude + 1)
        return super().view(boosted, indices, view)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, num_ops={self.num_ops}, max_magnitude={self.max_magnitude})"


__all__ = ["AUGMENTATION_SPACE", "OPS", "BatchedMemoryBoostedTwoViews", "inverse_affine_matrices",
           "num_draws", "rand_augment", "warp"]  # fmt: skip
