from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

TINY_BACKBONE = {"backbone": "resnet18", "backbone_kwargs": {"channels": [8, 16, 32, 64]}}


@pytest.fixture
def tiny_config():
    from gh_hf import GHConfig

    return GHConfig(**TINY_BACKBONE, in_chans=1, image_size=16, projection_dim=16, num_anchors=10)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
