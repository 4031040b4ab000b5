"""Data-loading throughput of two-view batches."""

from __future__ import annotations

import time
from itertools import islice

from datasets import Dataset
from torch.utils.data import DataLoader

from .transforms import TwoViewTransform, with_two_views


def measure_throughput(
    dataset: Dataset,
    transform: TwoViewTransform,
    batch_size: int = 256,
    num_workers: int = 2,
    num_batches: int = 20,
) -> float:
    """Images per second (two views each) that a DataLoader over `dataset` delivers.

    The first batch (worker start-up) is not timed; the next `num_batches` batches are, or as
    many as one shuffled pass gives.

    Args:
        dataset: A split with columns `image`, `label` and `index`.
        transform: The two-view transform.
        batch_size: Images per batch.
        num_workers: DataLoader worker processes.
        num_batches: Timed batches.

    Returns:
        Source images per second (each yields two views).
    """
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    loader = DataLoader(
        with_two_views(dataset, transform),
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        drop_last=True,
    )
    batches = iter(loader)
    next(batches)
    images, start = 0, time.perf_counter()
    for batch in islice(batches, num_batches):
        images += batch["pixel_values"].shape[0]
    elapsed = time.perf_counter() - start
    if images == 0:
        raise ValueError(f"dataset of {len(dataset)} rows gives no timed batch of batch_size={batch_size}")
    return images / elapsed
