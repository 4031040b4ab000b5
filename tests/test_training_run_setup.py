"""What a run derives from its arguments: its length, the input channels, the kNN monitor's groups."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from gh_hf import GHConfig
from gh_hf.data.sources import source_channels
from gh_hf.training import Pretrainer, build_config, parse_pretrain_args
from gh_hf.training.arguments import DataArguments, PretrainingArguments
from gh_hf.training.data import load_source
from gh_hf.training.monitor import build_knn_monitor, knn_grouping

from .conftest import TINY_BACKBONE


def _length(num_epochs: int, max_steps: int, steps_per_epoch: int, accumulation: int = 1) -> tuple[int, int]:
    """(total_steps, num_epochs) of a run whose loader yields `steps_per_epoch` batches."""
    trainer = Pretrainer.__new__(Pretrainer)  # the properties read args and steps_per_epoch only
    trainer.args = PretrainingArguments(
        num_epochs=num_epochs, max_steps=max_steps, gradient_accumulation_steps=accumulation
    )
    trainer.steps_per_epoch = steps_per_epoch
    return trainer.total_steps, trainer.num_epochs


@pytest.mark.parametrize(
    ("num_epochs", "max_steps", "accumulation", "expected"),
    [
        (0, 25, 1, (25, 3)),  # --num_epochs 0 --max_steps 25: 25 steps over 3 epochs (was 0 steps)
        (2, 25, 1, (25, 3)),  # max_steps overrides num_epochs, also upwards
        (5, 7, 1, (7, 1)),  # and downwards
        (3, -1, 1, (30, 3)),  # without max_steps: num_epochs full epochs
        (0, 12, 2, (12, 3)),  # 5 optimizer steps per epoch with accumulation 2
    ],
)
def test_max_steps_overrides_num_epochs(num_epochs, max_steps, accumulation, expected):
    assert _length(num_epochs, max_steps, steps_per_epoch=10, accumulation=accumulation) == expected


@pytest.mark.parametrize(
    ("dataset", "channels"),
    [("fashion_mnist", 1), ("Fashion-MNIST", 1), ("fashionmnist", 1), ("digits", 1), ("cifar100", 3),
     ("split_file", 3), ("/data/my_images", 3)],
)  # fmt: skip
def test_the_data_layer_says_how_many_channels_a_source_has(dataset, channels):
    assert source_channels(dataset) == channels
    data, model, training = parse_pretrain_args(["--dataset", dataset, "--in_chans", "0"])
    assert build_config(data, model, 0).in_chans == channels


def test_knn_grouping_follows_the_argument_or_the_data():
    imagenet_lt = SimpleNamespace(split_file="ImageNet_LT_train.txt")
    cifar_lt = SimpleNamespace(split_file=None)
    assert knn_grouping(imagenet_lt, PretrainingArguments()) == "thresholds"
    assert knn_grouping(cifar_lt, PretrainingArguments()) == "thirds"
    assert knn_grouping(imagenet_lt, PretrainingArguments(knn_grouping="thirds")) == "thirds"
    assert knn_grouping(cifar_lt, PretrainingArguments(knn_grouping="thresholds")) == "thresholds"
    with pytest.raises(ValueError, match="--knn_grouping='halves'"):
        PretrainingArguments(knn_grouping="halves")


@pytest.mark.parametrize("grouping", ["thresholds", "thirds"])
def test_the_monitor_groups_as_the_run_says(grouping):
    data_args = DataArguments(dataset="digits")
    trainer = SimpleNamespace(
        data_args=data_args,
        args=PretrainingArguments(knn_grouping=grouping, knn_max_train_samples=100),
        config=GHConfig(**TINY_BACKBONE, in_chans=1, image_size=8, image_mean=[0.5], image_std=[0.5]),
        accelerator=SimpleNamespace(main_process_first=contextlib.nullcontext),
        train_dataset=load_source(data_args, "train"),
    )
    assert build_knn_monitor(trainer).grouping == grouping
