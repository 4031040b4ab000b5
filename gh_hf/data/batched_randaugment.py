"""RandAugment for a whole batch with a magnitude, ops and signs of its own for every sample.

BCL's memory-boosted views (`MemoryBoostedTwoViewTransform`) give each sample RandAugment at a
magnitude set by its remembered loss. torchvision's `v2.RandAugment` takes one magnitude per call
and draws its ops from the global RNG, so the per-image path calls it once per image in the loader
workers. `rand_augment` does the same augmentation for a batch at once: torchvision's augmentation
space (the same 14 ops, magnitude tables and signs) and torchvision's float-tensor definition of
every op, with per-sample parameters:

- ShearX / ShearY / TranslateX / TranslateY / Rotate: one `grid_sample` (nearest, zero fill) with
  the per-sample inverse matrices `torchvision.transforms.v2.functional.affine` / `rotate` build;
- Brightness / Color / Contrast / Sharpness: blends with per-sample factors (Color is saturation);
- Posterize / Solarize: per-sample bits and thresholds;
- AutoContrast / Equalize (no magnitude): torchvision's own batched functions.

Ops and signs come from caller-given uniforms (`per_sample_uniforms`), so a sample's augmentation
depends on (seed, epoch, index, view) only, never on its batch. Each op is tested equal to
torchvision's on float tensors (tests/test_batched_randaugment.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

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
    zeros, none = torch.zeros_like(magnitude, dtype=torch.float64), torch.zeros(len(magnitude), 2)
    if name in ("ShearX", "ShearY"):
        degrees = torch.rad2deg(torch.atan(magnitude.double()))
        shear = torch.stack([degrees, zeros] if name == "ShearX" else [zeros, degrees], 1)
        corner = torch.tensor([-0.5 * width, -0.5 * height]).expand(len(magnitude), 2)  # centre (0, 0)
        return warp(images, inverse_affine_matrices(zeros, none, shear, corner))
    if name in ("TranslateX", "TranslateY"):
        pixels = magnitude.double().trunc()  # torchvision's int(magnitude)
        translate = torch.stack([pixels, zeros] if name == "TranslateX" else [zeros, pixels], 1)
        return warp(images, inverse_affine_matrices(zeros, translate, none, none))
    # Rotate: torchvision's rotate builds its matrix with the angle negated.
    return warp(images, inverse_affine_matrices(-magnitude.double(), none, none, none))


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    factor = factor.view(-1, 1, 1, 1)
    return (factor * images + (1 - factor) * other).clamp_(0, 1)


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    weights = torch.tensor((0.2989, 0.587, 0.114), device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


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
    """`name` applied to float images in [0, 1], (B, C, H, W), with per-sample magnitudes (B,) on the CPU."""
    if name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
        return _geometric(name, images, magnitude)  # the matrices are built on the CPU, in float64
    magnitude = magnitude.to(images.device, images.dtype)
    if name == "Brightness":
        return (images * (1.0 + magnitude).view(-1, 1, 1, 1)).clamp_(0, 1)
    if name == "Color":
        return _blend(images, _grayscale(images), 1.0 + magnitude)
    if name == "Contrast":
        return _blend(images, _grayscale(images).mean(dim=(1, 2, 3), keepdim=True), 1.0 + magnitude)
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
    boosted = magnitudes > 0
    out = images.clone()
    for slot in range(draws.shape[1] // DRAWS_PER_OP):
        op_ids = (draws[:, DRAWS_PER_OP * slot] * len(OPS)).long().clamp_(max=len(OPS) - 1)
        negative = draws[:, DRAWS_PER_OP * slot + 1] <= 0.5  # torchvision: rand() <= 0.5 flips the sign
        for op_id, name in enumerate(OPS):
            rows = (boosted & (op_ids == op_id)).nonzero().squeeze(1)
            if name == "Identity" or not len(rows):
                continue
            table, signed = AUGMENTATION_SPACE[name]
            values = table(num_magnitude_bins, height, width)
            magnitude = torch.zeros(len(rows)) if values is None else values[magnitudes[rows]].float()
            if signed:
                magnitude = torch.where(negative[rows], -magnitude, magnitude)
            on_device = rows.to(out.device)
            out[on_device] = _op(name, out[on_device], magnitude)
    return out


def num_draws(num_ops: int) -> int:
    """Uniforms `rand_augment` takes per sample for `num_ops` ops."""
    if num_ops < 1:
        raise ValueError(f"num_ops must be >= 1, got {num_ops}")
    return DRAWS_PER_OP * num_ops


__all__ = ["AUGMENTATION_SPACE", "OPS", "inverse_affine_matrices", "num_draws", "rand_augment", "warp"]
