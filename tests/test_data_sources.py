"""Image sources: Hub schema (monkeypatched), digits, image folders, split files, Fashion-MNIST."""

from __future__ import annotations

import gzip
from pathlib import Path

import datasets
import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage

import gh_hf.data.fashion_mnist as fashion_mnist_module
import gh_hf.data.sources as sources
from gh_hf.data import (
    FASHION_MNIST_CLASSES,
    DataSourceNotFoundError,
    get_class_counts,
    load_image_dataset,
    make_long_tailed,
    read_idx,
)

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def random_images(count: int, shape: tuple[int, ...], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.RandomState(seed)
    return [rng.randint(0, 256, shape, dtype=np.uint8) for _ in range(count)]


def cifar10_hub_dict() -> DatasetDict:
    features = Features({"img": Image(), "label": ClassLabel(names=CIFAR10_NAMES)})
    return DatasetDict(
        {
            split: Dataset.from_dict(
                {"img": random_images(4, (32, 32, 3)), "label": [0, 3, 9, 3]}, features=features
            )
            for split in ("train", "test")
        }
    )


def cifar100_hub_split() -> Dataset:
    features = Features(
        {
            "img": Image(),
            "fine_label": ClassLabel(names=[f"fine{i}" for i in range(100)]),
            "coarse_label": ClassLabel(names=[f"coarse{i}" for i in range(20)]),
        }
    )
    data = {"img": random_images(3, (32, 32, 3)), "fine_label": [99, 5, 42], "coarse_label": [1, 2, 3]}
    return Dataset.from_dict(data, features=features)


def test_cifar10_hub_schema_is_converted(monkeypatch):
    calls = []

    def fake_hub(repo_id, split, **kwargs):
        calls.append((repo_id, split))
        return cifar10_hub_dict()

    monkeypatch.setattr(sources, "_load_hub_dataset", fake_hub)
    dataset = load_image_dataset("cifar10", split="test")
    assert calls == [("uoft-cs/cifar10", "test")]
    assert dataset.column_names == ["image", "label"]
    assert dataset.features["label"].names == CIFAR10_NAMES
    assert dataset["label"][:] == [0, 3, 9, 3]
    assert dataset[0]["image"].size == (32, 32)


def test_cifar100_hub_schema_uses_fine_labels(monkeypatch):
    monkeypatch.setattr(sources, "_load_hub_dataset", lambda repo_id, split, **kwargs: cifar100_hub_split())
    dataset = load_image_dataset("CIFAR-100", split="train")
    assert dataset.column_names == ["image", "label"]
    assert dataset["label"][:] == [99, 5, 42]
    assert dataset.features["label"].num_classes == 100
    assert dataset.features["label"].int2str(99) == "fine99"


def test_cifar_from_save_to_disk_copy(tmp_path):
    cifar10_hub_dict().save_to_disk(str(tmp_path / "cifar10"))
    dataset = load_image_dataset("cifar10", split="train", data_dir=str(tmp_path / "cifar10"))
    assert dataset.column_names == ["image", "label"]
    assert len(dataset) == 4


def test_digits_split_is_stratified_and_disjoint():
    train = load_image_dataset("digits", split="train")
    test = load_image_dataset("digits", split="test")
    assert (len(train), len(test)) == (1437, 360)
    image = train[0]["image"]
    assert image.mode == "L" and image.size == (8, 8)
    assert np.asarray(image).max() > 200  # 0..16 scaled to 0..255
    assert train.features["label"].names == [str(d) for d in range(10)]
    test_counts = get_class_counts(test)
    assert min(test_counts) >= 35 and max(test_counts) <= 37
    pixels = {np.asarray(row["image"]).tobytes() for row in train}
    assert sum(np.asarray(row["image"]).tobytes() in pixels for row in test) < 10  # few duplicate digits


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="name='mnist' is not a known source; allowed: cifar10, cifar100"):
        load_image_dataset("mnist")
    with pytest.raises(ValueError, match="split='validation' is not available; allowed: train, test"):
        load_image_dataset("digits", split="validation")


def write_image_folder(root: Path) -> None:
    for split, count in (("train", 3), ("test", 2)):
        for class_name in ("cat", "dog"):
            folder = root / split / class_name
            folder.mkdir(parents=True)
            for i, pixels in enumerate(random_images(count, (10, 12, 3))):
                PILImage.fromarray(pixels).save(folder / f"{i}.png")


def test_image_folder_splits(tmp_path):
    write_image_folder(tmp_path / "images")
    cache = str(tmp_path / "cache")
    test = load_image_dataset("imagefolder", split="test", data_dir=str(tmp_path / "images"), cache_dir=cache)
    assert test.column_names == ["image", "label"]
    assert len(test) == 4 and test.features["label"].names == ["cat", "dog"]
    assert sorted(test["label"][:]) == [0, 0, 1, 1]
    train = load_image_dataset(str(tmp_path / "images"), split="train", cache_dir=cache)
    assert len(train) == 6 and train[0]["image"].size == (12, 10)
    with pytest.raises(ValueError, match="split='validation' is not in the dataset; available: train, test"):
        load_image_dataset(str(tmp_path / "images"), split="validation", cache_dir=cache)


def write_split_file(tmp_path: Path, lines: list[str]) -> Path:
    for relative in {line.rsplit(maxsplit=1)[0] for line in lines}:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(random_images(1, (6, 5, 3))[0]).save(tmp_path / relative)
    split_file = tmp_path / "train.txt"
    split_file.write_text("\n".join(lines) + "\n\n")
    return split_file


def test_split_file(tmp_path):
    split_file = write_split_file(tmp_path, ["train/n01/a.png 0", "train/n02/b b.png 3", "train/n01/c.png 1"])
    dataset = load_image_dataset("split_file", split_file=str(split_file), image_root=str(tmp_path))
    assert dataset.column_names == ["image", "label"]
    assert dataset["label"][:] == [0, 3, 1]
    assert dataset.features["label"].names == ["0", "1", "2", "3"]
    assert dataset[1]["image"].size == (5, 6)
    named = load_image_dataset(str(split_file), class_names=["a", "b", "c", "d", "e"])  # root = file's folder
    assert named.features["label"].names == ["a", "b", "c", "d", "e"]


def test_split_file_class_counts(tmp_path):
    from gh_hf.data import split_file_class_counts

    split_file = tmp_path / "lt.txt"
    split_file.write_text("a.jpg 0\nb.jpg 0\nc.jpg 2\n\nd.jpg 0\n")  # no image needs to exist
    assert split_file_class_counts(str(split_file)) == [3, 0, 1]
    assert split_file_class_counts(str(split_file), num_classes=5) == [3, 0, 1, 0, 0]
    with pytest.raises(ValueError, match="num_classes=2 but the split file has label 2"):
        split_file_class_counts(str(split_file), num_classes=2)
    with pytest.raises(FileNotFoundError, match="split file not found"):
        split_file_class_counts(str(tmp_path / "missing.txt"))


def test_split_file_errors(tmp_path):
    split_file = write_split_file(tmp_path, ["x/a.png 0"])
    with split_file.open("a") as handle:
        handle.write("x/missing1.png 1\nx/missing2.png 1\n")
    with pytest.raises(FileNotFoundError, match=r"2 image\(s\).*first missing: .*x/missing1.png"):
        load_image_dataset("split_file", split_file=str(split_file))
    bad = tmp_path / "bad.txt"
    bad.write_text("x/a.png cat\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected 'relative/path label'"):
        load_image_dataset(str(bad))
    with pytest.raises(ValueError, match="needs split_file="):
        load_image_dataset("split_file")


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_idx_files_is_cached(tmp_path, monkeypatch):
    images = np.stack(random_images(6, (28, 28)))
    labels = np.array([0, 9, 3, 3, 1, 7], dtype=np.uint8)
    for prefix in ("train", "t10k"):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), images)
    monkeypatch.setenv("GH_HF_CACHE", str(tmp_path / "cache"))
    dataset = load_image_dataset("fashion_mnist", split="train", data_dir=str(tmp_path))
    assert dataset.features["label"].names == FASHION_MNIST_CLASSES
    assert dataset["label"][:] == labels.tolist()
    assert dataset[1]["image"].mode == "L" and np.array_equal(np.asarray(dataset[1]["image"]), images[1])
    assert dataset.cache_files[0]["filename"].startswith(str(tmp_path / "cache"))

    def no_rebuild(*args):
        raise AssertionError("the cached copy should have been loaded")

    monkeypatch.setattr(fashion_mnist_module, "_build_from_idx", no_rebuild)
    assert (
        load_image_dataset("fashion_mnist", split="train", data_dir=str(tmp_path))["label"][:]
        == labels.tolist()
    )


def test_fashion_mnist_missing_files_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataSourceNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_image_dataset("fashion_mnist", data_dir=str(tmp_path))


def test_fashion_mnist_missing_files_online_uses_the_hub_copy(tmp_path, monkeypatch):
    # The Hub's zalando-datasets/fashion_mnist schema: image (Image) and an integer label.
    hub_split = Dataset.from_dict(
        {"image": [PILImage.fromarray(a) for a in random_images(3, (28, 28))], "label": [9, 0, 4]},
        features=Features({"image": Image(), "label": datasets.Value("int64")}),
    )
    calls = []

    def fake_load_dataset(repo_id, split=None, **kwargs):
        calls.append((repo_id, split, kwargs))
        return hub_split

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dataset = load_image_dataset("fashion_mnist", split="test", data_dir=str(tmp_path), cache_dir="hub-cache")
    assert calls == [(fashion_mnist_module.FASHION_MNIST_HUB_ID, "test", {"cache_dir": "hub-cache"})]
    assert dataset.features["label"].names == FASHION_MNIST_CLASSES
    assert dataset["label"][:] == [9, 0, 4]


@pytest.fixture(scope="module")
def fashion_mnist_cache(tmp_path_factory):
    if not Path(fashion_mnist_module.FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist is not installed (/usr/share/datasets/fashion-mnist)")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GH_HF_CACHE", str(tmp_path_factory.mktemp("gh_hf_cache")))
        yield


def test_fashion_mnist_package_splits_and_long_tail(fashion_mnist_cache):
    train = load_image_dataset("fashion_mnist", split="train")
    test = load_image_dataset("fashion-mnist", split="test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train[0]["image"].mode == "L" and train[0]["image"].size == (28, 28)
    assert get_class_counts(test) == [1000] * 10
    lt = make_long_tailed(train, imbalance_ratio=100)
    assert len(lt) == 14886
    assert get_class_counts(lt) == [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60]
