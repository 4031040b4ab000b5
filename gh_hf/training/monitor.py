"""The kNN monitor of a pretraining run: balanced labelled train images vs the test split."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gh_hf.data import (
    balanced_subset,
    build_eval_transform,
    get_class_counts,
    load_image_dataset,
    with_eval_transform,
)
from gh_hf.evaluation.monitor import KNNMonitor

if TYPE_CHECKING:
    from gh_hf.training.trainer import Pretrainer


def build_knn_monitor(trainer: Pretrainer) -> KNNMonitor:
    """A monitor whose memory is a class-balanced subset of the full (not long-tailed) train split."""
    data_args, config = trainer.data_args, trainer.config
    kwargs = (
        {"split_file": data_args.split_file, "image_root": data_args.image_root}
        if data_args.split_file
        else {}
    )
    with trainer.accelerator.main_process_first():
        train = load_image_dataset(data_args.dataset, split="train", data_dir=data_args.data_dir, **kwargs)
        test = load_image_dataset(data_args.dataset, split="test", data_dir=data_args.data_dir, **kwargs)
    class_counts = get_class_counts(trainer.train_dataset)
    per_class_available = min(count for count in _label_counts(train) if count > 0)
    shots = max(1, min(per_class_available, trainer.args.knn_max_train_samples // len(class_counts)))
    memory = balanced_subset(train, shots, seed=trainer.args.seed)
    transform = build_eval_transform(config.image_size, config.in_chans, config.image_mean, config.image_std)
    return KNNMonitor(
        with_eval_transform(memory, transform),
        with_eval_transform(test, transform),
        class_counts,
        k=min(200, len(memory)),
        batch_size=trainer.args.per_device_batch_size,
        num_workers=data_args.dataloader_num_workers,
    )


def _label_counts(dataset) -> list[int]:
    import numpy as np

    labels = np.asarray(dataset["label"])
    return np.bincount(labels).tolist()


def knn_monitor_metrics(trainer: Pretrainer) -> dict[str, float]:
    """Runs the (lazily built) monitor on the current encoder; all processes take part."""
    if getattr(trainer, "_knn_monitor", None) is None:
        trainer._knn_monitor = build_knn_monitor(trainer)
    metrics = trainer._knn_monitor(trainer.unwrapped().encoder, trainer.accelerator)
    trainer.model.train()
    return metrics
