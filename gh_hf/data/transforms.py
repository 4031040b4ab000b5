"""Augmentations (torchvision.transforms.v2), two-view datasets and normalisation statistics.

`build_pretrain_transform` gives one random view of a PIL image; `TwoViewTransform` draws two
of them with randomness fixed by (seed, epoch, sample index), so a run's views depend neither on
the DataLoader's worker count nor on where the run resumed. `with_two_views` and
`with_eval_transform` attach the transforms to a `datasets.Dataset`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from PIL import Image as PILImage
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from gh_hf.configuration_gh import IMAGENET_MEAN, IMAGENET_STD

from .errors import decode_image, undecoded_images

# name -> (per-channel mean, per-channel std) of images scaled to [0, 1].
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "digits": ((0.3052,), (0.3763,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}
_STATS_ALIASES = {"imagenet_lt": "imagenet", "places_lt": "imagenet", "places": "imagenet"}
RECIPES = ("cifar", "imagenet")
_MODES = {1: "L", 3: "RGB"}
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights of PIL's convert("L")


def default_normalization(name: str, in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std for a dataset, with one entry per input channel.

    Three-channel statistics are reduced with the luma weights for `in_chans=1`; one-channel
    statistics are repeated for `in_chans=3`.

    Args:
        name: A key of `DATASET_STATS` (or "imagenet_lt", "places_lt", "places").
        in_chans: 1 or 3.

    Returns:
        (mean, std), tuples of length `in_chans`.
    """
    _check_in_chans(in_chans)
    key = name.lower().replace("-", "_")
    key = _STATS_ALIASES.get(key, key)
    if key not in DATASET_STATS:
        raise ValueError(f"name={name!r} has no statistics; allowed: {', '.join(DATASET_STATS)}")
    mean, std = DATASET_STATS[key]
    if len(mean) == in_chans:
        return mean, std
    if in_chans == 3:
        return mean * 3, std * 3
    return (sum(w * m for w, m in zip(_LUMA, mean, strict=True)),), (
        sum(w * s for w, s in zip(_LUMA, std, strict=True)),
    )


def source_normalization(name: str, in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """`default_normalization` of a source, with ImageNet's statistics for folders and split files
    (natural images whose own statistics gh_hf does not know)."""
    try:
        return default_normalization(name, in_chans)
    except ValueError:
        return default_normalization("imagenet", in_chans)


def _check_in_chans(in_chans: int) -> None:
    if in_chans not in _MODES:
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")


def _check_args(image_size: int, in_chans: int, mean: Sequence[float], std: Sequence[float]) -> None:
    _check_in_chans(in_chans)
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    if len(mean) != in_chans or len(std) != in_chans:
        raise ValueError(
            f"mean and std need in_chans={in_chans} entries each, got mean={tuple(mean)}, std={tuple(std)}"
        )


class ConvertMode:
    """Convert a PIL image to a mode ("L" for 1 channel, "RGB" for 3); picklable for workers."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image: PILImage.Image) -> PILImage.Image:
        return image if image.mode == self.mode else image.convert(self.mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r})"


class ToNormalizedTensor:
    """PIL image (or uint8 tensor) -> float32 tensor (C, H, W), scaled to [0, 1] then normalised.

    One op instead of v2's ToImage, ToDtype and Normalize: about 3x faster on small images.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: PILImage.Image | torch.Tensor) -> torch.Tensor:
        pixels = image if isinstance(image, torch.Tensor) else F.pil_to_tensor(image)  # uint8 (C, H, W)
        return pixels.as_subclass(torch.Tensor).float().div_(255.0).sub_(self.mean).div_(self.std)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"
        )


def _color_jitter(in_chans: int) -> v2.ColorJitter:
    # Saturation and hue have no meaning for one channel.
    if in_chans == 1:
        return v2.ColorJitter(brightness=0.4, contrast=0.4)
    return v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)


def blur_kernel_size(image_size: int) -> int:
    """The odd Gaussian-blur kernel closest below 10% of the image size (at least 3)."""
    return max(3, int(0.1 * image_size) // 2 * 2 + 1)


def recipe_crop_scale(recipe: str, min_scale: float | None = None) -> tuple[float, float]:
    """The random resized crop's area range: (0.1, 1) for "cifar", (0.08, 1) for "imagenet".

    `min_scale` (in (0, 1]) replaces the recipe's lower bound, e.g. gentler crops for small images.
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe={recipe!r} is not supported; allowed: {', '.join(RECIPES)}")
    if min_scale is None:
        return (0.1, 1.0) if recipe == "cifar" else (0.08, 1.0)
    if not 0 < min_scale <= 1:
        raise ValueError(f"crop min_scale={min_scale!r} is not supported; allowed: a number in (0, 1]")
    return (float(min_scale), 1.0)


def build_pretrain_transform(
    image_size: int,
    in_chans: int,
    mean: Sequence[float],
    std: Sequence[float],
    recipe: str = "cifar",
    crop_min_scale: float | None = None,
) -> Callable[[PILImage.Image], torch.Tensor]:
    """One random SSL view: PIL image -> normalised float32 tensor (in_chans, size, size).

    "cifar": RandomResizedCrop(scale=(0.1, 1)), horizontal flip, colour jitter
    (0.4, 0.4, 0.4, 0.1; p=0.8), grayscale (p=0.2). "imagenet": scale=(0.08, 1) and, in
    addition, Gaussian blur (kernel ~10% of the size, sigma 0.1..2, p=0.5). With `in_chans=1`
    images become "L", the jitter keeps brightness and contrast only and there is no grayscale op.

    Args:
        image_size: Output height and width.
        in_chans: 1 or 3.
        mean: Per-channel mean (length `in_chans`).
        std: Per-channel std (length `in_chans`).
        recipe: "cifar" or "imagenet".
        crop_min_scale: Smallest crop area, in (0, 1]; None: the recipe's.

    Returns:
        The transform.
    """
    _check_args(image_size, in_chans, mean, std)
    scale = recipe_crop_scale(recipe, crop_min_scale)
    # The ops run on PIL images, faster than on tensors at these sizes.
    ops: list[Callable] = [
        ConvertMode(_MODES[in_chans]),
        v2.RandomResizedCrop(image_size, scale=scale, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([_color_jitter(in_chans)], p=0.8),
    ]
    if in_chans == 3:
        ops.append(v2.RandomGrayscale(p=0.2))
    if recipe == "imagenet":
        blur = v2.GaussianBlur(blur_kernel_size(image_size), sigma=(0.1, 2.0))
        ops.append(v2.RandomApply([blur], p=0.5))
    ops.append(ToNormalizedTensor(mean, std))
    return v2.Compose(ops)


def build_eval_transform(
    image_size: int,
    in_chans: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_pct: float = 1.0,
) -> Callable[[PILImage.Image], torch.Tensor]:
    """The deterministic eval view: resize, centre crop, normalise.

    The shorter side is resized to `image_size / crop_pct`, then the centre `image_size` square
    is kept: with the default `crop_pct=1.0` a square image is plainly resized (CIFAR,
    Fashion-MNIST); use 0.875 for the ImageNet-style resize-256-crop-224.

    Args:
        image_size: Output height and width.
        in_chans: 1 or 3 (the image is converted to "L" or "RGB").
        mean: Per-channel mean (length `in_chans`).
        std: Per-channel std (length `in_chans`).
        crop_pct: Fraction of the resized image kept by the centre crop, in (0, 1].

    Returns:
        The transform, PIL image -> float32 tensor (in_chans, image_size, image_size).
    """
    _check_args(image_size, in_chans, mean, std)
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    return v2.Compose(
        [
            ConvertMode(_MODES[in_chans]),
            v2.Resize(int(round(image_size / crop_pct)), antialias=True),
            v2.CenterCrop(image_size),
            ToNormalizedTensor(mean, std),
        ]
    )


class TwoViewTransform:
    """Two random views of an image, reproducible from (seed, epoch, sample index).

    Each call seeds a fresh CPU generator (and python's `random`) from (seed, epoch, index),
    restoring the caller's RNG states afterwards. The epoch lives in a shared-memory tensor, so
    DataLoader workers, persistent ones included, see `set_epoch` as long as it is called
    before the epoch's iterator is created (`for batch in loader`).

    Args:
        base_transform: One view, PIL image -> tensor (C, H, W), e.g. `build_pretrain_transform`.
        seed: Run seed, >= 0.
    """

    def __init__(self, base_transform: Callable[[PILImage.Image], torch.Tensor], seed: int = 0) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.base_transform = base_transform
        self.seed = seed
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()

    @property
    def epoch(self) -> int:
        """The epoch views are drawn for."""
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Draw the next views for `epoch` (call before iterating the DataLoader)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch.fill_(epoch)

    def sample_seed(self, index: int, epoch: int | None = None) -> int:
        """The 64-bit seed of sample `index` at `epoch` (default: the current epoch)."""
        epoch = self.epoch if epoch is None else epoch
        words = np.random.SeedSequence([self.seed, epoch, index]).generate_state(2, dtype=np.uint32)
        return (int(words[0]) << 32) | int(words[1])

    def __call__(self, image: PILImage.Image, index: int, epoch: int | None = None) -> torch.Tensor:
        """Two views of `image`, stacked: (2, C, H, W)."""
        seed = self.sample_seed(index, epoch)
        python_state = random.getstate()
        # Only the CPU generator is forked and seeded: CUDA RNG streams stay untouched.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            random.seed(seed)
            try:
                views = [self.view(image, index) for _ in range(2)]
            finally:
                random.setstate(python_state)
        return torch.stack(views)

    def view(self, image: PILImage.Image, index: int) -> torch.Tensor:
        """One random view of sample `index` (called under the sample's seeded RNG)."""
        return self.base_transform(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed}, base_transform={self.base_transform!r})"


class MemoryBoost:
    """BCL's per-sample augmentation strengths and the RandAugment magnitudes they set.

    One rule for both view makers, the per-image `MemoryBoostedTwoViewTransform` and the batched
    `BatchedMemoryBoostedTwoViews`: a sample of strength s in [0, 1] gets `num_ops` RandAugment
    ops at magnitude round(s * max_magnitude), and magnitude 0 means no RandAugment.
    """

    def init_boost(self, num_samples: int, num_ops: int, max_magnitude: int) -> None:
        if num_ops < 1 or max_magnitude < 1:
            raise ValueError(f"num_ops and max_magnitude must be >= 1, got {num_ops} and {max_magnitude}")
        self.num_ops, self.max_magnitude = num_ops, max_magnitude
        # In shared memory, so per-image DataLoader workers see `set_strengths`.
        self.strengths = torch.zeros(num_samples).share_memory_()

    def set_strengths(self, strengths: torch.Tensor) -> None:
        """Per-sample strengths in [0, 1] for the next epoch."""
        if strengths.shape != self.strengths.shape:
            raise ValueError(
                f"strengths must have shape {tuple(self.strengths.shape)}, got {tuple(strengths.shape)}"
            )
        self.strengths.copy_(strengths.detach().float().clamp(0, 1).cpu())

    def magnitudes(self, indices: torch.Tensor) -> torch.Tensor:
        """(B,) int64 magnitudes of the samples `indices`: round(strength * max_magnitude), on the CPU."""
        strengths = self.strengths[indices.to("cpu", torch.int64)].double()
        return torch.round(strengths * self.max_magnitude).long()


class MemoryBoostedTwoViewTransform(MemoryBoost, TwoViewTransform):
    """BCL's memory-boosted views: RandAugment whose magnitude follows each sample's strength.

    A sample of strength s in [0, 1] first gets `num_ops` RandAugment ops at magnitude
    round(s * max_magnitude), then the usual SSL view. Strengths live in shared memory, so
    DataLoader workers see `set_strengths` (call it between epochs).

    Args:
        base_transform: One SSL view, PIL image -> tensor.
        num_samples: Size of the training split (strengths are indexed by `index`).
        seed: Run seed.
        num_ops: RandAugment ops per view (k).
        max_magnitude: Magnitude of strength 1 (30 in BCL).
    """

    def __init__(
        self,
        base_transform: Callable[[PILImage.Image], torch.Tensor],
        num_samples: int,
        seed: int = 0,
        num_ops: int = 2,
        max_magnitude: int = 30,
    ) -> None:
        super().__init__(base_transform, seed)
        self.init_boost(num_samples, num_ops, max_magnitude)

    def magnitude(self, index: int) -> int:
        return int(self.magnitudes(torch.tensor([index]))[0])

    def view(self, image: PILImage.Image, index: int) -> torch.Tensor:
        magnitude = self.magnitude(index)
        if magnitude > 0:
            boost = v2.RandAugment(
                self.num_ops, magnitude=magnitude, num_magnitude_bins=self.max_magnitude + 1
            )
            image = boost(image)
        return self.base_transform(image)


def _require_columns(dataset: Dataset, columns: Sequence[str]) -> None:
    for column in columns:
        if column not in dataset.column_names:
            raise ValueError(
                f"column {column!r} not found; columns present: {dataset.column_names}"
                + (" (add it with gh_hf.data.add_index_column)" if column == "index" else "")
            )


class _TwoViewBatch:
    """Batch function of `with_two_views` (a class, so spawned workers can unpickle it)."""

    def __init__(self, transform: TwoViewTransform) -> None:
        self.transform = transform

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        epoch = self.transform.epoch  # read once: one batch, one epoch
        indices = [int(i) for i in batch["index"]]
        images = [decode_image(value, i) for value, i in zip(batch["image"], indices, strict=True)]
        views = [self.transform(image, i, epoch) for image, i in zip(images, indices, strict=True)]
        return {"pixel_values": views, "label": [int(y) for y in batch["label"]], "index": indices}


class _EvalBatch:
    """Batch function of `with_eval_transform`."""

    def __init__(self, transform: Callable[[PILImage.Image], torch.Tensor]) -> None:
        self.transform = transform

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        output: dict[str, list[Any]] = {"pixel_values": [self.transform(image) for image in batch["image"]]}
        output["label"] = [int(y) for y in batch["label"]]
        if "index" in batch:
            output["index"] = [int(i) for i in batch["index"]]
        return output


def with_two_views(dataset: Dataset, transform: TwoViewTransform) -> Dataset:
    """`dataset` with rows {"pixel_values": (2, C, H, W) float32, "label": int, "index": int}.

    A `torch.utils.data.DataLoader` with the default collate then yields `pixel_values`
    (B, 2, C, H, W), `label` (B,) and `index` (B,).

    Args:
        dataset: A split with columns `image`, `label` and `index` (see `make_long_tailed`).
        transform: The two-view transform.

    Returns:
        A formatted view of `dataset` (the input is not modified).
    """
    _require_columns(dataset, ("image", "label", "index"))
    # Decoded in the batch function, so that a corrupt image is named with its path and sample index.
    undecoded = undecoded_images(dataset)
    return undecoded.with_transform(_TwoViewBatch(transform), columns=["image", "label", "index"])


def with_eval_transform(dataset: Dataset, transform: Callable[[PILImage.Image], torch.Tensor]) -> Dataset:
    """`dataset` with rows {"pixel_values": (C, H, W) float32, "label": int[, "index": int]}.

    Args:
        dataset: A split with columns `image` and `label` (and, optionally, `index`).
        transform: One deterministic view, e.g. `build_eval_transform`.

    Returns:
        A formatted view of `dataset` (the input is not modified).
    """
    _require_columns(dataset, ("image", "label"))
    columns = ["image", "label"] + (["index"] if "index" in dataset.column_names else [])
    return dataset.with_transform(_EvalBatch(transform), columns=columns)
