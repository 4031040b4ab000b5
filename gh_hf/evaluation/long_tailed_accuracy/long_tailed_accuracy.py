"""Long-tailed accuracy: top-1 overall, per class, and over Many / Medium / Few-shot classes.

This file is a self-contained `evaluate` metric script: it imports only numpy, datasets and
evaluate, so that `evaluate.load("<path to this folder>")` can copy and import it offline.
gh_hf re-exports `LongTailedAccuracy` and the plain functions as `gh_hf.evaluation.*`.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
import numpy as np

GROUPINGS = ("thirds", "thresholds")
GROUP_NAMES = ("many", "medium", "few")
# ImageNet-LT / Places-LT convention: Many > 100, Medium 20..100 (inclusive), Few < 20 images.
MANY_SHOT_ABOVE = 100
FEW_SHOT_BELOW = 20

_DESCRIPTION = """
Top-1 accuracy of a classifier evaluated on a balanced test set, broken down by how often each
class occurred in the long-tailed split the encoder was pretrained on. Classes are grouped into
Many / Medium / Few-shot either by thirds of the classes sorted by count ("thirds", the
CIFAR-LT convention) or by count thresholds (>100 / 20..100 / <20, "thresholds", the
ImageNet-LT / Places-LT convention). Group accuracies are means of per-class accuracies.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): Predicted class ids, each in [0, C).
    references (list of int): True class ids, each in [0, C).
    class_counts (list of int): Images per class id in the long-tailed PRETRAINING split (length C).
    grouping (str): "thirds" (default) or "thresholds".

Returns:
    accuracy (float): Top-1 accuracy over all samples.
    many, medium, few (float): Mean per-class accuracy of each group (NaN for an empty group).
    per_class_std (float): Population std (ddof=0) of the per-class accuracies.
    per_class_accuracy (list of float): Accuracy of every class id (NaN if absent from references).

Examples:
    >>> metric = evaluate.load("gh_hf/evaluation/long_tailed_accuracy")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 2], class_counts=[30, 20, 10])["few"]
    0.0
"""

_CITATION = """
@inproceedings{zhou2023combating,
  title={Combating Representation Learning Disparity with Geometric Harmonization},
  author={Zhou, Zhihan and Yao, Jiangchao and Hong, Feng and Zhang, Ya and Han, Bo and Wang, Yanfeng},
  booktitle={Advances in Neural Information Processing Systems},
  year={2023}
}
"""


def _check_class_counts(class_counts: Sequence[int]) -> np.ndarray:
    counts = np.asarray(class_counts)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"class_counts must be a non-empty list of per-class counts, got {class_counts!r}")
    if not np.issubdtype(counts.dtype, np.integer) and not np.all(counts == np.round(counts)):
        raise ValueError(f"class_counts must hold integers, got {class_counts!r}")
    if np.any(counts < 0):
        raise ValueError(f"class_counts must be >= 0, got {class_counts!r}")
    return counts.astype(np.int64)


def class_groups(class_counts: Sequence[int], grouping: str = "thirds") -> dict[str, list[int]]:
    """Split class ids into Many / Medium / Few-shot groups by their pretraining counts.

    "thirds": classes sorted by count descending, ties broken by class id ascending, then cut
    with `np.array_split` into three parts; when C is not divisible by 3 the first parts get
    one class more (C=10 -> 4/3/3, C=100 -> 34/33/33, C=2 -> 1/1/0).
    "thresholds": Many has count > 100, Medium 20 <= count <= 100, Few count < 20.

    Args:
        class_counts: Images per class id in the long-tailed pretraining split.
        grouping: "thirds" or "thresholds".

    Returns:
        {"many": [...], "medium": [...], "few": [...]}, class ids (sorted by count within
        "thirds", ascending id within "thresholds"). A group may be empty.
    """
    counts = _check_class_counts(class_counts)
    if grouping == "thirds":
        # lexsort sorts by the last key first: count descending, then class id ascending.
        order = np.lexsort((np.arange(counts.size), -counts))
        parts = np.array_split(order, 3)
        return {name: part.tolist() for name, part in zip(GROUP_NAMES, parts, strict=True)}
    if grouping == "thresholds":
        ids = np.arange(counts.size)
        return {
            "many": ids[counts > MANY_SHOT_ABOVE].tolist(),
            "medium": ids[(counts >= FEW_SHOT_BELOW) & (counts <= MANY_SHOT_ABOVE)].tolist(),
            "few": ids[counts < FEW_SHOT_BELOW].tolist(),
        }
    raise ValueError(f"grouping must be one of {list(GROUPINGS)}, got {grouping!r}")


def _check_labels(name: str, values: np.ndarray, num_classes: int) -> None:
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        raise ValueError(
            f"{name} must be class ids in [0, {num_classes}) (len(class_counts) = {num_classes}), "
            f"got {bad[:5].tolist()}"
        )


def per_class_accuracy(predictions: Sequence[int], references: Sequence[int], num_classes: int) -> np.ndarray:
    """Accuracy of every class id; NaN for a class with no reference sample.

    Args:
        predictions: Predicted class ids.
        references: True class ids.
        num_classes: C.

    Returns:
        Array (C,) of float accuracies in [0, 1] or NaN.
    """
    predictions = np.asarray(predictions, dtype=np.int64).reshape(-1)
    references = np.asarray(references, dtype=np.int64).reshape(-1)
    if predictions.shape != references.shape:
        raise ValueError(
            f"predictions and references must have the same length, got {predictions.size} and "
            f"{references.size}"
        )
    _check_labels("predictions", predictions, num_classes)
    _check_labels("references", references, num_classes)
    totals = np.bincount(references, minlength=num_classes)
    hits = np.bincount(references[predictions == references], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, hits / np.maximum(totals, 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def long_tailed_accuracy(
    predictions: Sequence[int],
    references: Sequence[int],
    class_counts: Sequence[int],
    grouping: str = "thirds",
) -> dict[str, float | list[float]]:
    """The metric as a plain function (what `LongTailedAccuracy.compute` returns).

    Classes absent from `references` are NaN in `per_class_accuracy` and left out of the group
    means and of `per_class_std`; `accuracy` is over samples (on a balanced test set it equals
    the mean per-class accuracy).

    Args:
        predictions: Predicted class ids, each in [0, C).
        references: True class ids, each in [0, C).
        class_counts: Images per class id in the long-tailed pretraining split (length C).
        grouping: "thirds" or "thresholds" (see `class_groups`).

    Returns:
        {"accuracy", "many", "medium", "few", "per_class_std"} floats and
        "per_class_accuracy", a list of C floats.
    """
    groups = class_groups(class_counts, grouping)
    accuracies = per_class_accuracy(predictions, references, len(class_counts))
    references = np.asarray(references).reshape(-1)
    if references.size == 0:
        raise ValueError("references must hold at least one sample, got an empty list")
    overall = float(np.mean(np.asarray(predictions).reshape(-1) == references))
    present = accuracies[~np.isnan(accuracies)]
    result: dict[str, float | list[float]] = {"accuracy": overall}
    for name in GROUP_NAMES:
        result[name] = _nanmean(accuracies[groups[name]])
    result["per_class_std"] = float(np.std(present)) if present.size else float("nan")
    result["per_class_accuracy"] = [float(value) for value in accuracies]
    return result


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LongTailedAccuracy(evaluate.Metric):
    """Top-1 accuracy overall, per class and per Many / Medium / Few-shot group."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://arxiv.org/abs/2310.17622"],
        )

    def _compute(
        self,
        predictions: Sequence[int],
        references: Sequence[int],
        class_counts: Sequence[int] | None = None,
        grouping: str = "thirds",
    ) -> dict[str, float | list[float]]:
        if class_counts is None:
            raise ValueError("class_counts is required: the per-class counts of the pretraining split")
        return long_tailed_accuracy(predictions, references, class_counts, grouping)
