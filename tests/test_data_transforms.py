"""Augmentations, two-view datasets, determinism across epochs and DataLoader workers."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from gh_hf.data import (
    DATASET_STATS,
    TwoViewTransform,
    add_index_column,
    build_eval_transform,
    build_pretrain_transform,
    default_normalization,
    loader_throughput,
    measure_throughput,
    with_eval_transform,
    with_two_views,
)
from gh_hf.data.transforms import blur_kernel_size, recipe_crop_scale

MEAN3, STD3 = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def rgb_image(seed: int = 0, size: tuple[int, int] = (20, 24)) -> PILImage.Image:
    return PILImage.fromarray(np.random.RandomState(seed).randint(0, 256, (*size, 3), dtype=np.uint8))


def image_dataset(count: int = 12, mode: str = "RGB") -> Dataset:
    rng = np.random.RandomState(0)
    shape = (14, 14, 3) if mode == "RGB" else (14, 14)
    features = Features({"image": Image(), "label": ClassLabel(num_classes=3)})
    images = [rng.randint(0, 256, shape, dtype=np.uint8) for _ in range(count)]
    return add_index_column(
        Dataset.from_dict({"image": images, "label": [i % 3 for i in range(count)]}, features)
    )


@pytest.mark.parametrize("recipe", ["cifar", "imagenet"])
def test_pretrain_view_shape_dtype_and_views_differ(recipe):
    transform = TwoViewTransform(build_pretrain_transform(16, 3, MEAN3, STD3, recipe=recipe), seed=0)
    views = transform(rgb_image(), index=5)
    assert views.shape == (2, 3, 16, 16) and views.dtype == torch.float32
    assert not torch.equal(views[0], views[1])


@pytest.mark.parametrize(("source_mode", "in_chans"), [("L", 1), ("RGB", 1), ("L", 3)])
def test_pretrain_view_channels_follow_in_chans(source_mode, in_chans):
    image = rgb_image().convert(source_mode)
    mean, std = (0.5,) * in_chans, (0.25,) * in_chans
    view = build_pretrain_transform(12, in_chans, mean, std)(image)
    assert view.shape == (in_chans, 12, 12) and view.dtype == torch.float32
    assert view.min() >= (0 - 0.5) / 0.25 and view.max() <= (1 - 0.5) / 0.25  # normalised from [0, 1]


def test_grayscale_recipe_has_no_colour_ops():
    ops = build_pretrain_transform(32, 1, (0.5,), (0.5,), recipe="imagenet").transforms
    assert not any(isinstance(op, v2.RandomGrayscale) for op in ops)
    jitter = next(op for op in ops if isinstance(op, v2.RandomApply)).transforms[0]
    assert jitter.saturation is None and jitter.hue is None and jitter.brightness is not None
    blur = ops[-2].transforms[0]
    assert isinstance(blur, v2.GaussianBlur) and blur.sigma == [0.1, 2.0]


def test_blur_kernel_is_odd_and_about_ten_percent():
    assert [blur_kernel_size(size) for size in (16, 32, 96, 224)] == [3, 3, 9, 23]


def test_transform_argument_errors():
    with pytest.raises(ValueError, match="recipe='simclr' is not supported; allowed: cifar, imagenet"):
        build_pretrain_transform(32, 3, MEAN3, STD3, recipe="simclr")
    with pytest.raises(ValueError, match="in_chans must be 1 or 3, got 2"):
        build_eval_transform(32, 2, (0.5, 0.5), (0.5, 0.5))
    with pytest.raises(ValueError, match=r"in_chans=1 entries each, got mean=\(0.5, 0.4, 0.3\)"):
        build_pretrain_transform(32, 1, MEAN3, STD3)
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        TwoViewTransform(build_eval_transform(8, 3, MEAN3, STD3), seed=-1)


def test_views_are_a_function_of_seed_epoch_and_index():
    transform = TwoViewTransform(build_pretrain_transform(16, 3, MEAN3, STD3), seed=7)
    image = rgb_image()
    first = transform(image, index=3)
    torch.manual_seed(123)
    random.seed(123)
    assert torch.equal(transform(image, index=3), first)
    assert torch.equal(TwoViewTransform(transform.base_transform, seed=7)(image, index=3), first)
    assert not torch.equal(transform(image, index=4), first)
    assert not torch.equal(TwoViewTransform(transform.base_transform, seed=8)(image, index=3), first)
    transform.set_epoch(1)
    assert transform.epoch == 1
    assert not torch.equal(transform(image, index=3), first)
    assert torch.equal(transform(image, index=3, epoch=0), first)


def test_caller_rng_state_is_untouched():
    transform = TwoViewTransform(build_pretrain_transform(16, 3, MEAN3, STD3))
    torch.manual_seed(0)
    random.seed(0)
    expected = (torch.rand(3), random.random())
    torch.manual_seed(0)
    random.seed(0)
    transform(rgb_image(), index=0)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def epoch_batches(loader: DataLoader, transform: TwoViewTransform, epoch: int) -> list[dict]:
    transform.set_epoch(epoch)
    return list(loader)


def test_dataloader_batches_identical_for_0_and_2_persistent_workers():
    dataset = image_dataset()
    transform = TwoViewTransform(build_pretrain_transform(8, 3, MEAN3, STD3), seed=1)
    two_view = with_two_views(dataset, transform)
    serial = DataLoader(two_view, batch_size=4)
    parallel = DataLoader(two_view, batch_size=4, num_workers=2, persistent_workers=True)
    for epoch in (0, 1):  # epoch 1 checks that persistent workers see set_epoch
        expected = epoch_batches(serial, transform, epoch)
        batches = epoch_batches(parallel, transform, epoch)
        assert len(batches) == len(expected) == 3
        for batch, reference in zip(batches, expected, strict=True):
            assert batch["pixel_values"].shape == (4, 2, 3, 8, 8)
            assert batch["pixel_values"].dtype == torch.float32
            assert torch.equal(batch["pixel_values"], reference["pixel_values"])
            assert torch.equal(batch["index"], reference["index"]) and batch["label"].dtype == torch.int64
    assert not torch.equal(
        epoch_batches(serial, transform, 0)[0]["pixel_values"], expected[0]["pixel_values"]
    )


def test_with_two_views_grayscale_batch():
    dataset = image_dataset(count=6, mode="L")
    transform = TwoViewTransform(build_pretrain_transform(10, 1, (0.3,), (0.3,)))
    batch = next(iter(DataLoader(with_two_views(dataset, transform), batch_size=6)))
    assert batch["pixel_values"].shape == (6, 2, 1, 10, 10)
    assert batch["label"].tolist() == [0, 1, 2, 0, 1, 2] and batch["index"].tolist() == list(range(6))
    assert dataset.format["type"] is None  # the input dataset is left unformatted


def test_with_two_views_needs_index_column():
    dataset = image_dataset().remove_columns("index")
    transform = TwoViewTransform(build_pretrain_transform(8, 3, MEAN3, STD3))
    with pytest.raises(ValueError, match=r"column 'index' not found; columns present: \['image', 'label'\]"):
        with_two_views(dataset, transform)


def test_eval_transform_is_deterministic_resize_and_crop():
    transform = build_eval_transform(16, 3, MEAN3, STD3)
    image = rgb_image(size=(20, 24))
    view = transform(image)
    assert view.shape == (3, 16, 16) and torch.equal(view, transform(image))
    gray = build_eval_transform(8, 1, (0.5,), (0.5,), crop_pct=0.875)(image)
    assert gray.shape == (1, 8, 8)
    square = PILImage.fromarray(np.full((4, 4, 3), 255, dtype=np.uint8))
    expected = (1 - torch.tensor(MEAN3)) / torch.tensor(STD3)
    assert torch.allclose(transform(square), expected.view(3, 1, 1).expand(3, 16, 16))


def test_with_eval_transform_batches():
    dataset = image_dataset(count=5)
    batch = next(iter(DataLoader(with_eval_transform(dataset, build_eval_transform(8, 3, MEAN3, STD3)), 5)))
    assert batch["pixel_values"].shape == (5, 3, 8, 8) and batch["index"].tolist() == list(range(5))
    no_index = with_eval_transform(
        dataset.remove_columns("index"), build_eval_transform(8, 1, (0.5,), (0.5,))
    )
    assert set(no_index[0]) == {"pixel_values", "label"} and no_index[0]["pixel_values"].shape == (1, 8, 8)


def test_default_normalization():
    assert default_normalization("cifar100", 3) == DATASET_STATS["cifar100"]
    assert default_normalization("fashion-mnist", 3) == ((0.2860,) * 3, (0.3530,) * 3)
    (mean,), (std,) = default_normalization("imagenet", 1)
    assert mean == pytest.approx(0.299 * 0.485 + 0.587 * 0.456 + 0.114 * 0.406)
    assert std == pytest.approx(0.299 * 0.229 + 0.587 * 0.224 + 0.114 * 0.225)
    assert default_normalization("places_lt", 3) == DATASET_STATS["imagenet"]
    with pytest.raises(ValueError, match="name='svhn' has no statistics; allowed: fashion_mnist, digits"):
        default_normalization("svhn", 3)


def test_measure_throughput_counts_the_timed_images(monkeypatch):
    # A clock that advances 1 s per reading: the rate is exactly the number of timed images.
    ticks = iter(range(100))
    monkeypatch.setattr(loader_throughput.time, "perf_counter", lambda: float(next(ticks)))
    transform = TwoViewTransform(build_pretrain_transform(8, 3, MEAN3, STD3))
    # 12 rows, batches of 4: the first batch is not timed, the next 2 are.
    rate = measure_throughput(image_dataset(), transform, batch_size=4, num_workers=0, num_batches=2)
    assert rate == 8.0
    # Asked for more batches than one pass holds: only the 2 that exist are timed.
    rate = measure_throughput(image_dataset(), transform, batch_size=4, num_workers=0, num_batches=5)
    assert rate == 8.0
    with pytest.raises(ValueError, match="num_batches must be >= 1, got 0"):
        measure_throughput(image_dataset(), transform, num_batches=0)


def test_crop_min_scale_overrides_the_recipe_in_both_view_pipelines():
    from gh_hf.data import BatchedTwoViews

    assert recipe_crop_scale("cifar") == (0.1, 1.0) and recipe_crop_scale("imagenet", 0.3) == (0.3, 1.0)
    ops = build_pretrain_transform(28, 1, (0.5,), (0.5,), crop_min_scale=0.35).transforms
    crop = next(op for op in ops if isinstance(op, v2.RandomResizedCrop))
    assert tuple(crop.scale) == (0.35, 1.0)
    assert BatchedTwoViews(28, 1, (0.5,), (0.5,), crop_min_scale=0.35).scale == (0.35, 1.0)
    assert BatchedTwoViews(28, 1, (0.5,), (0.5,)).scale == (0.1, 1.0)
    for bad in (0, 1.5, -0.1):
        message = rf"crop min_scale={bad!r} is not supported; allowed: a number in \(0, 1\]"
        with pytest.raises(ValueError, match=message):
            recipe_crop_scale("cifar", bad)


def test_crop_min_scale_argument_is_validated():
    from gh_hf.training.arguments import DataArguments

    assert DataArguments(crop_min_scale=0.3).crop_min_scale == 0.3
    with pytest.raises(ValueError, match=r"--crop_min_scale=1.5 is invalid \(data\): must be in \(0, 1\]"):
        DataArguments(crop_min_scale=1.5)
