from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from gh_hf import GHConfig, GHForPreTraining, GHModel, simplex_etf
from gh_hf.hub import save_encoder_folder
from gh_hf.losses import GHLoss, nt_xent

from .conftest import TINY_BACKBONE


def test_config_round_trip(tmp_path, tiny_config):
    tiny_config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, GHConfig)
    assert loaded.to_diff_dict() | {"_name_or_path": ""} == tiny_config.to_diff_dict() | {"_name_or_path": ""}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"backbone": "not_a_timm_model"}, "backbone"),
        ({"num_anchors": 200, "projection_dim": 128}, "num_anchors"),
        ({"contrastive_temperature": 0.0}, "contrastive_temperature"),
        ({"gh_temperature": -0.1}, "gh_temperature"),
        ({"sinkhorn_epsilon": 0}, "sinkhorn_epsilon"),
        ({"ssl_method": "byol"}, "ssl_method"),
        ({"in_chans": 1, "image_mean": [0.5, 0.5, 0.5]}, "image_mean"),
    ],
)
def test_config_rejects_bad_values(kwargs, field):
    with pytest.raises(ValueError, match=f"GHConfig.{field}="):
        GHConfig(**kwargs)


def test_small_input_stem_is_3x3_stride_1_without_maxpool(tiny_config):
    backbone = GHModel(tiny_config).backbone
    assert backbone.conv1.kernel_size == (3, 3) and backbone.conv1.stride == (1, 1)
    assert isinstance(backbone.maxpool, torch.nn.Identity)
    with pytest.raises(ValueError, match="small_input_stem"):
        GHModel(GHConfig(backbone="test_vit", small_input_stem=True))


def test_encoder_output_shapes(tiny_config):
    model = GHModel(tiny_config).eval()
    out = model(torch.randn(3, 1, 16, 16))
    assert out.pooler_output.shape == (3, model.num_features) == (3, 64)
    assert out.last_hidden_state.shape[:2] == (3, 64)


def test_init_weights_keeps_timm_initialisation(tiny_config):
    model = GHForPreTraining(tiny_config)
    # timm zero-initialises the last BN of each residual block; transformers' default init sets it to 1.
    assert torch.count_nonzero(model.encoder.backbone.layer1[0].bn2.weight) == 0


def test_pretraining_forward_matches_losses(tiny_config):
    model = GHForPreTraining(tiny_config).train()
    pixel_values = torch.randn(6, 2, 1, 16, 16)
    out = model(pixel_values, gh_weight=0.5)
    assert out.projections.shape == (6, 2, 16) and out.anchor_scores.shape == (6, 2, 10)
    torch.testing.assert_close(out.anchor_scores.norm(dim=-1), torch.ones(6, 2))
    z1, z2 = out.projections[:, 0], out.projections[:, 1]
    torch.testing.assert_close(out.ssl_loss, nt_xent(z1, z2, 0.2))
    s1, s2 = out.anchor_scores[:, 0], out.anchor_scores[:, 1]
    torch.testing.assert_close(out.gh_loss, GHLoss()(s1, s2, model.class_prior))
    torch.testing.assert_close(out.loss, out.ssl_loss + 0.5 * out.gh_loss)
    out.loss.backward()
    assert model.encoder.backbone.conv1.weight.grad is not None
    assert model.anchors.grad is None and not model.anchors.requires_grad


def test_pretraining_forward_without_gh_or_zero_weight(tiny_config):
    pixel_values = torch.randn(4, 2, 1, 16, 16)
    assert GHForPreTraining(tiny_config)(pixel_values, gh_weight=0.0).gh_loss is None
    tiny_config.use_gh = False
    out = GHForPreTraining(tiny_config)(pixel_values)
    assert out.gh_loss is None and torch.equal(out.loss, out.ssl_loss)


def test_focal_base_uses_focal_nt_xent(tiny_config):
    from gh_hf.losses import focal_nt_xent

    tiny_config.ssl_method = "focal"
    out = GHForPreTraining(tiny_config)(torch.randn(4, 2, 1, 16, 16))
    z1, z2 = out.projections[:, 0], out.projections[:, 1]
    torch.testing.assert_close(out.ssl_loss, focal_nt_xent(z1, z2, 0.2, 2.0))
    assert out.ssl_loss_per_sample.shape == (4,)


def test_bcl_base_is_simclr_with_per_sample_losses(tiny_config):
    tiny_config.ssl_method = "bcl"
    out = GHForPreTraining(tiny_config)(torch.randn(4, 2, 1, 16, 16))
    z1, z2 = out.projections[:, 0], out.projections[:, 1]
    torch.testing.assert_close(out.ssl_loss_per_sample, nt_xent(z1, z2, 0.2, reduction="per_sample"))
    torch.testing.assert_close(out.ssl_loss, nt_xent(z1, z2, 0.2))


def test_sdclr_contrasts_dense_and_pruned_branches(tiny_config):
    tiny_config.ssl_method = "sdclr"
    model = GHForPreTraining(tiny_config).train()
    model.refresh_pruning_masks()
    pixel_values = torch.randn(4, 2, 1, 16, 16)
    out = model(pixel_values, gh_weight=1.0)
    # View 2 goes through the pruned branch.
    _, pruned_projections = model.pruned(model.encoder, model.projector, pixel_values[:, 1])
    torch.testing.assert_close(out.projections[:, 1], pruned_projections)
    z1, z2 = out.projections[:, 0], out.projections[:, 1]
    # dense vs detached pruned + pruned vs detached dense = twice the symmetric value.
    torch.testing.assert_close(out.ssl_loss, 2 * nt_xent(z1, z2, 0.2))
    s1, s2 = out.anchor_scores[:, 0], out.anchor_scores[:, 1]
    torch.testing.assert_close(out.gh_loss, 2 * GHLoss()(s1, s2, model.class_prior))
    out.loss.backward()
    norm = next(iter(model.pruned.norms.values()))
    assert norm.weight.grad is not None and norm.weight.grad.abs().sum() > 0
    assert model.encoder.backbone.conv1.weight.grad.abs().sum() > 0


def test_sdclr_state_is_dropped_from_the_encoder(tmp_path, tiny_config):
    tiny_config.ssl_method = "sdclr"
    model = GHForPreTraining(tiny_config)
    model.refresh_pruning_masks()
    model.save_pretrained(tmp_path / "full")
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path / "full")
    for name, mask in model.pruned.named_buffers():
        assert torch.equal(mask, dict(reloaded.pruned.named_buffers())[name]), name
    model.encoder.save_pretrained(tmp_path / "encoder")
    from safetensors.torch import load_file

    assert not any(key.startswith("pruned") for key in load_file(tmp_path / "encoder" / "model.safetensors"))
    assert isinstance(AutoModel.from_pretrained(tmp_path / "full"), GHModel)


def test_pretraining_input_shape_is_checked(tiny_config):
    with pytest.raises(ValueError, match=r"\(B, 2, C, H, W\)"):
        GHForPreTraining(tiny_config)(torch.randn(4, 1, 16, 16))


def test_anchors_and_prior_survive_round_trip(tmp_path, tiny_config):
    model = GHForPreTraining(tiny_config)
    model.class_prior.copy_(torch.linspace(1, 2, 10) / torch.linspace(1, 2, 10).sum())
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert isinstance(loaded, GHForPreTraining)
    assert torch.equal(loaded.anchors, model.anchors)
    assert torch.equal(loaded.class_prior, model.class_prior)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


ROUND_TRIP_SCRIPT = """
import sys, torch, gh_hf
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1]).eval()
pixels = torch.load(sys.argv[2])
torch.save(model(pixels).pooler_output, sys.argv[3])
print(type(model).__name__)
"""


def test_auto_model_round_trip_in_fresh_process(tmp_path, tiny_config):
    model = GHForPreTraining(tiny_config).eval()
    model.save_pretrained(tmp_path / "model")
    pixels = torch.randn(3, 1, 16, 16)
    torch.save(pixels, tmp_path / "pixels.pt")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            ROUND_TRIP_SCRIPT,
            str(tmp_path / "model"),
            str(tmp_path / "pixels.pt"),
            str(tmp_path / "out.pt"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip().endswith("GHModel")
    with torch.no_grad():
        expected = model.encoder(pixels).pooler_output
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["model_type"] == "gh_timm" and config["backbone_kwargs"] == TINY_BACKBONE["backbone_kwargs"]


def test_encoder_save_and_auto_model(tmp_path, tiny_config):
    encoder = GHModel(tiny_config).eval()
    encoder.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    pixels = torch.randn(2, 1, 16, 16)
    assert torch.equal(loaded(pixels).pooler_output, encoder(pixels).pooler_output)


# ---- transformers conventions: initialisation, outputs, gradient checkpointing --------------------


def _assert_projector_at_its_init(projector: torch.nn.Module) -> None:
    for layer in projector.layers:
        if isinstance(layer, torch.nn.BatchNorm1d):
            assert torch.equal(layer.weight, torch.ones_like(layer.weight))
            assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
            assert torch.equal(layer.running_mean, torch.zeros_like(layer.running_mean))
            assert torch.equal(layer.running_var, torch.ones_like(layer.running_var))
            assert layer.num_batches_tracked.item() == 0
        elif isinstance(layer, torch.nn.Linear):  # PyTorch's init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            bound = 1 / math.sqrt(layer.in_features)
            assert layer.weight.abs().max() <= bound and layer.weight.std() > bound / 4
            assert layer.bias is None or layer.bias.abs().max() <= bound


@pytest.mark.parametrize("ssl_method", ["simclr", "sdclr"])
def test_continue_pretraining_from_an_encoder_folder(tmp_path, tiny_config, ssl_method):
    encoder = GHModel(tiny_config)
    save_encoder_folder(encoder, tmp_path / "encoder")
    model = GHForPreTraining.from_pretrained(tmp_path / "encoder", ssl_method=ssl_method).train()
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[name], tensor), name
    _assert_projector_at_its_init(model.projector)
    assert torch.equal(model.anchors, simplex_etf(10, 16, tiny_config.anchors_seed))
    assert torch.equal(model.class_prior, torch.full((10,), 0.1))
    if ssl_method == "sdclr":  # masks of ones, BatchNorm sets copied from the dense ones
        assert all(
            torch.equal(mask, torch.ones_like(mask)) for mask in model.pruned.buffers() if mask.ndim > 1
        )
        dense_bn = model.encoder.backbone.layer1[0].bn2
        pruned_bn = model.pruned.norms["encoder__backbone__layer1__0__bn2"]
        for name, tensor in dense_bn.state_dict().items():
            assert torch.equal(pruned_bn.state_dict()[name], tensor), name
        model.refresh_pruning_masks()
    out = model(torch.randn(4, 2, 1, 16, 16), gh_weight=1.0)
    assert torch.isfinite(out.loss) and torch.isfinite(out.gh_loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_mismatched_input_channels_get_transformers_initialisation(tmp_path):
    rgb = GHModel(GHConfig(**TINY_BACKBONE, in_chans=3, image_size=16))
    rgb.save_pretrained(tmp_path)
    gray = AutoModel.from_pretrained(tmp_path, in_chans=1, ignore_mismatched_sizes=True)
    stem = gray.backbone.conv1.weight
    assert stem.shape[1] == 1 and torch.isfinite(stem).all()
    torch.testing.assert_close(stem.std(), torch.tensor(0.02), atol=0.01, rtol=0)  # normal(0, 0.02)
    for name, tensor in rgb.state_dict().items():  # every other tensor keeps the checkpoint's values
        if name != "backbone.conv1.weight":
            assert torch.equal(gray.state_dict()[name], tensor), name
    assert torch.isfinite(gray(torch.randn(2, 1, 16, 16)).pooler_output).all()


def test_fresh_model_keeps_timm_initialisation_and_inits_the_head(tiny_config):
    reference = GHModel(tiny_config)  # the same timm initialisation as the model's, from the same seed
    torch.manual_seed(0)
    model = GHForPreTraining(tiny_config)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[name], tensor), name
    _assert_projector_at_its_init(model.projector)


def test_encoder_honours_return_dict(tiny_config):
    model = GHModel(tiny_config).eval()
    pixels = torch.randn(2, 1, 16, 16)
    expected = model(pixels)
    as_tuple = model(pixels, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2
    assert torch.equal(as_tuple[0], expected.last_hidden_state) and torch.equal(
        as_tuple[1], expected.pooler_output
    )
    model.config.return_dict = False
    assert isinstance(model(pixels), tuple) and not isinstance(model(pixels, return_dict=True), tuple)


def test_pretraining_model_honours_config_return_dict(tiny_config):
    tiny_config.return_dict = False
    out = GHForPreTraining(tiny_config)(torch.randn(4, 2, 1, 16, 16))
    assert isinstance(out, tuple) and out[0].ndim == 0


def test_encoder_returns_hidden_states_of_every_stage(tiny_config):
    model = GHModel(tiny_config).eval()
    pixels = torch.randn(2, 1, 16, 16)
    out = model(pixels, output_hidden_states=True)
    channels = [info["num_chs"] for info in model.backbone.feature_info]
    assert [state.shape[1] for state in out.hidden_states] == channels == [64, 8, 16, 32, 64]
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    torch.testing.assert_close(out.pooler_output, model(pixels).pooler_output)
    assert model(pixels).hidden_states is None
    assert len(model(pixels, output_hidden_states=True, return_dict=False)) == 3
    model.config.output_hidden_states = True
    assert len(model(pixels).hidden_states) == 5


@pytest.mark.parametrize("ssl_method", ["simclr", "sdclr"])
def test_gradient_checkpointing_gives_the_same_gradients(tiny_config, ssl_method):
    tiny_config.ssl_method = ssl_method
    model = GHForPreTraining(tiny_config).train()
    model.refresh_pruning_masks()
    checkpointed = copy.deepcopy(model)
    assert model.supports_gradient_checkpointing
    checkpointed.activation_checkpointing_enable()
    assert checkpointed.is_activation_checkpointing and checkpointed.encoder.backbone.grad_checkpointing
    pixel_values = torch.randn(4, 2, 1, 16, 16)
    for copy_ in (model, checkpointed):
        copy_(pixel_values, gh_weight=1.0).loss.backward()
    for (name, param), other in zip(model.named_parameters(), checkpointed.parameters(), strict=True):
        if param.grad is not None:
            torch.testing.assert_close(other.grad, param.grad, rtol=1e-4, atol=1e-6, msg=name)
    checkpointed.activation_checkpointing_disable()
    assert (
        not checkpointed.is_activation_checkpointing and not checkpointed.encoder.backbone.grad_checkpointing
    )
