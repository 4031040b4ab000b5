"""Data: image sources, long-tailed splits, augmentations and two-view datasets."""

from __future__ import annotations

from .batched_randaugment import BatchedMemoryBoostedTwoViews
from .batched_views import BatchedTwoViews
from .errors import DataSourceError, DataSourceNotFoundError, data_error_message
from .fashion_mnist import (
    FASHION_MNIST_CLASSES,
    gh_hf_cache_dir,
    load_fashion_mnist,
    read_idx,
)
from .in_memory import DecodedImages, collate_batch, decode_images
from .loader_throughput import measure_throughput
from .long_tailed import (
    PROFILES,
    add_index_column,
    balanced_subset,
    default_max_per_class,
    get_class_counts,
    get_split_metadata,
    long_tailed_counts,
    long_tailed_indices,
    make_long_tailed,
    max_per_class_of,
    parse_class_order,
)
from .sources import (
    SOURCE_NAMES,
    load_cifar,
    load_digits_dataset,
    load_image_dataset,
    load_image_folder,
    load_split_file,
    split_file_class_counts,
    to_common_schema,
)
from .streaming import (
    StreamedSplit,
    load_streamed_split,
    read_index_file,
    write_index_file,
    write_parquet_shards,
)
from .transforms import (
    DATASET_STATS,
    RECIPES,
    ConvertMode,
    MemoryBoostedTwoViewTransform,
    TwoViewTransform,
    build_eval_transform,
    build_pretrain_transform,
    default_normalization,
    source_normalization,
    with_eval_transform,
    with_two_views,
)

__all__ = [
    "BatchedMemoryBoostedTwoViews",
    "BatchedTwoViews",
    "DecodedImages",
    "collate_batch",
    "decode_images",
    "DATASET_STATS",
    "FASHION_MNIST_CLASSES",
    "PROFILES",
    "RECIPES",
    "SOURCE_NAMES",
    "ConvertMode",
    "MemoryBoostedTwoViewTransform",
    "DataSourceError",
    "DataSourceNotFoundError",
    "data_error_message",
    "TwoViewTransform",
    "add_index_column",
    "balanced_subset",
    "build_eval_transform",
    "build_pretrain_transform",
    "default_max_per_class",
    "default_normalization",
    "source_normalization",
    "get_class_counts",
    "get_split_metadata",
    "gh_hf_cache_dir",
    "load_cifar",
    "load_digits_dataset",
    "load_fashion_mnist",
    "load_image_dataset",
    "load_image_folder",
    "load_split_file",
    "split_file_class_counts",
    "long_tailed_counts",
    "long_tailed_indices",
    "make_long_tailed",
    "max_per_class_of",
    "parse_class_order",
    "measure_throughput",
    "read_idx",
    "read_index_file",
    "StreamedSplit",
    "load_streamed_split",
    "write_index_file",
    "write_parquet_shards",
    "to_common_schema",
    "with_eval_transform",
    "with_two_views",
]
