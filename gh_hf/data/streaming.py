"""Streamed training splits: local parquet shards read as a `datasets.IterableDataset`.

A split too large for a materialised table stays on disk as parquet shards with the columns
`image` (`Image()`), `label` (`ClassLabel`) and `index`, each row's id in the source (unique,
>= 0); `write_parquet_shards` writes them from any `Dataset`. A run trains on every row, or on the
rows an index file lists (a keep-list of source ids), long-tailed by the recipe of
`make_long_tailed` when asked. Rows of the split get the split index 0..N-1 in `index` (their
position in the keep-list; source ids in ascending order when there is none): the score bank's
key, the same in every epoch and for every number of processes.

An epoch's order is the stream shuffled by `datasets` (shard order and a buffer, from (seed,
epoch)). `split_dataset_by_node(strategy="examples")` gives process r the rows r, r + W, r + 2W,
... of that order, so with b = N // (W B) batches per process the W processes together take the
first W B b rows of it: every sample at most once an epoch, every one when W B divides N.

Webdataset tar shards are not read: a tar holds neither a row count nor an index column that can
be read without a pass over all its members; convert such shards with `write_parquet_shards`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from datasets import ClassLabel, Dataset, Features, IterableDataset, load_dataset
from datasets.distributed import split_dataset_by_node

from .errors import DataSourceError, DataSourceNotFoundError, decode_image
from .long_tailed import (
    _record,
    add_index_column,
    long_tailed_indices,
    max_per_class_of,
    parse_class_order,
)
from .transforms import _MODES, TwoViewTransform, _check_in_chans

SHARD_COLUMNS = ("image", "label", "index")
STREAMED_SOURCES = ("parquet",)


def write_parquet_shards(dataset: Dataset, folder: str | os.PathLike, num_shards: int) -> list[Path]:
    """Writes `dataset` as parquet shards `data-00000-of-00256.parquet`, ... in `folder`.

    Rows keep their order, cut into contiguous shards (`Dataset.shard(contiguous=True)`). A
    dataset without an `index` column gets one: the row's position, its id in the source.

    Args:
        dataset: A split with columns `image` and `label` (and, optionally, `index`).
        folder: Where the shards go (created if needed).
        num_shards: Files to write, 1..len(dataset).

    Returns:
        The paths written, in shard order.
    """
    for column in ("image", "label"):
        if column not in dataset.column_names:
            raise ValueError(f"column {column!r} not found; columns present: {dataset.column_names}")
    if not 1 <= num_shards <= len(dataset):
        raise ValueError(f"num_shards={num_shards} is invalid: must be in 1..{len(dataset)} (the rows)")
    if "index" not in dataset.column_names:
        dataset = add_index_column(dataset)
    dataset = dataset.select_columns(list(SHARD_COLUMNS))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"data-{shard:05d}-of-{num_shards:05d}.parquet" for shard in range(num_shards)]
    for shard, path in enumerate(paths):
        dataset.shard(num_shards, shard, contiguous=True).to_parquet(str(path))
    return paths


def parquet_shard_files(data_dir: str | os.PathLike) -> list[str]:
    """The `.parquet` files under `data_dir` (searched recursively), sorted by path."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DataSourceNotFoundError(
            f"--data_dir={str(data_dir)!r} is not a folder; give the folder of the parquet shards"
        )
    files = sorted(str(path) for path in folder.rglob("*.parquet"))
    if files:
        return files
    if next(folder.rglob("*.tar"), None) is not None:
        raise DataSourceError(
            f"--data_dir={str(data_dir)!r} holds webdataset .tar shards, which gh_hf does not stream (a tar "
            "has no row count or index column to read without a full pass); convert them to parquet with "
            "gh_hf.data.write_parquet_shards"
        )
    raise DataSourceNotFoundError(
        f"--data_dir={str(data_dir)!r} holds no .parquet files; write shards with "
        "gh_hf.data.write_parquet_shards"
    )


def read_index_file(path: str | os.PathLike) -> np.ndarray:
    """The source ids an index file lists: one integer a line (`#` starts a comment), in split order.

    Raises:
        DataSourceNotFoundError: The file is missing.
        DataSourceError: A line is not an integer, an id is negative or listed twice, or none is listed.
    """
    if not os.path.isfile(path):
        raise DataSourceNotFoundError(f"index file not found: {path}; check --index_file")
    try:
        ids = np.loadtxt(path, dtype=np.int64, ndmin=1, comments="#")
    except ValueError as error:
        raise DataSourceError(f"index file {path}: expected one integer source id a line ({error})") from None
    if len(ids) == 0:
        raise DataSourceError(f"index file {path} lists no ids; give one source id (shard `index`) a line")
    if ids.min() < 0:
        raise DataSourceError(f"index file {path} lists the negative id {int(ids.min())}; ids are >= 0")
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataSourceError(
            f"index file {path} lists id {int(values[counts > 1][0])} {int(counts.max())} times; "
            "a sample may be listed once"
        )
    return ids


def write_index_file(path: str | os.PathLike, ids: Sequence[int] | np.ndarray) -> Path:
    """Writes source ids one a line (the format `read_index_file` and `--index_file` read)."""
    np.savetxt(path, np.asarray(ids, dtype=np.int64), fmt="%d")
    return Path(path)


def read_shard_labels(files: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, labels) of every row of the shards, read from their `index` and `label` columns only.

    Raises:
        DataSourceError: A shard lacks a column of `SHARD_COLUMNS`, or an id is negative or repeated.
    """
    ids, labels = [], []
    for file in files:
        names = pq.read_schema(file).names
        missing = [column for column in SHARD_COLUMNS if column not in names]
        if missing:
            raise DataSourceError(
                f"parquet shard {file} has no column {missing[0]!r}; columns present: {names}; shards need "
                f"{list(SHARD_COLUMNS)} (gh_hf.data.write_parquet_shards adds `index`, the row's source id)"
            )
        table = pq.read_table(file, columns=["index", "label"])
        ids.append(table.column("index").to_numpy())
        labels.append(table.column("label").to_numpy())
    ids_array, labels_array = np.concatenate(ids).astype(np.int64), np.concatenate(labels).astype(np.int64)
    values, counts = np.unique(ids_array, return_counts=True)
    if (counts > 1).any() or (len(values) and values[0] < 0):
        bad = int(values[counts > 1][0]) if (counts > 1).any() else int(values[0])
        raise DataSourceError(
            f"the shards' `index` column must hold unique ids >= 0 (each row's id in the source); "
            f"id {bad} breaks that"
        )
    return ids_array, labels_array


def select_streamed_split(
    ids: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    index_ids: np.ndarray | None = None,
    imbalance_ratio: float = 1.0,
    profile: str = "exp",
    seed: int = 0,
    class_order: str | Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The source ids of a streamed split, in split order, with their labels and the split's metadata.

    The rows are those of `index_ids` (in its order), or every id in ascending order. With
    `imbalance_ratio` != 1 the long-tailed recipe of `make_long_tailed` then selects from them, with
    n_max = `max_per_class_of` their labels, so shards written from a source by
    `write_parquet_shards` give the split (and split indices) of `make_long_tailed` on that source.

    Args:
        ids: (M,) the shards' source ids.
        labels: (M,) their labels.
        num_classes: C.
        index_ids: The keep-list of an index file, or None.
        imbalance_ratio: n_max / n_min; 1 keeps the rows as they are.
        profile: "exp" or "step".
        seed: Seed of the per-class shuffles.
        class_order: Label ids from head to tail, or a `parse_class_order` text.

    Returns:
        keep (N,) source ids (split index i is source id keep[i]), their labels (N,), metadata.
    """
    sorter = np.argsort(ids, kind="stable")
    wanted = ids[sorter] if index_ids is None else np.asarray(index_ids, dtype=np.int64)
    slots = np.searchsorted(ids, wanted, sorter=sorter).clip(max=len(ids) - 1)
    rows = sorter[slots]
    absent = ids[rows] != wanted
    if absent.any():
        raise DataSourceError(
            f"{int(absent.sum())} id(s) of the index file are not in the shards' `index` column; first: "
            f"{int(wanted[absent][0])}; check --index_file against --data_dir"
        )
    keep, keep_labels = wanted, labels[rows]
    if imbalance_ratio == 1:
        metadata: dict[str, Any] = {"kind": "streamed"}
    else:
        order = (
            parse_class_order(class_order, num_classes, seed) if isinstance(class_order, str) else class_order
        )
        max_per_class = max_per_class_of(keep_labels, num_classes)
        chosen = long_tailed_indices(
            keep_labels, imbalance_ratio, profile, seed, order, num_classes, max_per_class
        )
        keep, keep_labels = keep[chosen], keep_labels[chosen]
        metadata = {
            "kind": "long_tailed",
            "imbalance_ratio": imbalance_ratio,
            "profile": profile,
            "seed": seed,
            "max_per_class": max_per_class,
            "class_order": list(range(num_classes)) if order is None else [int(c) for c in order],
        }
    metadata["class_counts"] = np.bincount(keep_labels, minlength=num_classes).tolist()
    return keep, keep_labels, metadata


class _ToSplitIndex:
    """Batched map of the stream (arrow tables): keeps the split's rows, their split index in `index`.

    Args:
        keep: (N,) the split's source ids; split index i is source id keep[i].
    """

    def __init__(self, keep: np.ndarray) -> None:
        self.order = np.argsort(keep, kind="stable")
        self.sorted_ids = np.asarray(keep, dtype=np.int64)[self.order]

    def __call__(self, table: pa.Table) -> pa.Table:
        ids = table.column("index").to_numpy()
        slots = np.searchsorted(self.sorted_ids, ids).clip(max=len(self.sorted_ids) - 1)
        found = self.sorted_ids[slots] == ids
        kept = table.filter(pa.array(found))
        positions = pa.array(self.order[slots[found]], type=pa.int64())
        return kept.set_column(kept.schema.get_field_index("index"), "index", positions)


@dataclass
class StreamedSplit:
    """A training split read as a stream, with what the trainer needs without reading it.

    `len()`, `info` (the recorded metadata: `get_split_metadata`, `get_class_counts`) and
    `features` behave as on the `Dataset` of a materialised split.

    Attributes:
        stream: Rows {"image" (undecoded), "label", "index" (split index 0..N-1)} in shard order,
            arrow-formatted; `process_rows` shuffles and splits it.
        source_ids: (N,) the source id of every split index (`write_index_file` saves the split).
        labels: (N,) the class id of every split index (for the prior's diagnostics; never trained on).
    """

    stream: IterableDataset
    source_ids: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def info(self):
        return self.stream.info

    @property
    def features(self) -> Features:
        return self.stream.features

    @property
    def column_names(self) -> list[str]:
        return list(self.stream.features)


def load_streamed_split(
    data_dir: str | os.PathLike,
    index_file: str | os.PathLike | None = None,
    imbalance_ratio: float = 1.0,
    profile: str = "exp",
    seed: int = 0,
    class_order: str | Sequence[int] | None = None,
) -> StreamedSplit:
    """The streamed split of the parquet shards under `data_dir` (see `select_streamed_split`).

    Only the `index` and `label` columns are read here (for N, the class counts and the split);
    the images are read when the stream is iterated.

    Args:
        data_dir: The folder of parquet shards with columns `image`, `label`, `index`.
        index_file: A keep-list of source ids (`read_index_file`), or None for every row.
        imbalance_ratio, profile, seed, class_order: The long-tailed recipe (ratio 1: none).
    """
    files = parquet_shard_files(data_dir)
    ids, labels = read_shard_labels(files)
    stream = load_dataset("parquet", data_files=files, split="train", streaming=True)
    label_feature = stream.features["label"]
    num_classes = (
        label_feature.num_classes if isinstance(label_feature, ClassLabel) else int(labels.max()) + 1
    )
    index_ids = read_index_file(index_file) if index_file is not None else None
    keep, keep_labels, metadata = select_streamed_split(
        ids, labels, num_classes, index_ids, imbalance_ratio, profile, seed, class_order
    )
    features = stream.features
    stream = stream.with_format("arrow").map(_ToSplitIndex(keep), batched=True, features=features)
    metadata |= {"index_file": None if index_file is None else str(index_file), "shards": len(files)}
    _record(stream, metadata, num_rows=len(keep))
    return StreamedSplit(stream, keep, keep_labels)


def process_rows(
    split: StreamedSplit, seed: int, buffer_size: int, buffer_shards: int, rank: int, world_size: int
) -> IterableDataset:
    """Process `rank`'s rows (call `set_epoch` before each epoch).

    The stream is shuffled by `IterableDataset.shuffle` from (seed, epoch): shard order, then a
    buffer of `buffer_size` rows filled from `buffer_shards` shards at a time (datasets'
    `max_buffer_input_shards`; above 1 it reads them in threads and waits 5 s when an epoch's
    iteration ends, a guard of `datasets` for pyarrow). Process `rank` of `world_size` keeps rows
    rank, rank + W, ... of that order (`split_dataset_by_node`, strategy "examples").
    """
    shuffled = split.stream.shuffle(seed=seed, buffer_size=buffer_size, max_buffer_input_shards=buffer_shards)
    return split_dataset_by_node(shuffled, rank=rank, world_size=world_size, strategy="examples")


class StreamedBatches(torch.utils.data.IterableDataset):
    """The first `num_batches` batches of a process's rows in one epoch, made by `make_batch`.

    Under a DataLoader with `batch_size=None`, workers take the batches in turn: batch start + j
    is made by worker j % workers, and the DataLoader returns them in that order, so the batches
    do not depend on the worker count. Every worker reads (without decoding) the rows of the
    others' batches, and of the batches before `start` (those a resumed run already trained on).

    Args:
        rows: `process_rows`, arrow-formatted.
        batch_size: Rows per batch.
        num_batches: Batches per epoch, the same on every process.
        make_batch: (arrow table of a batch's rows, epoch) -> dict of tensors.
    """

    def __init__(
        self,
        rows: IterableDataset,
        batch_size: int,
        num_batches: int,
        make_batch: Callable[[pa.Table, int], dict[str, torch.Tensor]],
    ) -> None:
        self.rows, self.batch_size, self.num_batches, self.make_batch = (
            rows,
            batch_size,
            num_batches,
            make_batch,
        )
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate `epoch` from batch `start` on (call before the DataLoader's iterator is made)."""
        self.epoch, self.start = epoch, start
        self.rows.set_epoch(epoch)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        tables = self.rows.iter(batch_size=self.batch_size, drop_last_batch=True)
        read = 0
        for number, table in enumerate(islice(tables, self.num_batches)):
            read = number + 1
            if number >= self.start and (number - self.start) % workers == worker:
                yield self.make_batch(table, self.epoch)
        if read < self.num_batches:  # the other processes would wait for this one in their gathers
            raise DataSourceError(
                f"the stream ended after {read} full batches of this process, {self.num_batches} expected; "
                "did the shards change since the split was read?"
            )


class TwoViewRows:
    """`make_batch` of the per-image pipeline: {"pixel_values" (B, 2, C, H, W), "label", "index"}."""

    def __init__(self, two_views: TwoViewTransform) -> None:
        self.two_views = two_views

    def __call__(self, table: pa.Table, epoch: int) -> dict[str, torch.Tensor]:
        indices = table.column("index").to_pylist()
        values = table.column("image").to_pylist()
        views = [self.two_views(decode_image(v, i), i, epoch) for v, i in zip(values, indices, strict=True)]
        return {
            "pixel_values": torch.stack(views),
            "label": torch.from_numpy(table.column("label").to_numpy().astype(np.int64)),
            "index": torch.tensor(indices, dtype=torch.long),
        }


class DecodedRows:
    """`make_batch` of the batched pipeline: {"image" uint8 (B, C, H, W), "label", "index"}."""

    def __init__(self, in_chans: int) -> None:
        _check_in_chans(in_chans)
        self.in_chans = in_chans

    def __call__(self, table: pa.Table, epoch: int) -> dict[str, torch.Tensor]:
        indices = table.column("index").to_pylist()
        mode = _MODES[self.in_chans]
        pixels = [
            np.asarray(decode_image(value, index).convert(mode))
            for value, index in zip(table.column("image").to_pylist(), indices, strict=True)
        ]
        if len({array.shape[:2] for array in pixels}) > 1:
            raise ValueError(
                f"the images of one batch differ in size ({sorted({a.shape[:2] for a in pixels})}): batched "
                "views need images of one size; use --view_pipeline per_image"
            )
        images = np.stack(pixels).reshape(len(pixels), *pixels[0].shape[:2], self.in_chans)
        return {
            "image": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
            "label": torch.from_numpy(table.column("label").to_numpy().astype(np.int64)),
            "index": torch.tensor(indices, dtype=torch.long),
        }
