"""A split decoded once into one uint8 tensor, served in batches without worker processes.

Small fixed-size sources (Fashion-MNIST-LT: 11 MB, CIFAR-100-LT: 33 MB) fit in memory many times
over; decoding them once and indexing a tensor per batch leaves the CPU to the model, and the
views are then made for the whole batch at once on the model's device (`BatchedTwoViews`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from .errors import decode_image, undecoded_images
from .transforms import _MODES, _check_in_chans

_DECODE_CHUNK = 1024


def decode_images(dataset: Dataset, in_chans: int, max_bytes: int | None = None) -> torch.Tensor:
    """All images of `dataset`, converted to `in_chans` channels, as one uint8 tensor (N, C, H, W).

    Args:
        dataset: A split with an `image` column (PIL images once decoded).
        in_chans: 1 (mode "L") or 3 ("RGB").
        max_bytes: Refuse splits whose decoded size, estimated from the first image, exceeds this.

    Raises:
        ValueError: The images differ in size, or the split is larger than `max_bytes`.
        DataSourceError: An image cannot be decoded (the message names its file and row).
    """
    _check_in_chans(in_chans)
    mode = _MODES[in_chans]
    images_only = undecoded_images(dataset.select_columns(["image"]))
    first = np.asarray(decode_image(images_only[0]["image"], 0).convert(mode))
    height, width = first.shape[:2]
    needed = len(dataset) * in_chans * height * width
    if max_bytes is not None and needed > max_bytes:
        raise ValueError(
            f"the split decodes to {needed / 2**20:.0f} MiB ({len(dataset)} images of {height}x{width}), "
            f"more than the {max_bytes / 2**20:.0f} MiB allowed in memory; use --view_pipeline per_image"
        )
    images = np.empty((len(dataset), height, width, in_chans), dtype=np.uint8)
    for start in tqdm(range(0, len(dataset), _DECODE_CHUNK), desc="decoding images", leave=False):
        chunk = images_only[start : start + _DECODE_CHUNK]["image"]
        for offset, image in enumerate(chunk):
            pixels = np.asarray(decode_image(image, start + offset).convert(mode))
            if pixels.shape[:2] != (height, width):
                raise ValueError(
                    f"image {start + offset} is {pixels.shape[0]}x{pixels.shape[1]}, the first is "
                    f"{height}x{width}: batched views need images of one size; use --view_pipeline per_image"
                )
            images[start + offset] = pixels.reshape(height, width, in_chans)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


class DecodedImages(torch.utils.data.Dataset):
    """Rows {"image": uint8 (C, H, W), "label": int, "index": int} of a split held in memory.

    `__getitems__` serves a whole batch with three tensor lookups; use `collate_batch` as the
    DataLoader's `collate_fn`.

    Args:
        images: (N, C, H, W) uint8.
        labels: (N,) class ids (never used for training; the kNN monitor and diagnostics read them).
        indices: (N,) sample indices (the score bank's rows).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> None:
        if not len(images) == len(labels) == len(indices):
            raise ValueError(
                f"images, labels and indices need one entry per sample, got {len(images)}, "
                f"{len(labels)} and {len(indices)}"
            )
        self.images, self.labels, self.indices = images, labels.long(), indices.long()

    @classmethod
    def from_dataset(cls, dataset: Dataset, in_chans: int, max_bytes: int | None = None) -> DecodedImages:
        """Decodes a split with columns `image`, `label` and `index` (see `make_long_tailed`)."""
        for column in ("image", "label", "index"):
            if column not in dataset.column_names:
                raise ValueError(f"column {column!r} not found; columns present: {dataset.column_names}")
        return cls(
            decode_images(dataset, in_chans, max_bytes),
            torch.as_tensor(dataset["label"]),
            torch.as_tensor(dataset["index"]),
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, row: int) -> dict[str, Any]:
        return {"image": self.images[row], "label": self.labels[row], "index": self.indices[row]}

    def __getitems__(self, rows: list[int]) -> dict[str, torch.Tensor]:
        rows_tensor = torch.as_tensor(rows, dtype=torch.long)
        return {
            "image": self.images[rows_tensor],
            "label": self.labels[rows_tensor],
            "index": self.indices[rows_tensor],
        }


def collate_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The DataLoader `collate_fn` of `DecodedImages`: its `__getitems__` already made the batch."""
    return batch
