"""The kNN monitor of a pretraining run: balanced labelled train images vs the test split."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gh_hf.data import balanced_subset, build_eval_transform, get_class_counts, with_eval_transform
from gh_hf.evaluation.monitor import KNNMonitor
from gh_hf.training.data import load_source

if TYPE_CHECKING:
    from gh_hf.training.arguments import DataArguments, PretrainingArguments
    from gh_hf.training.trainer import Pretrainer


def knn_grouping(data_args: DataArguments, args: PretrainingArguments) -> str:
    """The Many / Medium / Few grouping of a run's monitor, as `scripts/benchmark.py --grouping` names it.

    `--knn_grouping`, where "auto" follows the data's convention: count thresholds (> 100, 20..100,
    < 20 images) for ImageNet-LT / Places-LT style split files, thirds of the classes otherwise.
    """
    if args.knn_grouping != "auto":
        return args.knn_grouping
    return "thresholds" if data_args.split_file is not None else "thirds"


def build_knn_monitor(trainer: Pretrainer) -> KNNMonitor:
    """A monitor whose memory is a class-balanced subset of the full (not long-tailed) train split."""
    data_args, config = trainer.data_args, trainer.config
    with trainer.accelerator.main_process_first():
        train, test = load_source(data_args, "train"), load_source(data_args, "test")
    class_counts = get_class_counts(trainer.train_dataset)
    per_class_available = min(count for count in get_class_counts(train) if count > 0)
    shots = max(1, min(per_class_available, trainer.args.knn_max_train_samples // len(class_counts)))
    memory = balanced_subset(train, shots, seed=trainer.args.seed)
    transform = build_eval_transform(config.image_size, config.in_chans, config.image_mean, config.image_std)
    return KNNMonitor(
        with_eval_transform(memory, transform),
        with_eval_transform(test, transform),
        class_counts,
        k=min(200, len(memory)),
        batch_size=trainer.args.per_device_batch_size,
        grouping=knn_grouping(data_args, trainer.args),
        num_workers=data_args.dataloader_num_workers,
    )
