"""Fashion-MNIST from the Debian package `dataset-fashion-mnist`, cached as a `datasets.Dataset`.

The idx files are decoded with numpy once per split and saved with `save_to_disk` under the
gh_hf cache (`$GH_HF_CACHE`, else `$HF_DATASETS_CACHE/gh_hf`, else `~/.cache/gh_hf`); later
loads are a memory-mapped `load_from_disk`. When the files are absent and the Hub is
reachable, the Hub copy (`zalando-datasets/fashion_mnist`) is used instead.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, Features, Image, load_from_disk

from gh_hf.files import write_atomically

from .errors import DataSourceNotFoundError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_HUB_ID = "zalando-datasets/fashion_mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
_FILE_PREFIX = {"train": "train", "test": "t10k"}
_CACHE_VERSION = "v1"
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}


def gh_hf_cache_dir() -> Path:
    """The directory gh_hf caches decoded datasets in.

    Returns:
        `$GH_HF_CACHE` if set, else `$HF_DATASETS_CACHE/gh_hf`, else `~/.cache/gh_hf`.
    """
    if os.environ.get("GH_HF_CACHE"):
        return Path(os.environ["GH_HF_CACHE"]).expanduser()
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser() / "gh_hf"
    return Path("~/.cache/gh_hf").expanduser()


def is_offline() -> bool:
    """Whether `HF_HUB_OFFLINE` or `HF_DATASETS_OFFLINE` asks for no network access."""
    return any(
        os.environ.get(var, "").upper() in _TRUE_VALUES for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Decode a (gzipped) idx file, the format MNIST and Fashion-MNIST ship in.

    Args:
        path: An idx file, gzipped when its name ends with `.gz`.

    Returns:
        The array, uint8, shaped by the dimensions in the file's header.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if raw[0:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an idx file of unsigned bytes (header {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx_paths(data_dir: Path, split: str) -> tuple[Path, Path]:
    prefix = _FILE_PREFIX[split]
    return data_dir / f"{prefix}-images-idx3-ubyte.gz", data_dir / f"{prefix}-labels-idx1-ubyte.gz"


def _features() -> Features:
    return Features({"image": Image(), "label": ClassLabel(names=FASHION_MNIST_CLASSES)})


def _cache_path(cache_root: Path, images_path: Path, split: str) -> Path:
    # Key the cache on the source file, so a different data_dir never reads a stale copy.
    stat = images_path.stat()
    key = hashlib.sha1(f"{images_path.resolve()}:{stat.st_size}".encode()).hexdigest()[:12]
    return cache_root / "fashion_mnist" / f"{_CACHE_VERSION}-{key}" / split


def _build_from_idx(images_path: Path, labels_path: Path) -> Dataset:
    images = read_idx(images_path)  # (N, 28, 28) uint8
    labels = read_idx(labels_path).astype(np.int64)  # (N,)
    if len(images) != len(labels):
        raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels")
    # Image() encodes each (28, 28) uint8 array as a grayscale ("L") PNG.
    return Dataset.from_dict({"image": list(images), "label": labels}, features=_features())


def _load_from_hub(split: str, **kwargs) -> Dataset:
    from datasets import load_dataset

    dataset = load_dataset(FASHION_MNIST_HUB_ID, split=split, **kwargs)
    return dataset.cast_column("label", ClassLabel(names=FASHION_MNIST_CLASSES))


def load_fashion_mnist(
    split: str, data_dir: str | None = None, cache_dir: str | None = None, **kwargs
) -> Dataset:
    """Fashion-MNIST as a `Dataset` with columns `image` (28x28 "L" PIL) and `label`.

    Args:
        split: "train" (60,000 images) or "test" (10,000 images).
        data_dir: Folder with the four idx `.gz` files; defaults to the Debian package's folder.
        cache_dir: Where the decoded copy is saved; defaults to `gh_hf_cache_dir()`. When the Hub copy
            is used, `datasets.load_dataset`'s cache_dir (its default when None).
        **kwargs: Passed to `datasets.load_dataset` when the Hub copy is used.

    Returns:
        The split, memory-mapped from the cache.

    Raises:
        DataSourceNotFoundError: The files are absent and the Hub may not be used.
    """
    images_path, labels_path = _idx_paths(Path(data_dir or FASHION_MNIST_DIR), split)
    if not (images_path.is_file() and labels_path.is_file()):
        if not is_offline():  # the Hub copy is cached by `datasets`, in cache_dir when given
            return _load_from_hub(split, **({"cache_dir": cache_dir} if cache_dir else {}), **kwargs)
        raise DataSourceNotFoundError(
            f"Fashion-MNIST files not found: {images_path} / {labels_path}. Install them with "
            "`apt-get install dataset-fashion-mnist`, pass data_dir=<folder with the idx .gz files>, "
            "or unset HF_HUB_OFFLINE/HF_DATASETS_OFFLINE to download the Hub copy."
        )
    target = _cache_path(Path(cache_dir) if cache_dir else gh_hf_cache_dir(), images_path, split)
    if not (target / "state.json").is_file():
        dataset = _build_from_idx(images_path, labels_path)
        write_atomically(target, lambda staging: dataset.save_to_disk(str(staging)))
    return load_from_disk(str(target))
