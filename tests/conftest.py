from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

TINY_BACKBONE = {"backbone": "resnet18", "backbone_kwargs": {"channels": [8, 16, 32, 64]}}
# A pretraining run of seconds on digits (scripts/pretrain.py arguments; later ones override).
TINY_RUN = [
    "--dataset", "digits", "--imbalance_ratio", "10", "--image_size", "12",
    "--backbone_kwargs", '{"channels": [8, 16, 32, 64]}', "--projection_dim", "16", "--num_anchors", "10",
    "--per_device_batch_size", "64", "--dataloader_num_workers", "0", "--num_epochs", "2",
    "--gh_warmup_epochs", "1", "--gh_ramp_epochs", "1", "--prior_every_epochs", "1",
    "--lr_warmup_epochs", "0", "--sinkhorn_iterations", "50", "--knn_at_end", "false", "--logging_steps", "1",
]  # fmt: skip


@pytest.fixture
def tiny_config():
    from gh_hf import GHConfig

    return GHConfig(**TINY_BACKBONE, in_chans=1, image_size=16, projection_dim=16, num_anchors=10)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
