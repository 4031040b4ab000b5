"""The training data: a long-tailed split with two views per image, and its sampler."""

from __future__ import annotations

import torch
from datasets import Dataset
from torch.utils.data import DataLoader, Sampler

from gh_hf.data import (
    BatchedTwoViews,
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


def load_long_tailed_train(data_args: DataArguments, seed: int) -> Dataset:
    """The long-tailed pretraining split (columns image, label, index; class counts recorded)."""
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


def resolve_view_pipeline(data_args: DataArguments, ssl_method: str) -> str:
    """ "batched" or "per_image": what `--view_pipeline` means for this run.

    "auto" is "batched" for the small fixed-size sources and "per_image" for image folders, split
    files and BCL, whose per-sample RandAugment strengths run in the per-image workers.
    """
    choice = data_args.view_pipeline
    if choice == "batched" and ssl_method == "bcl":
        raise ValueError(
            "--view_pipeline=batched is invalid with --ssl_method bcl: BCL's memory-boosted RandAugment "
            "runs per image; use --view_pipeline per_image (or auto)"
        )
    if choice != "auto":
        return choice
    fixed_size = canonical_source_name(data_args.dataset) in FIXED_SIZE_SOURCES
    return "batched" if fixed_size and ssl_method != "bcl" else "per_image"


def build_train_loader(
    dataset: Dataset, data_args: DataArguments, config, args: PretrainingArguments
) -> tuple[DataLoader, TwoViewTransform | BatchedTwoViews]:
    """The training DataLoader and the object that makes its two views.

    Per-image pipeline: batches hold `pixel_values` (B, 2, C, H, W) made by the workers. Batched
    pipeline: batches hold decoded `image` (B, C, H, W) uint8, and the returned `BatchedTwoViews`
    turns them into views on the model's device. Both also hold `label` (B,) and `index` (B,).
    """
    if resolve_view_pipeline(data_args, config.ssl_method) == "per_image":
        return build_per_image_loader(dataset, data_args, config, args)
    decoded = DecodedImages.from_dataset(dataset, config.in_chans, max_bytes=IN_MEMORY_MAX_BYTES)
    two_views = BatchedTwoViews(
        config.image_size,
        config.in_chans,
        config.image_mean,
        config.image_std,
        recipe=data_args.augmentation,
        seed=args.seed,
        crop_min_scale=data_args.crop_min_scale,
    )
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
    view = build_pretrain_transform(
        config.image_size,
        config.in_chans,
        config.image_mean,
        config.image_std,
        recipe=data_args.augmentation,
        crop_min_scale=data_args.crop_min_scale,
    )
    if config.ssl_method == "bcl":
        two_views = MemoryBoostedTwoViewTransform(
            view, len(dataset), args.seed, args.bcl_num_ops, args.bcl_max_magnitude
        )
    else:
        two_views = TwoViewTransform(view, seed=args.seed)
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
