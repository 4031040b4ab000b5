"""The training data: a long-tailed split with two views per image, and its sampler or stream."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import send_to_device
from datasets import Dataset
from torch.utils.data import DataLoader, Sampler

from gh_hf.data import (
    BatchedMemoryBoostedTwoViews,
    BatchedTwoViews,
    DataSourceError,
    DecodedImages,
    MemoryBoostedTwoViewTransform,
    TwoViewTransform,
    add_index_column,
    build_pretrain_transform,
    collate_batch,
    default_max_per_class,
    load_image_dataset,
    make_long_tailed,
    with_two_views,
)
from gh_hf.data.sources import canonical_source_name
from gh_hf.data.streaming import (
    DecodedRows,
    StreamedBatches,
    StreamedSplit,
    TwoViewRows,
    load_streamed_split,
    process_rows,
)
from gh_hf.training.arguments import DataArguments, PretrainingArguments

# Sources whose images all have one small size: decoded into memory by --view_pipeline auto.
FIXED_SIZE_SOURCES = (
    "fashion_mnist",
    "fashionmnist",
    "digits",
    "cifar10",
    "cifar100",
    "cifar_10",
    "cifar_100",
)
IN_MEMORY_MAX_BYTES = 4 * 2**30


class EpochShuffleSampler(Sampler[int]):
    """A permutation of the dataset that depends only on (seed, epoch): resumable and rank-agnostic."""

    def __init__(self, num_samples: int, seed: int = 0):
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


def load_source(data_args: DataArguments, split: str) -> Dataset:
    """A split ("train" or "test") of the run's source, as `--dataset`, `--data_dir` and split files name it.

    With `--split_file`, "train" is that file and "test" is `--test_split_file`.
    """
    kwargs = {}
    if data_args.split_file is not None:
        split_file = {"train": data_args.split_file, "test": data_args.test_split_file}.get(split)
        if split_file is None:
            raise ValueError(
                f"split={split!r} of a --split_file dataset needs --test_split_file (the kNN monitor's "
                "test images), or turn the monitor off with --knn_every_epochs 0 --knn_at_end false"
            )
        kwargs = {"split_file": split_file, "image_root": data_args.image_root}
    return load_image_dataset(data_args.dataset, split=split, data_dir=data_args.data_dir, **kwargs)


def load_long_tailed_train(data_args: DataArguments, seed: int) -> Dataset | StreamedSplit:
    """The long-tailed pretraining split (columns image, label, index; class counts recorded).

    With `--streaming` it is a `StreamedSplit` of the parquet shards of `--data_dir`: every row or
    those of `--index_file`, long-tailed by the same recipe when `--imbalance_ratio` is not 1.
    """
    if data_args.streaming:
        return load_streamed_split(
            data_args.data_dir,
            data_args.index_file,
            data_args.imbalance_ratio,
            data_args.imbalance_profile,
            seed=seed,
            class_order=data_args.class_order,
        )
    dataset = load_source(data_args, "train")
    if data_args.imbalance_ratio == 1:  # an already long-tailed source (ImageNet-LT/Places-LT split files)
        return add_index_column(dataset)
    return make_long_tailed(
        dataset,
        data_args.imbalance_ratio,
        data_args.imbalance_profile,
        seed=seed,
        class_order=data_args.class_order,
        max_per_class=default_max_per_class(dataset),
    )


def resolve_view_pipeline(data_args: DataArguments) -> str:
    """ "batched" or "per_image": what `--view_pipeline` means for this run.

    "auto" is "batched" for the small fixed-size sources (every base, BCL's memory-boosted
    RandAugment included) and "per_image" for image folders and split files.
    """
    choice = data_args.view_pipeline
    if choice != "auto":
        return choice
    return "batched" if canonical_source_name(data_args.dataset) in FIXED_SIZE_SOURCES else "per_image"


def build_train_loader(
    dataset: Dataset | StreamedSplit, data_args: DataArguments, config, args: PretrainingArguments
) -> tuple[DataLoader | StreamedTrainLoader, TwoViewTransform | BatchedTwoViews]:
    """The training DataLoader and the object that makes its two views.

    Per-image pipeline: batches hold `pixel_values` (B, 2, C, H, W) made by the workers. Batched
    pipeline: batches hold decoded `image` (B, C, H, W) uint8, and the returned `BatchedTwoViews`
    turns them into views on the model's device. Both also hold `label` (B,) and `index` (B,).
    A `StreamedSplit` gets a `StreamedTrainLoader` with the same batches.
    """
    per_image = resolve_view_pipeline(data_args) == "per_image"
    if isinstance(dataset, StreamedSplit):
        two_views = build_two_views(len(dataset), data_args, config, args, per_image)
        make_batch = TwoViewRows(two_views) if per_image else DecodedRows(config.in_chans)
        return StreamedTrainLoader(dataset, make_batch, data_args, args), two_views
    if per_image:
        return build_per_image_loader(dataset, data_args, config, args)
    decoded = DecodedImages.from_dataset(dataset, config.in_chans, max_bytes=IN_MEMORY_MAX_BYTES)
    two_views = build_two_views(len(decoded), data_args, config, args, per_image=False)
    loader = DataLoader(
        decoded,
        batch_size=args.per_device_batch_size,
        sampler=EpochShuffleSampler(len(decoded), seed=args.seed),
        collate_fn=collate_batch,
        drop_last=True,  # every process gathers equal batches
        pin_memory=torch.cuda.is_available(),
    )
    return loader, two_views


def build_per_image_loader(
    dataset: Dataset, data_args: DataArguments, config, args: PretrainingArguments
) -> tuple[DataLoader, TwoViewTransform]:
    """DataLoader of two-view batches made by the workers: pixel_values (B, 2, C, H, W), label, index.

    BCL runs get memory-boosted views (per-sample RandAugment strength, set between epochs).
    """
    two_views = build_two_views(len(dataset), data_args, config, args, per_image=True)
    sampler = EpochShuffleSampler(len(dataset), seed=args.seed)
    batch_size = args.per_device_batch_size
    loader = DataLoader(
        with_two_views(dataset, two_views),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=data_args.dataloader_num_workers,
        drop_last=True,  # every process gathers equal batches
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )
    return loader, two_views


def build_two_views(
    num_samples: int, data_args: DataArguments, config, args: PretrainingArguments, per_image: bool
) -> TwoViewTransform | BatchedTwoViews:
    """What makes a run's two views: per image or for whole batches (BCL's: memory-boosted)."""
    image = (config.image_size, config.in_chans, config.image_mean, config.image_std)
    recipe = {"recipe": data_args.augmentation, "crop_min_scale": data_args.crop_min_scale}
    if not per_image:
        if config.ssl_method == "bcl":
            return BatchedMemoryBoostedTwoViews(
                *image, num_samples, seed=args.seed, num_ops=args.bcl_num_ops,
                max_magnitude=args.bcl_max_magnitude, **recipe,
            )  # fmt: skip
        return BatchedTwoViews(*image, seed=args.seed, **recipe)
    view = build_pretrain_transform(*image, **recipe)
    if config.ssl_method == "bcl":
        return MemoryBoostedTwoViewTransform(
            view, num_samples, args.seed, args.bcl_num_ops, args.bcl_max_magnitude
        )
    return TwoViewTransform(view, seed=args.seed)


class StreamedTrainLoader:
    """This process's training batches of a `StreamedSplit`, on the training device.

    Every process makes N // (W * per_device_batch_size) batches an epoch, rounded down to whole
    gradient-accumulation groups (the rest of the epoch's order is dropped, as `drop_last` does
    for the map-style split), so gathers never wait on a process that ran out. It is not given to
    `accelerator.prepare`: `split_dataset_by_node` already gives each process its rows, and
    Accelerate would split or dispatch them again. Registered for checkpointing, it refuses a
    resume whose epoch order would differ.

    Args:
        split: The streamed split.
        make_batch: `TwoViewRows` or `DecodedRows`.
        data_args: Shuffle buffer and DataLoader workers.
        args: Seed and per-device batch size.
    """

    def __init__(
        self, split: StreamedSplit, make_batch, data_args: DataArguments, args: PretrainingArguments
    ):
        state = PartialState()
        self.device = state.device
        # Whole accumulation groups: Accelerate syncs at a prepared loader's end, not at this one's.
        accumulation = args.gradient_accumulation_steps
        batches = len(split) // (state.num_processes * args.per_device_batch_size)
        self.num_batches = batches // accumulation * accumulation
        rows = process_rows(
            split,
            args.seed,
            data_args.shuffle_buffer_size,
            data_args.shuffle_buffer_shards,
            state.process_index,
            state.num_processes,
        )
        self.batches = StreamedBatches(rows, args.per_device_batch_size, self.num_batches, make_batch)
        self.loader = DataLoader(
            self.batches,
            batch_size=None,  # StreamedBatches yields whole batches
            num_workers=data_args.dataloader_num_workers,
            pin_memory=torch.cuda.is_available(),
        )
        # What fixes the epoch order; the worker count does not.
        self.settings = {
            "num_samples": len(split),
            "num_processes": state.num_processes,
            "per_device_batch_size": args.per_device_batch_size,
            "seed": args.seed,
            "shuffle_buffer_size": data_args.shuffle_buffer_size,
            "shuffle_buffer_shards": data_args.shuffle_buffer_shards,
        }

    def __len__(self) -> int:
        return self.num_batches

    def epoch(self, epoch: int, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of `epoch` from batch `start` on (a resumed run's first epoch starts later)."""
        self.batches.set_epoch(epoch, start)
        for batch in self.loader:
            yield send_to_device(batch, self.device, non_blocking=True)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.settings)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        changed = [
            f"{key} {state.get(key)} -> {value}"
            for key, value in self.settings.items()
            if state.get(key) != value
        ]
        if changed:
            raise DataSourceError(
                f"cannot resume this streamed run with other settings ({', '.join(changed)}): its "
                "epoch order would change; resume with the checkpoint's values"
            )


def prepare_train_loader(
    accelerator: Accelerator, model: torch.nn.Module, optimizer, loader: DataLoader | StreamedTrainLoader
) -> tuple[torch.nn.Module, Any, DataLoader | StreamedTrainLoader]:
    """`accelerator.prepare` of model, optimizer and loader; a streamed loader is registered instead."""
    if isinstance(loader, StreamedTrainLoader):
        model, optimizer = accelerator.prepare(model, optimizer)
        accelerator.register_for_checkpointing(loader)
        return model, optimizer, loader
    return accelerator.prepare(model, optimizer, loader)


def epoch_batches(
    accelerator: Accelerator, loader: DataLoader | StreamedTrainLoader, epoch: int, start: int
) -> Iterable[dict[str, torch.Tensor]]:
    """The batches of `epoch` from batch `start` on (a resumed run skips those it trained on)."""
    if isinstance(loader, StreamedTrainLoader):
        return loader.epoch(epoch, start)
    loader = accelerator.skip_first_batches(loader, start) if start else loader
    # Accelerate's loaders re-apply their own epoch counter to the sampler when iterated, so the
    # epoch goes through them (a resumed run's counter would otherwise lag behind).
    loader.set_epoch(epoch)
    return loader


def labels_by_index(dataset: Dataset | StreamedSplit) -> torch.Tensor | None:
    """(N,) class id per sample index, read for the prior's diagnostics only (None: no labels)."""
    if isinstance(dataset, StreamedSplit):
        return torch.as_tensor(dataset.labels, dtype=torch.long)
    if "label" not in dataset.column_names:
        return None
    columns = dataset.with_format("torch", columns=["index", "label"])[:]
    labels = torch.full((len(dataset),), -1, dtype=torch.long)
    labels[columns["index"].long()] = columns["label"].long()
    return None if (labels < 0).any() else labels
