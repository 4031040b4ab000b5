"""Image sources, all returned as a `datasets.Dataset` with columns `image` and `label`.

`image` is a `datasets.Image()` feature (rows decode to PIL images) and `label` a `ClassLabel`
with names. Sources: CIFAR-10/100 (Hub, or a local copy), Fashion-MNIST (Debian package, Hub
when online), scikit-learn's digits, image folders and "path label" split files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, load_dataset, load_from_disk

from .errors import DataSourceError, DataSourceNotFoundError
from .fashion_mnist import FASHION_MNIST_HUB_ID, load_fashion_mnist

SPLITS = ("train", "test")
# name -> (Hub repo id, image column, label column) of the Hub schema.
HUB_SOURCES = {
    "cifar10": ("uoft-cs/cifar10", "img", "label"),
    "cifar100": ("uoft-cs/cifar100", "img", "fine_label"),
}
SOURCE_NAMES = ("cifar10", "cifar100", "fashion_mnist", "digits", "imagefolder", "split_file")
_ALIASES = {"cifar_10": "cifar10", "cifar_100": "cifar100", "fashionmnist": "fashion_mnist"}
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
GRAYSCALE_SOURCES = ("fashion_mnist", "digits")  # every other source is RGB


def canonical_source_name(name: str) -> str:
    """`name` as gh_hf's sources spell it ("Fashion-MNIST" -> "fashion_mnist"); other names as given."""
    key = name.lower().replace("-", "_")
    return _ALIASES.get(key, key)


def source_channels(name: str) -> int:
    """Channels of the images of source `name` (as `load_image_dataset` names it): 1 or 3."""
    return 1 if canonical_source_name(name) in GRAYSCALE_SOURCES else 3


def source_hub_id(name: str) -> str | None:
    """The Hub dataset id of source `name` when gh_hf loads it from the Hub (or mirrors it), else None."""
    key = canonical_source_name(name)
    if key == "fashion_mnist":
        return FASHION_MNIST_HUB_ID
    return HUB_SOURCES[key][0] if key in HUB_SOURCES else None


def load_image_dataset(name: str, split: str = "train", data_dir: str | None = None, **kwargs) -> Dataset:
    """Load an image classification split with columns `image` and `label`.

    Args:
        name: "cifar10", "cifar100", "fashion_mnist", "digits", "imagefolder" (with `data_dir`),
            an existing directory (an image folder), or "split_file" / a path ending in ".txt"
            (a "relative/path label" split file).
        split: "train" or "test" (an image folder may define others; a split file is its own split).
        data_dir: A local copy: for CIFAR a `save_to_disk` folder or a dataset repo folder, for
            Fashion-MNIST the folder with the idx `.gz` files, for "imagefolder" the image folder.
        **kwargs: Source-specific options: `split_file`, `image_root`, `class_names`,
            `num_classes`, `check_files` for split files; `cache_dir` for the cache; other keys
            go to `datasets.load_dataset`.

    Returns:
        The split as a `Dataset` with columns `image` (`Image()`) and `label` (`ClassLabel`).

    Raises:
        ValueError: Unknown name or split.
    """
    key = name.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key in HUB_SOURCES:
        return load_cifar(key, _check_split(split), data_dir=data_dir, **kwargs)
    if key == "fashion_mnist":
        return load_fashion_mnist(_check_split(split), data_dir=data_dir, **kwargs)
    if key == "digits":
        return load_digits_dataset(_check_split(split))
    if key == "split_file" or name.endswith(".txt"):
        split_file = kwargs.pop("split_file", None) if key == "split_file" else name
        if split_file is None:
            raise ValueError("name='split_file' needs split_file=<path to a 'path label' file>")
        return load_split_file(split_file, **kwargs)
    if key == "imagefolder" or os.path.isdir(name):
        folder = data_dir if key == "imagefolder" else name
        if folder is None:
            raise ValueError("name='imagefolder' needs data_dir=<image folder>")
        return load_image_folder(folder, split, **kwargs)
    raise ValueError(
        f"name={name!r} is not a known source; allowed: {', '.join(SOURCE_NAMES)}, an existing "
        "directory (image folder) or a path ending in '.txt' (split file)"
    )


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not available; allowed: {', '.join(SPLITS)}")
    return split


def _load_hub_dataset(repo_id: str, split: str, **kwargs) -> Dataset | DatasetDict:
    """The one network call for Hub sources (tests replace it with a local dataset)."""
    return load_dataset(repo_id, split=split, **kwargs)


def _load_local_copy(path: str, split: str, **kwargs) -> Dataset | DatasetDict:
    folder = Path(path)
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        return load_from_disk(str(folder))
    return load_dataset(str(folder), split=split, **kwargs)


def _pick_split(dataset: Dataset | DatasetDict, split: str) -> Dataset:
    if not isinstance(dataset, DatasetDict):
        return dataset
    if split not in dataset:
        raise ValueError(f"split={split!r} is not in the dataset; available: {', '.join(dataset)}")
    return dataset[split]


def to_common_schema(dataset: Dataset, image_column: str, label_column: str) -> Dataset:
    """Rename `image_column`/`label_column` to `image`/`label` and drop every other column.

    Args:
        dataset: A split with an image and a label column.
        image_column: The column holding images.
        label_column: The column holding class ids.

    Returns:
        The split with exactly the columns `image` and `label` (a `ClassLabel`).
    """
    for column in (image_column, label_column):
        if column not in dataset.column_names:
            raise ValueError(f"column {column!r} not found; columns present: {dataset.column_names}")
    dataset = dataset.select_columns([image_column, label_column])
    if image_column != "image":
        dataset = dataset.rename_column(image_column, "image")
    if label_column != "label":
        dataset = dataset.rename_column(label_column, "label")
    if not isinstance(dataset.features["label"], ClassLabel):
        labels = dataset.with_format("numpy", columns=["label"])[:]["label"]
        dataset = dataset.cast_column("label", ClassLabel(num_classes=int(labels.max()) + 1))
    return dataset


def load_cifar(name: str, split: str, data_dir: str | None = None, **kwargs) -> Dataset:
    """CIFAR-10 or CIFAR-100 (fine labels) from the Hub, or from a local copy in `data_dir`.

    Args:
        name: "cifar10" or "cifar100".
        split: "train" or "test".
        data_dir: A `save_to_disk` folder or a local dataset repo folder of the Hub schema.
        **kwargs: Passed to `datasets.load_dataset`.

    Returns:
        The split with columns `image` and `label`.
    """
    repo_id, image_column, label_column = HUB_SOURCES[name]
    if data_dir is not None:
        raw = _load_local_copy(data_dir, split, **kwargs)
    else:
        try:
            raw = _load_hub_dataset(repo_id, split, **kwargs)
        except ConnectionError as error:  # offline mode, or no network, and no cached copy
            raise DataSourceError(
                f"--dataset {name}: cannot load the Hub dataset {repo_id} ({error}); run once online "
                "(unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) to cache it, or pass --data_dir with a local "
                "copy"
            ) from None
    return to_common_schema(_pick_split(raw, split), image_column, label_column)


def _digits_split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_TEST_FRACTION,
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    return np.sort(train if split == "train" else test)


def load_digits_dataset(split: str) -> Dataset:
    """scikit-learn's bundled 8x8 digits as grayscale ("L") images, values scaled 0..16 -> 0..255.

    There is no official split: a stratified 80/20 split with seed 0 gives "train" (1,437
    images) and "test" (360 images), each in the original order.

    Args:
        split: "train" or "test".

    Returns:
        The split with columns `image` and `label` (names "0".."9").
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    labels = bunch.target.astype(np.int64)
    keep = _digits_split_indices(labels, split)
    images = np.rint(bunch.images[keep] * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8)
    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})
    return Dataset.from_dict({"image": list(images), "label": labels[keep]}, features=features)


def load_image_folder(folder: str, split: str = "train", **kwargs) -> Dataset:
    """An image folder (`class/xxx.png`, optionally under `train/`, `test/`) via `imagefolder`.

    Args:
        folder: The image folder.
        split: A split the folder defines ("train" when it has class folders only).
        **kwargs: Passed to `datasets.load_dataset` (e.g. `cache_dir`).

    Returns:
        The split with columns `image` and `label`.
    """
    if not os.path.isdir(folder):
        raise DataSourceNotFoundError(
            f"image folder not found: {folder}; pass --data_dir with a folder of one sub-folder per class"
        )
    splits = load_dataset("imagefolder", data_dir=folder, **kwargs)
    dataset = _pick_split(splits, split)
    if "label" not in dataset.column_names:
        raise ValueError(
            f"column 'label' not found in {folder} (put images in one folder per class); "
            f"columns present: {dataset.column_names}"
        )
    return to_common_schema(dataset, "image", "label")


def _parse_split_file(split_file: str) -> tuple[list[str], list[int]]:
    paths, labels = [], []
    with open(split_file, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise DataSourceError(
                    f"{split_file}:{line_number}: expected 'relative/path label' (an integer label), got "
                    f"{line.rstrip()!r}; fix or remove that line"
                )
            paths.append(parts[0])
            labels.append(int(parts[1]))
    if not paths:
        raise DataSourceError(f"split file {split_file} lists no images; give a file with 'path label' lines")
    return paths, labels


def split_file_class_counts(split_file: str, num_classes: int | None = None) -> list[int]:
    """Images per class of a "path label" split file (no image is opened), e.g. ImageNet_LT_train.txt.

    Args:
        split_file: The text file, one "relative/path label" pair a line.
        num_classes: C; defaults to the largest label + 1.

    Returns:
        counts[c] = number of lines with label c, for c in 0..C-1.
    """
    if not os.path.isfile(split_file):
        raise DataSourceNotFoundError(
            f"split file not found: {split_file}; check the --*split_file argument that names it"
        )
    _, labels = _parse_split_file(split_file)
    num_classes = _class_label(labels, None, num_classes).num_classes
    counts = [0] * num_classes
    for label in labels:
        counts[label] += 1
    return counts


def _class_label(labels: list[int], class_names: list[str] | None, num_classes: int | None) -> ClassLabel:
    if min(labels) < 0:
        raise DataSourceError(f"labels must be >= 0; the split file has label {min(labels)}")
    if class_names is not None:
        num_classes = len(class_names)
    num_classes = num_classes if num_classes is not None else max(labels) + 1
    if max(labels) >= num_classes:
        raise DataSourceError(f"num_classes={num_classes} but the split file has label {max(labels)}")
    return ClassLabel(names=list(class_names) if class_names else [str(c) for c in range(num_classes)])


def load_split_file(
    split_file: str,
    image_root: str | None = None,
    class_names: list[str] | None = None,
    num_classes: int | None = None,
    check_files: bool = True,
) -> Dataset:
    """A "relative/path.jpg label" split file (the ImageNet-LT / Places-LT format).

    Images are stored as paths and decoded lazily by the `Image()` feature.

    Args:
        split_file: The text file, one "path label" pair a line.
        image_root: The folder paths are relative to; defaults to the split file's folder.
        class_names: Names of the classes; defaults to "0".."C-1".
        num_classes: C; defaults to `len(class_names)` or the largest label + 1.
        check_files: Check that every image exists.

    Returns:
        The split with columns `image` and `label`.

    Raises:
        DataSourceNotFoundError: The split file or (with `check_files`) an image is missing.
        DataSourceError: A line of the split file is not "path label".
    """
    if not os.path.isfile(split_file):
        raise DataSourceNotFoundError(
            f"split file not found: {split_file}; check the --*split_file argument that names it"
        )
    root = Path(image_root) if image_root is not None else Path(split_file).parent
    relative, labels = _parse_split_file(split_file)
    paths = [str(root / path) for path in relative]
    if check_files:
        missing = [path for path in paths if not os.path.isfile(path)]
        if missing:
            raise DataSourceNotFoundError(
                f"{len(missing)} image(s) listed in {split_file} not found under image_root={root}; "
                f"first missing: {missing[0]}; check --image_root"
            )
    features = Features({"image": Image(), "label": _class_label(labels, class_names, num_classes)})
    return Dataset.from_dict({"image": paths, "label": labels}, features=features)
