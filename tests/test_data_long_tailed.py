"""Long-tailed counts and indices (DESIGN.md section 4), metadata, balanced subsets."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Value, load_from_disk

from gh_hf.data import (
    add_index_column,
    balanced_subset,
    get_class_counts,
    get_split_metadata,
    long_tailed_counts,
    long_tailed_indices,
    make_long_tailed,
)

FASHION_MNIST_LT_100 = [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]


def reference_indices(labels: np.ndarray, ratio: float, seed: int) -> list[int]:
    """Slow reference, written from DESIGN.md section 4 the way the paper's code does it."""
    num_classes = int(max(labels)) + 1
    n_max = len(labels) / num_classes
    counts = [int(n_max * (1 / ratio) ** (c / (num_classes - 1))) for c in range(num_classes)]
    saved = np.random.get_state()
    np.random.seed(seed)  # numpy's legacy global RNG, as in the paper's code
    selected = []
    for c in range(num_classes):
        members = np.array([i for i in range(len(labels)) if labels[i] == c])
        np.random.shuffle(members)
        selected += [int(i) for i in members[: counts[c]]]
    np.random.set_state(saved)
    return selected


def shuffled_labels(per_class: int, num_classes: int, seed: int = 1) -> np.ndarray:
    labels = np.repeat(np.arange(num_classes), per_class)
    np.random.RandomState(seed).shuffle(labels)
    return labels


def label_dataset(labels: np.ndarray, column: str = "label") -> Dataset:
    num_classes = int(labels.max()) + 1
    features = Features({column: ClassLabel(num_classes=num_classes), "value": Value("int64")})
    return Dataset.from_dict({column: labels, "value": np.arange(len(labels)) * 10}, features=features)


def test_counts_cifar100_ratio_100():
    counts = long_tailed_counts(500, 100, 100)
    assert counts[0] == 500 and counts[-1] == 5
    assert sum(counts) == 10847
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False))


def test_counts_fashion_mnist_ratio_100():
    counts = long_tailed_counts(60000 / 10, 10, 100)
    assert counts == FASHION_MNIST_LT_100
    assert sum(counts) == 14886


def test_counts_step_profile():
    assert long_tailed_counts(500, 10, 10, profile="step") == [500] * 5 + [50] * 5
    assert long_tailed_counts(500, 5, 100, profile="step") == [500, 500, 5, 5, 5]


def test_counts_ratio_one_is_balanced():
    assert long_tailed_counts(37.5, 4, 1) == [37, 37, 37, 37]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"imbalance_ratio": 0.5}, "imbalance_ratio must be >= 1"),
        ({"imbalance_ratio": 10, "profile": "linear"}, "profile='linear'.*exp, step"),
        ({"imbalance_ratio": 10, "num_classes": 0}, "num_classes must be >= 1"),
    ],
)
def test_counts_errors(kwargs, match):
    args = {"max_per_class": 100, "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        long_tailed_counts(**args)


def test_indices_cifar100_shape_match_reference():
    labels = shuffled_labels(500, 100)
    indices = long_tailed_indices(labels, 100, seed=0)
    assert len(indices) == 10847
    assert indices == reference_indices(labels, 100, seed=0)


@pytest.mark.parametrize("seed", [0, 3])
def test_indices_match_reference_small(seed):
    labels = shuffled_labels(40, 7, seed=seed + 5)
    indices = long_tailed_indices(labels, 8, seed=seed)
    assert indices == reference_indices(labels, 8, seed=seed)
    assert len(set(indices)) == len(indices)
    assert np.bincount(labels[indices]).tolist() == long_tailed_counts(40, 7, 8)


def test_indices_seed_changes_selection():
    labels = shuffled_labels(40, 5)
    assert long_tailed_indices(labels, 4, seed=0) != long_tailed_indices(labels, 4, seed=1)


def test_indices_class_order_puts_given_class_at_head():
    labels = shuffled_labels(30, 4)
    indices = long_tailed_indices(labels, 10, class_order=[2, 0, 3, 1])
    counts = np.bincount(labels[indices], minlength=4).tolist()
    expected = long_tailed_counts(30, 4, 10)
    assert counts == [expected[1], expected[3], expected[0], expected[2]]
    assert labels[indices[0]] == 2


def test_indices_errors():
    labels = shuffled_labels(20, 4)
    with pytest.raises(ValueError, match="permutation of 0..3"):
        long_tailed_indices(labels, 10, class_order=[0, 1, 1, 3])
    short = np.concatenate([labels[labels != 0], np.zeros(5, dtype=labels.dtype)])  # class 0: 5 images
    with pytest.raises(ValueError, match="class 0 has 5 images.*needs 16"):
        long_tailed_indices(short, 10)


def test_indices_max_per_class():
    labels = shuffled_labels(20, 4)
    indices = long_tailed_indices(labels, 2, max_per_class=10)
    assert np.bincount(labels[indices]).tolist() == long_tailed_counts(10, 4, 2)


def test_make_long_tailed_columns_counts_and_metadata():
    labels = shuffled_labels(30, 5)
    source = label_dataset(labels)
    lt = make_long_tailed(source, imbalance_ratio=10, seed=0)
    expected = long_tailed_counts(30, 5, 10)
    assert lt.column_names == ["label", "value", "index"]
    assert lt["index"][:] == list(range(len(lt)))
    assert lt["value"][:] == [10 * i for i in long_tailed_indices(labels, 10, seed=0)]
    assert get_class_counts(lt) == expected
    metadata = get_split_metadata(lt)
    assert metadata["imbalance_ratio"] == 10 and metadata["profile"] == "exp" and metadata["seed"] == 0
    assert source.info.description == ""  # the source split is left alone
    assert get_split_metadata(source) == {}


def test_make_long_tailed_counts_survive_save_to_disk(tmp_path):
    lt = make_long_tailed(label_dataset(shuffled_labels(30, 5)), imbalance_ratio=10, profile="step")
    lt.save_to_disk(str(tmp_path / "lt"))
    reloaded = load_from_disk(str(tmp_path / "lt"))
    assert get_split_metadata(reloaded)["class_counts"] == [30, 30, 3, 3, 3]
    assert get_class_counts(reloaded) == [30, 30, 3, 3, 3]


def test_make_long_tailed_renames_label_column():
    source = label_dataset(shuffled_labels(30, 5), column="fine_label")
    lt = make_long_tailed(source, imbalance_ratio=10, label_column="fine_label")
    assert "label" in lt.column_names and "fine_label" not in lt.column_names
    assert isinstance(lt.features["label"], ClassLabel)


def test_make_long_tailed_class_counts_indexed_by_label_id():
    lt = make_long_tailed(label_dataset(shuffled_labels(30, 4)), 10, class_order=[3, 2, 1, 0])
    assert get_class_counts(lt) == long_tailed_counts(30, 4, 10)[::-1]


def test_get_class_counts_counts_when_rows_changed():
    lt = make_long_tailed(label_dataset(shuffled_labels(30, 5)), imbalance_ratio=10)
    head_only = lt.filter(lambda row: row["label"] == 0)
    assert get_class_counts(head_only) == [30, 0, 0, 0, 0]
    assert get_class_counts(label_dataset(np.array([0, 2, 2]))) == [1, 0, 2]


def test_make_long_tailed_errors():
    source = label_dataset(shuffled_labels(10, 3))
    with pytest.raises(ValueError, match=r"label_column='fine_label' not found.*\['label', 'value'\]"):
        make_long_tailed(source, label_column="fine_label")
    with pytest.raises(ValueError, match=r"imbalance_ratio must be >= 1 \(n_max / n_min\), got 0.5"):
        make_long_tailed(source, imbalance_ratio=0.5)
    with pytest.raises(ValueError, match="profile='zipf'"):
        make_long_tailed(source, profile="zipf")


def test_add_index_column_replaces_existing():
    dataset = add_index_column(label_dataset(np.array([1, 0, 1])).select([2, 0]))
    assert dataset["index"][:] == [0, 1]
    assert add_index_column(dataset)["index"][:] == [0, 1]


def test_balanced_subset_is_balanced_and_deterministic():
    source = label_dataset(shuffled_labels(12, 4))
    subset = balanced_subset(source, 5, seed=3)
    assert get_class_counts(subset) == [5, 5, 5, 5]
    assert np.bincount(subset["label"][:]).tolist() == [5, 5, 5, 5]
    assert subset["value"][:] == balanced_subset(source, 5, seed=3)["value"][:]
    assert subset["value"][:] != balanced_subset(source, 5, seed=4)["value"][:]


def test_balanced_subset_of_long_tailed_split_overrides_counts():
    lt = make_long_tailed(label_dataset(shuffled_labels(30, 3)), imbalance_ratio=3)
    assert get_class_counts(balanced_subset(lt, 10)) == [10, 10, 10]


def test_balanced_subset_errors():
    labels = np.array([0] * 6 + [1] * 3)
    features = Features({"label": ClassLabel(names=["cat", "dog"])})
    source = Dataset.from_dict({"label": labels}, features=features)
    with pytest.raises(ValueError, match=r"shots_per_class=4 but class 1 \('dog'\) has only 3 images"):
        balanced_subset(source, 4)
    with pytest.raises(ValueError, match="shots_per_class must be >= 1"):
        balanced_subset(source, 0)
    with pytest.raises(ValueError, match=r"label_column='y' not found.*\['label'\]"):
        balanced_subset(source, 1, label_column="y")


def test_permuted_class_order_is_seeded_and_recorded():
    from gh_hf.data import get_class_counts, get_split_metadata, parse_class_order

    labels = np.repeat(np.arange(5), 40)
    features = Features({"label": ClassLabel(num_classes=5)})
    dataset = Dataset.from_dict({"label": labels.tolist()}, features)
    order = parse_class_order("permuted", 5, seed=3)
    assert order == np.random.RandomState(3).permutation(5).tolist() and order != [0, 1, 2, 3, 4]
    split = make_long_tailed(dataset, 10, seed=3, class_order="permuted")
    counts = get_class_counts(split)
    assert counts[order[0]] == 40 and counts[order[-1]] == 4  # head and tail follow the order
    assert get_split_metadata(split)["class_order"] == order
    assert parse_class_order("identity", 5) is None
    assert parse_class_order("4,3,2,1,0", 5) == [4, 3, 2, 1, 0]
    with pytest.raises(ValueError, match="permutation of 0..4"):
        parse_class_order("0,1,2", 5)
    with pytest.raises(ValueError, match="--class_order='tail' is invalid"):
        parse_class_order("tail", 5)
