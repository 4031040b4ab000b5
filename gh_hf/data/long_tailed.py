"""Long-tailed splits (DESIGN.md section 4) and balanced few-shot subsets.

The per-class counts of a split are recorded as JSON in `dataset.info.description` (key
`"gh_hf"`), which survives `select`, `map`, `with_transform` and `save_to_disk` /
`load_from_disk`; read them back with `get_class_counts`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset

PROFILES = ("exp", "step")
_INFO_KEY = "gh_hf"


def long_tailed_counts(
    max_per_class: int | float, num_classes: int, imbalance_ratio: float, profile: str = "exp"
) -> list[int]:
    """Images per class, head (position 0) to tail.

    Args:
        max_per_class: n_max, the head class's count (images in the source split / C).
        num_classes: C.
        imbalance_ratio: n_max / n_min, >= 1 (e.g. 100).
        profile: "exp": n_c = int(n_max * (1/ratio)^(c/(C-1))); "step": int(n_max) for the first
            C//2 classes and int(n_max/ratio) for the rest.

    Returns:
        The C counts.
    """
    _check_ratio(imbalance_ratio)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if profile == "exp":
        if num_classes == 1:
            return [int(max_per_class)]
        decay = 1.0 / imbalance_ratio
        return [int(max_per_class * decay ** (c / (num_classes - 1.0))) for c in range(num_classes)]
    if profile == "step":
        head = num_classes // 2
        return [int(max_per_class)] * head + [int(max_per_class / imbalance_ratio)] * (num_classes - head)
    raise ValueError(f"profile={profile!r} is not supported; allowed: {', '.join(PROFILES)}")


def _check_ratio(imbalance_ratio: float) -> None:
    if not imbalance_ratio >= 1:
        raise ValueError(f"imbalance_ratio must be >= 1 (n_max / n_min), got {imbalance_ratio}")


def _check_class_order(class_order: Sequence[int] | None, num_classes: int) -> list[int]:
    if class_order is None:
        return list(range(num_classes))
    order = [int(c) for c in class_order]
    if sorted(order) != list(range(num_classes)):
        raise ValueError(
            f"class_order must be a permutation of 0..{num_classes - 1} (head first), got {list(class_order)}"
        )
    return order


def parse_class_order(text: str, num_classes: int, seed: int = 0) -> list[int] | None:
    """A `--class_order` value as label ids from head to tail (None: label order, head = class 0).

    Args:
        text: "identity", "permuted" (numpy `RandomState(seed).permutation(num_classes)`, so every
            run of one seed ranks the classes alike and seeds differ in which classes are the tail)
            or comma-separated label ids, head first.
        num_classes: C.
        seed: Seed of the "permuted" order.
    """
    if text == "identity":
        return None
    if text == "permuted":
        return np.random.RandomState(seed).permutation(num_classes).tolist()
    try:
        order = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--class_order={text!r} is invalid: use 'identity', 'permuted' or comma-separated label ids"
        ) from None
    return _check_class_order(order, num_classes)


def long_tailed_indices(
    labels: Sequence[int] | np.ndarray,
    imbalance_ratio: float,
    profile: str = "exp",
    seed: int = 0,
    class_order: Sequence[int] | None = None,
    num_classes: int | None = None,
    max_per_class: int | float | None = None,
) -> list[int]:
    """Indices of a long-tailed subset, chosen as the paper's code does.

    With n_max = len(labels) / C, a `np.random.RandomState(seed)` shuffles each class's
    indices (in dataset order), class by class in `class_order`, and keeps the first n_c.

    Args:
        labels: Class id of every image of the source split.
        imbalance_ratio: n_max / n_min, >= 1.
        profile: "exp" or "step" (see `long_tailed_counts`).
        seed: Seed of the RandomState.
        class_order: Label ids from head to tail; defaults to 0..C-1.
        num_classes: C; defaults to the largest label + 1.
        max_per_class: n_max; defaults to len(labels) / C (DESIGN.md). Set it for a source
            whose classes are not all as large (e.g. digits, 142..146 images per class).

    Returns:
        The selected indices, grouped by class in `class_order`.
    """
    labels = np.asarray(labels)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    order = _check_class_order(class_order, num_classes)
    n_max = len(labels) / num_classes if max_per_class is None else max_per_class
    counts = long_tailed_counts(n_max, num_classes, imbalance_ratio, profile)
    rng = np.random.RandomState(seed)
    selected: list[int] = []
    for class_id, count in zip(order, counts, strict=True):
        members = np.where(labels == class_id)[0]
        if len(members) < count:
            raise ValueError(
                f"class {class_id} has {len(members)} images but the {profile} profile at "
                f"imbalance_ratio={imbalance_ratio} needs {count} (n_max={n_max}); "
                "pass a smaller max_per_class"
            )
        rng.shuffle(members)
        selected.extend(members[:count].tolist())
    return selected


def _labels_of(dataset: Dataset, label_column: str) -> np.ndarray:
    if label_column not in dataset.column_names:
        raise ValueError(f"label_column={label_column!r} not found; columns present: {dataset.column_names}")
    return np.asarray(dataset.with_format("numpy", columns=[label_column])[:][label_column], dtype=np.int64)


def _num_classes(dataset: Dataset, label_column: str, labels: np.ndarray) -> int:
    feature = dataset.features[label_column]
    if isinstance(feature, ClassLabel):
        return feature.num_classes
    return int(labels.max()) + 1 if len(labels) else 0


def _with_label_column(dataset: Dataset, label_column: str) -> Dataset:
    # The chosen label column becomes "label"; an existing, different "label" column is dropped.
    if label_column == "label":
        return dataset
    if "label" in dataset.column_names:
        dataset = dataset.remove_columns("label")
    return dataset.rename_column(label_column, "label")


def add_index_column(dataset: Dataset) -> Dataset:
    """Add (or replace) the column `index` = 0..n-1, the row's key in per-sample banks."""
    if "index" in dataset.column_names:
        dataset = dataset.remove_columns("index")
    return dataset.add_column("index", np.arange(len(dataset), dtype=np.int64))


def _record(dataset: Any, metadata: dict[str, Any], num_rows: int | None = None) -> Any:
    # The dataset is new (select/add_column copy the info), so editing its info is local to it.
    # `num_rows` is given for a stream (an IterableDataset has no len()).
    try:
        description = json.loads(dataset.info.description or "{}")
    except json.JSONDecodeError:
        description = {"description": dataset.info.description}
    if not isinstance(description, dict):
        description = {"description": dataset.info.description}
    description[_INFO_KEY] = {**metadata, "num_rows": len(dataset) if num_rows is None else num_rows}
    dataset.info.description = json.dumps(description)
    return dataset


def get_split_metadata(dataset: Dataset) -> dict[str, Any]:
    """What `make_long_tailed` / `balanced_subset` recorded about `dataset` ({} if nothing)."""
    try:
        description = json.loads(dataset.info.description or "{}")
    except json.JSONDecodeError:
        return {}
    metadata = description.get(_INFO_KEY, {}) if isinstance(description, dict) else {}
    return metadata if metadata.get("num_rows") == len(dataset) else {}


def get_class_counts(dataset: Dataset, label_column: str = "label") -> list[int]:
    """Images per class (indexed by label id) of a split.

    Args:
        dataset: A split, typically from `make_long_tailed`.
        label_column: Counted when no counts were recorded (or the rows changed since).

    Returns:
        The count of every class id 0..C-1.
    """
    recorded = get_split_metadata(dataset).get("class_counts")
    if recorded is not None and sum(recorded) == len(dataset):
        return list(recorded)
    labels = _labels_of(dataset, label_column)
    return np.bincount(labels, minlength=_num_classes(dataset, label_column, labels)).tolist()


def default_max_per_class(dataset: Dataset, label_column: str = "label") -> float:
    """n_max for `make_long_tailed`: images / classes (DESIGN.md 4), bounded by the smallest class.

    On the balanced sources of the literature (CIFAR, Fashion-MNIST) this is images / classes; on
    a slightly uneven one (scikit-learn's digits) the smallest class bounds it, so the head class
    never needs more images than it has.
    """
    labels = _labels_of(dataset, label_column)
    return max_per_class_of(labels, _num_classes(dataset, label_column, labels))


def max_per_class_of(labels: Sequence[int] | np.ndarray, num_classes: int) -> float:
    """`default_max_per_class` of a label array: images / classes, bounded by the smallest class."""
    sizes = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    return min(len(labels) / len(sizes), int(sizes.min()))


def make_long_tailed(
    dataset: Dataset,
    imbalance_ratio: float = 100,
    profile: str = "exp",
    seed: int = 0,
    label_column: str = "label",
    class_order: Sequence[int] | str | None = None,
    max_per_class: int | float | None = None,
) -> Dataset:
    """A long-tailed subset of a (balanced) split, per DESIGN.md section 4.

    Args:
        dataset: The source split.
        imbalance_ratio: n_max / n_min, >= 1.
        profile: "exp" or "step".
        seed: Seed of the per-class shuffles.
        label_column: The column with class ids; renamed to `label` in the result.
        class_order: Label ids from head to tail, or a `parse_class_order` text ("identity",
            "permuted": seeded by `seed`); defaults to 0..C-1.
        max_per_class: n_max; defaults to (rows of `dataset`) / C.

    Returns:
        The subset, grouped by class, with columns `label` and `index` (0..n-1) added or
        replaced; its per-class counts are recorded (see `get_class_counts`).
    """
    _check_ratio(imbalance_ratio)
    labels = _labels_of(dataset, label_column)
    num_classes = _num_classes(dataset, label_column, labels)
    if isinstance(class_order, str):
        class_order = parse_class_order(class_order, num_classes, seed)
    indices = long_tailed_indices(
        labels, imbalance_ratio, profile, seed, class_order, num_classes, max_per_class
    )
    subset = add_index_column(_with_label_column(dataset.select(indices), label_column))
    counts = np.bincount(labels[indices], minlength=num_classes).tolist()
    metadata = {
        "kind": "long_tailed",
        "class_counts": counts,
        "imbalance_ratio": imbalance_ratio,
        "profile": profile,
        "seed": seed,
        "max_per_class": max_per_class,
        "class_order": list(_check_class_order(class_order, num_classes)),
    }
    return _record(subset, metadata)


def balanced_subset(
    dataset: Dataset, shots_per_class: int, seed: int = 0, label_column: str = "label"
) -> Dataset:
    """`shots_per_class` images of every class (for 100-shot / 50-shot probes).

    Args:
        dataset: The source split.
        shots_per_class: Images kept per class, >= 1.
        seed: Seed of the per-class shuffles (a `np.random.RandomState`).
        label_column: The column with class ids.

    Returns:
        The subset, grouped by class; its counts are recorded (see `get_class_counts`).
    """
    if shots_per_class < 1:
        raise ValueError(f"shots_per_class must be >= 1, got {shots_per_class}")
    labels = _labels_of(dataset, label_column)
    num_classes = _num_classes(dataset, label_column, labels)
    rng = np.random.RandomState(seed)
    selected: list[int] = []
    for class_id in range(num_classes):
        members = np.where(labels == class_id)[0]
        if len(members) < shots_per_class:
            raise ValueError(
                f"shots_per_class={shots_per_class} but class {_class_name(dataset, label_column, class_id)} "
                f"has only {len(members)} images"
            )
        rng.shuffle(members)
        selected.extend(members[:shots_per_class].tolist())
    metadata = {"kind": "balanced", "class_counts": [shots_per_class] * num_classes, "seed": seed}
    return _record(dataset.select(selected), metadata)


def _class_name(dataset: Dataset, label_column: str, class_id: int) -> str:
    feature = dataset.features[label_column]
    if isinstance(feature, ClassLabel):
        return f"{class_id} ({feature.int2str(class_id)!r})"
    return str(class_id)
