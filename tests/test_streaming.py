"""Streamed splits from parquet shards: the split, the index column, per-process epochs, errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch.utils.data import DataLoader

from gh_hf.data import (
    DataSourceError,
    DataSourceNotFoundError,
    default_max_per_class,
    get_class_counts,
    load_streamed_split,
    long_tailed_indices,
    write_index_file,
    write_parquet_shards,
)
from gh_hf.data.streaming import StreamedBatches, process_rows
from gh_hf.training.arguments import DataArguments

RATIO = 10


def _rows(stream) -> list[dict]:
    """Every row of an arrow-formatted stream as {"index", "label", "pixels"}."""
    from gh_hf.data.errors import decode_image

    rows = []
    for table in stream.iter(batch_size=256):
        columns = [table.column(name).to_pylist() for name in ("image", "label", "index")]
        for value, label, index in zip(*columns, strict=True):
            rows.append({"index": index, "label": label, "pixels": np.asarray(decode_image(value, index))})
    return rows


def test_streamed_long_tailed_split_is_make_long_tailed_of_the_source(fashion_mnist_shards):
    source, folder = fashion_mnist_shards
    split = load_streamed_split(folder, imbalance_ratio=RATIO, seed=0)
    labels = np.asarray(source["label"])
    expected = long_tailed_indices(labels, RATIO, "exp", 0, None, 10, default_max_per_class(source))
    assert split.source_ids.tolist() == expected
    assert len(split) == len(expected) == 757
    assert get_class_counts(split) == np.bincount(labels[expected], minlength=10).tolist()
    rows = _rows(split.stream)
    # Split index i is source row expected[i]: its label and its pixels.
    assert sorted(row["index"] for row in rows) == list(range(len(expected)))
    for row in rows[::25]:
        source_row = expected[row["index"]]
        assert row["label"] == labels[source_row] == split.labels[row["index"]]
        assert np.array_equal(row["pixels"], np.asarray(source[source_row]["image"]))


def test_index_file_rows_get_their_position_as_index(fashion_mnist_shards, tmp_path):
    source, folder = fashion_mnist_shards
    kept = [1999, 3, 700, 42, 0, 1500]
    split = load_streamed_split(folder, index_file=write_index_file(tmp_path / "keep.txt", kept))
    assert len(split) == len(kept) and split.source_ids.tolist() == kept
    rows = {row["index"]: row for row in _rows(split.stream)}
    assert sorted(rows) == list(range(len(kept)))
    for position, source_row in enumerate(kept):
        assert np.array_equal(rows[position]["pixels"], np.asarray(source[source_row]["image"]))


def _epoch_indices(split, world_size: int, epoch: int, batch_size: int = 16) -> list[list[int]]:
    """Each process's sample indices of `epoch`, in batch order (num_batches = N // (W B) each)."""
    num_batches = len(split) // (world_size * batch_size)
    per_process = []
    for rank in range(world_size):
        rows = process_rows(split, seed=3, buffer_size=64, buffer_shards=1, rank=rank, world_size=world_size)
        batches = StreamedBatches(rows, batch_size, num_batches, lambda table, _: table.column("index"))
        batches.set_epoch(epoch)
        batch_list = [batch.to_pylist() for batch in batches]
        assert len(batch_list) == num_batches
        per_process.append([i for batch in batch_list for i in batch])
    return per_process


def test_each_epoch_processes_share_out_one_order_without_repeats(fashion_mnist_shards):
    split = load_streamed_split(fashion_mnist_shards[1], imbalance_ratio=RATIO, seed=0)
    orders = []
    for epoch in (0, 1):
        by_world = {}
        for world_size in (1, 2, 3):
            per_process = _epoch_indices(split, world_size, epoch)
            taken = [i for indices in per_process for i in indices]
            assert len(taken) == len(set(taken))  # no sample twice in an epoch, across processes
            assert len(split) - len(taken) < world_size * 16  # only the remainder is dropped
            # Process r holds rows r, r + W, ... of the epoch's one order.
            by_world[world_size] = [per_process[k % world_size][k // world_size] for k in range(len(taken))]
        full = by_world[1]
        assert all(order == full[: len(order)] for order in by_world.values())
        orders.append(full)
    assert orders[0] != orders[1] and sorted(orders[0][:600]) != sorted(orders[1][:600])


def test_batches_follow_the_order_for_any_worker_count_and_from_any_start(fashion_mnist_shards):
    split = load_streamed_split(fashion_mnist_shards[1], imbalance_ratio=RATIO, seed=0)

    def batches_of(workers: int, start: int) -> list[list[int]]:
        rows = process_rows(split, seed=1, buffer_size=100, buffer_shards=1, rank=1, world_size=2)
        batches = StreamedBatches(rows, 16, 23, _IndexBatch())
        batches.set_epoch(2, start)
        return [batch.tolist() for batch in DataLoader(batches, batch_size=None, num_workers=workers)]

    straight = batches_of(0, 0)
    assert len(straight) == 23
    assert batches_of(2, 0) == straight
    assert batches_of(2, 5) == straight[5:]  # a resumed epoch: the same batches from batch 5 on


class _IndexBatch:
    def __call__(self, table: pa.Table, epoch: int) -> torch.Tensor:
        return torch.tensor(table.column("index").to_pylist())


def test_a_short_stream_fails_instead_of_leaving_the_other_processes_waiting(fashion_mnist_shards):
    split = load_streamed_split(fashion_mnist_shards[1], imbalance_ratio=RATIO, seed=0)
    rows = process_rows(split, seed=0, buffer_size=10, buffer_shards=1, rank=0, world_size=1)
    batches = StreamedBatches(rows, 100, 8, _IndexBatch())  # 757 rows: 7 full batches of 100
    with pytest.raises(DataSourceError, match="ended after 7 full batches of this process, 8 expected"):
        list(batches)


def test_shards_without_an_index_column_are_named(fashion_mnist_shards, tmp_path):
    fashion_mnist_shards[0].select(range(10)).to_parquet(str(tmp_path / "a.parquet"))
    with pytest.raises(DataSourceError, match=r"no column 'index'; columns present: \['image', 'label'\]"):
        load_streamed_split(tmp_path)


def test_webdataset_tar_shards_are_refused_with_the_way_out(tmp_path):
    (tmp_path / "shard-000000.tar").write_bytes(b"")
    with pytest.raises(DataSourceError, match="webdataset .tar shards.*write_parquet_shards"):
        load_streamed_split(tmp_path)
    with pytest.raises(DataSourceNotFoundError, match="not a folder"):
        load_streamed_split(tmp_path / "absent")


def test_bad_index_files_are_named(fashion_mnist_shards, tmp_path):
    folder = fashion_mnist_shards[1]
    cases = {
        "5\n7\n5\n": "lists id 5 2 times",
        "5\nfive\n": "expected one integer source id a line",
        "3\n-1\n": "negative id -1",
        "3\n2000\n2001\n": r"2 id\(s\) of the index file are not in the shards' `index` column; first: 2000",
    }
    for number, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"keep{number}.txt"
        path.write_text(text)
        with pytest.raises(DataSourceError, match=message):
            load_streamed_split(folder, index_file=path)
    with pytest.raises(DataSourceNotFoundError, match="check --index_file"):
        load_streamed_split(folder, index_file=tmp_path / "absent.txt")


def test_write_parquet_shards_checks_its_arguments(fashion_mnist_shards, tmp_path):
    source = fashion_mnist_shards[0].select(range(4))
    with pytest.raises(ValueError, match="num_shards=5 is invalid: must be in 1..4"):
        write_parquet_shards(source, tmp_path, 5)
    with pytest.raises(ValueError, match=r"column 'label' not found; columns present: \['image'\]"):
        write_parquet_shards(source.remove_columns("label"), tmp_path, 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": "parquet", "data_dir": "x"}, "--dataset='parquet' is invalid.*add --streaming true"),
        ({"streaming": True, "data_dir": "x"}, "--streaming=True is invalid.*needs --dataset parquet"),
        ({"dataset": "parquet", "streaming": True}, "--data_dir=None is invalid.*folder of parquet shards"),
        ({"index_file": "keep.txt"}, "--index_file='keep.txt' is invalid.*needs --streaming true"),
        (
            {"dataset": "parquet", "streaming": True, "data_dir": "x", "shuffle_buffer_size": 0},
            "--shuffle_buffer_size=0 is invalid.*must be >= 1",
        ),
    ],  # fmt: skip
)
def test_streaming_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataArguments(**kwargs)


def test_streaming_with_the_knn_monitor_on_fails_before_any_work(tmp_path):
    from gh_hf.training import Pretrainer, parse_pretrain_args

    argv = ["--dataset", "parquet", "--streaming", "true", "--data_dir", str(tmp_path), "--in_chans", "1",
            "--output_dir", str(tmp_path / "out"), "--knn_at_end", "true"]  # fmt: skip
    with pytest.raises(ValueError, match="--streaming true runs without the kNN monitor"):
        Pretrainer(*parse_pretrain_args(argv))
    assert not (tmp_path / "out").exists()
