"""Online kNN monitor: a cheap long-tailed accuracy estimate to log during pretraining."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from gh_hf.evaluation.features import extract_features
from gh_hf.evaluation.knn import knn_predict
from gh_hf.evaluation.long_tailed_accuracy.long_tailed_accuracy import class_groups, long_tailed_accuracy


class KNNMonitor:
    """Weighted kNN accuracy of the current encoder, overall and per Many / Medium / Few group.

    Call it every few epochs from the training loop, on every process (feature extraction is
    sharded and gathered, so all processes must take part); it restores the model's train
    mode and returns the same numbers on every process.

    Args:
        train_dataset: Labelled bank, rows with `pixel_values` and `label` (e.g.
            `gh_hf.data.with_eval_transform(train_split, build_eval_transform(...))`).
        eval_dataset: Queries, same row format (typically the balanced test split).
        class_counts: Images per class in the long-tailed pretraining split (grouping).
        k: Neighbours.
        temperature: Vote temperature.
        batch_size: Images per forward pass (per process) and queries per similarity chunk.
        grouping: "thirds" or "thresholds".
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        train_dataset: Any,
        eval_dataset: Any,
        class_counts: Sequence[int],
        k: int = 200,
        temperature: float = 0.07,
        batch_size: int = 256,
        grouping: str = "thirds",
        num_workers: int = 0,
    ):
        class_groups(class_counts, grouping)  # validates counts and grouping now, not at epoch N
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.class_counts = list(class_counts)
        self.k = k
        self.temperature = temperature
        self.batch_size = batch_size
        self.grouping = grouping
        self.num_workers = num_workers

    def __call__(self, model: nn.Module, accelerator: Any | None = None) -> dict[str, float]:
        """Evaluate `model` (a `GHModel`, or a possibly wrapped `GHForPreTraining`).

        Args:
            model: The model being trained.
            accelerator: The training run's `accelerate.Accelerator`, if any.

        Returns:
            {"knn_accuracy", "knn_many", "knn_medium", "knn_few", "knn_std"}, floats in [0, 1]
            (a group with no class is NaN).
        """
        extract = {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "accelerator": accelerator,
            "show_progress": False,
        }
        train_features, train_labels = extract_features(model, self.train_dataset, **extract)
        eval_features, eval_labels = extract_features(model, self.eval_dataset, **extract)
        device = accelerator.device if accelerator is not None else None
        predictions = knn_predict(
            train_features,
            train_labels,
            eval_features,
            len(self.class_counts),
            self.k,
            self.temperature,
            self.batch_size,
            device,
        )
        metrics = long_tailed_accuracy(
            predictions.numpy(), eval_labels.numpy(), self.class_counts, self.grouping
        )
        return {
            "knn_accuracy": metrics["accuracy"],
            "knn_many": metrics["many"],
            "knn_medium": metrics["medium"],
            "knn_few": metrics["few"],
            "knn_std": metrics["per_class_std"],
        }
