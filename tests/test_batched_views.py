"""Batched views: the per-image recipe's statistics, reproducibility per sample, the in-memory split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from gh_hf.data import (
    BatchedTwoViews,
    DecodedImages,
    TwoViewTransform,
    add_index_column,
    build_pretrain_transform,
    collate_batch,
    decode_images,
)
from gh_hf.data.batched_views import _JITTER_OPS, crop_boxes, per_sample_uniforms, resized_crops
from gh_hf.training.arguments import DataArguments
from gh_hf.training.data import resolve_view_pipeline


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(a.double().numpy()), np.sort(b.double().numpy())
    points = np.concatenate([a, b])
    gap = np.searchsorted(a, points, side="right") / len(a) - np.searchsorted(b, points, side="right") / len(
        b
    )
    return float(np.abs(gap).max())


# Critical value of the two-sample KS test at alpha = 0.001 for n = m = 3000: 1.95 * sqrt(2 / 3000).
KS_CRITICAL_3000 = 1.95 * (2 / 3000) ** 0.5


def test_uniforms_depend_only_on_seed_epoch_index_view_and_draw():
    indices = torch.tensor([5, 17, 3, 1_000_000_007])
    draws = per_sample_uniforms(1, 2, indices, 0, 6)
    assert draws.shape == (4, 6) and draws.dtype == torch.float32
    assert torch.equal(draws[[2, 0]], per_sample_uniforms(1, 2, indices[[2, 0]], 0, 6))  # any batch
    for other in [
        per_sample_uniforms(2, 2, indices, 0, 6),
        per_sample_uniforms(1, 3, indices, 0, 6),
        per_sample_uniforms(1, 2, indices + 1, 0, 6),
        per_sample_uniforms(1, 2, indices, 1, 6),
    ]:
        assert (other != draws).float().mean() > 0.9
    many = per_sample_uniforms(0, 0, torch.arange(20_000), 0, 3)
    assert many.min() >= 0 and many.max() < 1
    uniform = torch.rand(20_000, generator=torch.Generator().manual_seed(0))
    for column in range(3):
        assert ks_statistic(many[:, column], uniform) < 1.95 * (2 / 20_000) ** 0.5


@pytest.mark.parametrize(("height", "width", "scale"), [(28, 28, (0.1, 1.0)), (24, 40, (0.08, 1.0))])
def test_crop_boxes_follow_torchvision_random_resized_crop(height, width, scale):
    ours = crop_boxes(per_sample_uniforms(0, 0, torch.arange(3000), 0, 22), height, width, scale)
    crop = v2.RandomResizedCrop(8, scale=scale)
    torch.manual_seed(0)
    params = [crop.make_params([torch.zeros(1, height, width)]) for _ in range(3000)]
    theirs = torch.tensor([[p["top"], p["left"], p["height"], p["width"]] for p in params]).float()
    for boxes in (ours, theirs):  # inside the image
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= height).all()
        assert (boxes[:, 1] + boxes[:, 3] <= width).all()
    area = lambda b: b[:, 2] * b[:, 3] / (height * width)  # noqa: E731
    aspect = lambda b: b[:, 3] / b[:, 2]  # noqa: E731
    for statistic in (area, aspect, lambda b: b[:, 0], lambda b: b[:, 1]):
        assert ks_statistic(statistic(ours), statistic(theirs)) < KS_CRITICAL_3000


def test_resized_crop_of_the_whole_image_is_the_image_and_flip_mirrors_it():
    images = torch.rand(2, 3, 9, 9)
    whole = torch.tensor([[0.0, 0.0, 9.0, 9.0]] * 2)
    out = resized_crops(images, whole, torch.tensor([False, True]), 9)
    torch.testing.assert_close(out[0], images[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], images[1].flip(-1), atol=1e-5, rtol=0)
    # A 3x3 box upscaled 3x: each output 3x3 block's centre pixel is the source pixel.
    box = torch.tensor([[2.0, 4.0, 3.0, 3.0]])
    up = resized_crops(images[:1], box, torch.tensor([False]), 9)
    torch.testing.assert_close(up[0, :, 1::3, 1::3], images[0, :, 2:5, 4:7], atol=1e-5, rtol=0)


def _constant_image_means(transform, image_value: int, in_chans: int, count: int) -> torch.Tensor:
    """Per-view mean pixel (in [0, 1]) of `count` views of a constant image, un-normalised."""
    return transform(image_value, in_chans, count).mean(dim=(1, 2, 3)) * 0.25 + 0.5


def _per_image_views(value: tuple[int, ...], count: int) -> torch.Tensor:
    from PIL import Image as PILImage

    in_chans = len(value)
    mode = "L" if in_chans == 1 else "RGB"
    image = PILImage.new(mode, (16, 16), value if in_chans == 3 else value[0])
    two_views = TwoViewTransform(
        build_pretrain_transform(16, in_chans, (0.5,) * in_chans, (0.25,) * in_chans)
    )
    return torch.cat([two_views(image, index) for index in range(count // 2)])  # (count, C, 16, 16)


def _batched_views(value: tuple[int, ...], count: int) -> torch.Tensor:
    in_chans = len(value)
    images = torch.tensor(value, dtype=torch.uint8).view(1, in_chans, 1, 1).expand(count // 2, -1, 16, 16)
    two_views = BatchedTwoViews(16, in_chans, (0.5,) * in_chans, (0.25,) * in_chans)
    return two_views(images.contiguous(), torch.arange(count // 2)).flatten(0, 1)


@pytest.mark.parametrize("value", [(100,), (200, 60, 30)])
def test_colour_statistics_match_the_per_image_pipeline(value):
    """Constant images isolate the colour ops: brightness, contrast, saturation, hue, grayscale.

    Per channel, the distribution of a view's mean value is compared between the two paths. The
    per-image path works on uint8 PIL images (values truncated after each op, hue in 8 bits), the
    batched one in float with torchvision's tensor definitions (tested exactly below); measured, the
    means differ by at most 2.5/255, hence the 3/255 allowance.
    """
    per_image, batched = _per_image_views(value, 3000), _batched_views(value, 3000)
    assert per_image.shape == batched.shape
    for channel in range(len(value)):
        a = per_image[:, channel].mean(dim=(1, 2)) * 0.25 + 0.5
        b = batched[:, channel].mean(dim=(1, 2)) * 0.25 + 0.5
        assert ks_statistic(a, b) < KS_CRITICAL_3000 + 0.02
        assert abs(float(a.mean() - b.mean())) < 3 / 255


@pytest.mark.parametrize(
    ("name", "factor", "reference"),
    [
        ("brightness", 1.3, TF.adjust_brightness),
        ("contrast", 0.7, TF.adjust_contrast),
        ("saturation", 1.4, TF.adjust_saturation),
        ("hue", -0.08, TF.adjust_hue),
    ],
)
def test_colour_ops_equal_torchvision_tensor_ops(name, factor, reference):
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = _JITTER_OPS[name](images.clone(), torch.full((3,), factor))
    torch.testing.assert_close(ours, reference(images, factor), atol=2e-6, rtol=0)


@pytest.mark.parametrize("recipe", ["cifar", "imagenet"])
def test_views_are_a_function_of_seed_epoch_and_index(recipe):
    images = torch.randint(0, 256, (6, 3, 20, 20), dtype=torch.uint8)
    indices = torch.tensor([4, 9, 0, 33, 7, 2])
    two_views = BatchedTwoViews(16, 3, (0.5,) * 3, (0.25,) * 3, recipe=recipe, seed=3)
    two_views.set_epoch(2)
    views = two_views(images, indices)
    assert views.shape == (6, 2, 3, 16, 16) and views.dtype == torch.float32
    assert views.min() >= -2 and views.max() <= 2  # normalised from [0, 1]
    assert not torch.equal(views[:, 0], views[:, 1])
    assert torch.equal(two_views(images[[3, 1]], indices[[3, 1]]), views[[3, 1]])  # batch-independent
    two_views.set_epoch(3)
    assert not torch.equal(two_views(images, indices), views)


def test_views_reject_wrong_images():
    two_views = BatchedTwoViews(16, 1, (0.5,), (0.25,))
    with pytest.raises(ValueError, match=r"uint8 of shape \(B, 1, H, W\)"):
        two_views(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), torch.arange(2))
    with pytest.raises(ValueError, match="uint8"):
        two_views(torch.zeros(2, 1, 16, 16), torch.arange(2))


def _dataset(shapes: list[tuple[int, ...]]) -> Dataset:
    rng = np.random.RandomState(0)
    features = Features({"image": Image(), "label": ClassLabel(num_classes=3)})
    images = [rng.randint(0, 256, shape, dtype=np.uint8) for shape in shapes]
    return add_index_column(
        Dataset.from_dict({"image": images, "label": [i % 3 for i in range(len(shapes))]}, features)
    )


def test_decoded_split_serves_batches_of_the_decoded_images():
    dataset = _dataset([(10, 12, 3)] * 5)
    decoded = DecodedImages.from_dataset(dataset, in_chans=3)
    assert decoded.images.shape == (5, 3, 10, 12) and decoded.images.dtype == torch.uint8
    expected = np.asarray(dataset[3]["image"].convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(decoded.images[3].numpy(), expected)
    loader = torch.utils.data.DataLoader(decoded, batch_size=2, collate_fn=collate_batch, sampler=[4, 1, 3])
    batch = next(iter(loader))
    assert batch["index"].tolist() == [4, 1] and batch["label"].tolist() == [1, 1]
    assert torch.equal(batch["image"], decoded.images[[4, 1]])
    gray = decode_images(dataset, in_chans=1)
    assert gray.shape == (5, 1, 10, 12)


def test_decoding_refuses_mixed_sizes_and_oversized_splits():
    with pytest.raises(ValueError, match="image 1 is 8x8, the first is 10x10.*per_image"):
        decode_images(_dataset([(10, 10, 3), (8, 8, 3)]), in_chans=3)
    with pytest.raises(ValueError, match="more than the .* allowed in memory"):
        decode_images(_dataset([(10, 10, 3)] * 3), in_chans=3, max_bytes=100)


@pytest.mark.parametrize(
    ("dataset", "choice", "expected"),
    [
        ("fashion_mnist", "auto", "batched"),
        ("cifar100", "auto", "batched"),
        ("/data/my_images", "auto", "per_image"),
        ("/data/my_images", "batched", "batched"),
        ("fashion_mnist", "per_image", "per_image"),
    ],
)
def test_view_pipeline_resolution(dataset, choice, expected):
    data_args = DataArguments(dataset=dataset, view_pipeline=choice)
    assert resolve_view_pipeline(data_args) == expected


def test_view_pipeline_rejects_bad_values():
    with pytest.raises(ValueError, match="--view_pipeline='gpu' is invalid"):
        DataArguments(view_pipeline="gpu")
