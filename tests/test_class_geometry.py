"""`class_geometry`: the per-class geometry of frozen features, against values worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from gh_hf.evaluation import class_geometry

COUNTS = [100, 50, 5, 2]  # thirds: Many [0, 1], Medium [2], Few [3]


def _labels(*sizes: int) -> torch.Tensor:
    return torch.cat([torch.full((size,), c) for c, size in enumerate(sizes)])


def test_collapsed_tail_classes_sit_on_each_other_and_spread_head_classes_do_not():
    e = torch.eye(4)
    # Class 0: two images at +-45 degrees around e0 (mean length cos 45); class 1: e1; classes 2 and
    # 3 (the tail) both at e2, i.e. collapsed onto one point. Scales must not matter (normalised).
    train = torch.stack([e[0] + e[3], 5 * (e[0] - e[3]), 2 * e[1], e[2], 3 * e[2], 0.5 * e[2]])
    train_labels = torch.tensor([0, 0, 1, 2, 2, 3])
    test = torch.stack([e[0], e[1], e[2], e[2], e[1]])
    test_labels = torch.tensor([0, 1, 2, 3, 3])
    report = class_geometry((train, train_labels), (test, test_labels), COUNTS)
    per_class = report["per_class"]
    assert per_class["neighbour_cosine"] == pytest.approx([0.0, 0.0, 1.0, 1.0])
    assert per_class["concentration"] == pytest.approx([math.sqrt(0.5), 1.0, 1.0, 1.0])
    # Class 3's test images: one at e2, where classes 2 and 3 tie (argmax takes class 2), one at e1.
    assert per_class["centroid_accuracy"] == pytest.approx([1.0, 1.0, 1.0, 0.0])
    assert report["many"]["neighbour_cosine"] == pytest.approx(0.0)
    assert report["few"]["neighbour_cosine"] == pytest.approx(1.0)
    assert report["many"]["concentration"] == pytest.approx((math.sqrt(0.5) + 1) / 2)
    assert report["overall"]["centroid_accuracy"] == pytest.approx(0.75)  # a mean over classes


def test_groups_follow_the_pretraining_counts_not_the_class_ids():
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(400, 8, generator=generator)
    labels = torch.arange(400) % 4
    test = (torch.randn(100, 8, generator=generator), torch.arange(100) % 4)
    forward = class_geometry((train, labels), test, COUNTS)
    reversed_ = class_geometry((train, labels), test, COUNTS[::-1])
    for key in ("neighbour_cosine", "concentration", "centroid_accuracy"):
        assert forward["per_class"][key] == reversed_["per_class"][key]
        assert forward["few"][key] == pytest.approx(forward["per_class"][key][3])
        assert reversed_["few"][key] == pytest.approx(reversed_["per_class"][key][0])


def test_bad_labels_are_refused_naming_what_is_wrong():
    features = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"classes \[3\] have no train features"):
        class_geometry((features, torch.tensor([0, 1, 2, 2])), (features, torch.tensor([0, 1, 2, 3])), COUNTS)
    with pytest.raises(ValueError, match=r"test labels must be class ids in \[0, 4\).*got \[4\]"):
        class_geometry((features, torch.tensor([0, 1, 2, 3])), (features, torch.tensor([0, 1, 2, 4])), COUNTS)


def test_a_class_absent_from_the_test_set_is_left_out_of_the_means_as_in_the_metric():
    e = torch.eye(4)
    train, train_labels = e.clone(), torch.arange(4)
    test, test_labels = e[:3], torch.arange(3)  # class 3 (Few) has no test image
    report = class_geometry((train, train_labels), (test, test_labels), COUNTS)
    assert math.isnan(report["per_class"]["centroid_accuracy"][3])
    assert math.isnan(report["few"]["centroid_accuracy"])  # Few is class 3 alone
    assert report["overall"]["centroid_accuracy"] == 1.0  # the three classes present, all right
    assert report["few"]["neighbour_cosine"] == pytest.approx(0.0)  # train-side figures still count
