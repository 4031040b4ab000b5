"""extract_features: order, eval mode, the on-disk cache, and the GHForPreTraining encoder."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset
from transformers.modeling_outputs import BaseModelOutputWithPooling

from gh_hf.evaluation import encoder_of, extract_features, model_fingerprint


class RowDataset(Dataset):
    """Row i: pixel_values filled with i, label i % 3."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": torch.full((1, 2, 2), float(index)), "label": index % 3}


class TinyEncoder(nn.Module):
    """pooler_output = (mean pixel, 2 * mean pixel); dropout makes train mode detectable."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([1.0, 2.0]))
        self.dropout = nn.Dropout(0.5)

    def forward(self, pixel_values: torch.Tensor) -> BaseModelOutputWithPooling:
        pooled = self.dropout(pixel_values.mean(dim=(1, 2, 3))[:, None] * self.scale)
        return BaseModelOutputWithPooling(pooler_output=pooled)


def test_features_in_dataset_order_in_eval_mode_and_mode_restored():
    model = TinyEncoder().train()
    features, labels = extract_features(model, RowDataset(11), batch_size=4, show_progress=False)
    expected = torch.arange(11.0)[:, None] * torch.tensor([1.0, 2.0])
    torch.testing.assert_close(features, expected)  # dropout off: eval mode during extraction
    assert features.dtype == torch.float32 and labels.tolist() == [i % 3 for i in range(11)]
    assert model.training


def test_cache_is_reused_and_keyed_by_weights(tmp_path):
    model = TinyEncoder()
    first, _ = extract_features(
        model, RowDataset(5), cache_dir=str(tmp_path), cache_key="k", show_progress=False
    )
    files = list(tmp_path.glob("features-*.safetensors"))
    assert len(files) == 1
    with torch.no_grad():
        model.scale.mul_(0)  # a different model must not hit the old file...
    second, _ = extract_features(
        model, RowDataset(5), cache_dir=str(tmp_path), cache_key="k", show_progress=False
    )
    assert second.abs().sum() == 0 and len(list(tmp_path.glob("features-*.safetensors"))) == 2
    with torch.no_grad():
        model.scale.copy_(torch.tensor([1.0, 2.0]))  # ...and the original weights hit their file
    model.forward = None  # would raise if the model ran
    cached, labels = extract_features(model, RowDataset(5), cache_dir=str(tmp_path), cache_key="k")
    torch.testing.assert_close(cached, first)
    assert labels.tolist() == [0, 1, 2, 0, 1]


def test_cache_without_fingerprint_or_key_raises(tmp_path):
    with pytest.raises(ValueError, match="cache_key"):
        extract_features(TinyEncoder(), RowDataset(3), cache_dir=str(tmp_path))


def test_model_fingerprint_changes_with_weights():
    model = TinyEncoder()
    before = model_fingerprint(model)
    with torch.no_grad():
        model.scale[0] = 3.0
    assert model_fingerprint(model) != before


def test_pretraining_model_is_reduced_to_its_encoder(tiny_config):
    from gh_hf import GHForPreTraining, GHModel

    model = GHForPreTraining(tiny_config)
    assert isinstance(encoder_of(model), GHModel) and encoder_of(model) is model.encoder
    assert encoder_of(model.encoder) is model.encoder
