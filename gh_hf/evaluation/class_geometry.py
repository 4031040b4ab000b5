"""Where the classes sit in a frozen feature space: the category-level geometry GH acts on.

The probes say how well classes can be told apart; `class_geometry` says why, class by class, in
the space contrastive losses shape (L2-normalised features, the kNN protocol's). GH's claim is
geometric: without it, a long-tailed set lets head classes take most of the sphere and tail
classes crowd together; with it, each class gets room. The figures below measure that directly:
a tail class pressed against another has a high `neighbour_cosine`, whatever a probe then makes
of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from gh_hf.evaluation.long_tailed_accuracy.long_tailed_accuracy import (
    _check_labels,
    _nanmean,
    class_groups,
    per_class_accuracy,
)


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, F) float64: each class's mean L2-normalised feature (its length is the concentration).

    Raises:
        ValueError: a label outside [0, C), or a class without features.
    """
    _check_labels("train labels", labels.numpy(), num_classes)
    sizes = torch.bincount(labels, minlength=num_classes)
    if bool((sizes == 0).any()):
        missing = torch.nonzero(sizes == 0).flatten().tolist()
        raise ValueError(f"classes {missing} have no train features; every class needs at least one")
    unit = F.normalize(features.double(), dim=1)  # (N, F)
    sums = torch.zeros(num_classes, unit.shape[1], dtype=unit.dtype).index_add_(0, labels, unit)
    return sums / sizes.unsqueeze(1)


def class_geometry(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    class_counts: Sequence[int],
    grouping: str = "thirds",
) -> dict[str, Any]:
    """Per-class geometry of frozen features, and its mean over Many / Medium / Few.

    On L2-normalised features, with m_c the normalised mean of class c's train features
    (`class_means`):

    - `neighbour_cosine[c]` = max over c' != c of <m_c, m_c'>: how close the nearest other class
      sits (1: on top of it; GH should lower it for the tail);
    - `concentration[c]` = |mean of c's unit train features|: 1 when the class is one point,
      near 0 when it covers the sphere;
    - `centroid_accuracy[c]`: the share of c's test images whose most similar m is m_c (the
      nearest-class-mean classifier, a probe with no parameters to fit; `per_class_accuracy`).

    Args:
        train: (features (N, F), labels (N,)) of the balanced labelled train set; every class
            needs at least one image.
        test: (features (M, F), labels (M,)) of the test set.
        class_counts: Images per class in the long-tailed pretraining split (length C): the
            groups, as in `long_tailed_accuracy`.
        grouping: "thirds" or "thresholds" (see `class_groups`).

    Returns:
        {"per_class": {key: [C floats]}, "overall" / "many" / "medium" / "few": {key: mean over
        the group's classes}} for `centroid_accuracy`, `neighbour_cosine` and `concentration`; as
        in `long_tailed_accuracy`, a class absent from the test set (NaN accuracy) is left out of
        the means and an empty group gives NaN.

    Raises:
        ValueError: a class without train images, or a label outside [0, C).
    """
    num_classes = len(class_counts)
    groups = class_groups(class_counts, grouping)
    (train_features, train_labels), (test_features, test_labels) = train, test
    _check_labels("test labels", test_labels.numpy(), num_classes)
    means = class_means(train_features, train_labels, num_classes)  # (C, F)
    directions = F.normalize(means, dim=1)  # (C, F): m_c
    cosines = directions @ directions.T  # (C, C)
    cosines.fill_diagonal_(float("-inf"))
    nearest = (F.normalize(test_features.double(), dim=1) @ directions.T).argmax(dim=1)  # (M,)
    per_class = {
        "centroid_accuracy": per_class_accuracy(nearest.numpy(), test_labels.numpy(), num_classes),
        "neighbour_cosine": cosines.max(dim=1).values.numpy(),
        "concentration": means.norm(dim=1).numpy(),
    }
    report: dict[str, Any] = {"per_class": {key: values.tolist() for key, values in per_class.items()}}
    for group, classes in {"overall": list(range(num_classes)), **groups}.items():
        report[group] = {key: _nanmean(values[classes]) for key, values in per_class.items()}
    return report
