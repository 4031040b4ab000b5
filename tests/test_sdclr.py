"""SDCLR's pruned branch: mask fractions, weight sharing, separate BatchNorm."""

from __future__ import annotations

import copy

import pytest
import torch

from gh_hf import GHForPreTraining
from gh_hf.sdclr import PrunedBranch, global_magnitude_masks, magnitude_mask, prunable_weights


@pytest.fixture
def model(tiny_config):
    return GHForPreTraining(tiny_config).train()


def test_magnitude_mask_prunes_the_smallest_exactly():
    weight = torch.tensor([[0.5, -0.1, 0.3], [-0.9, 0.2, 0.05]])
    mask = magnitude_mask(weight, 0.5)
    assert mask.tolist() == [[1, 0, 1], [1, 0, 0]]
    ties = torch.ones(10)
    assert magnitude_mask(ties, 0.3).sum() == 7
    with pytest.raises(ValueError, match="prune_ratio"):
        magnitude_mask(weight, 1.0)


def reference_global_masks(encoder: torch.nn.Module, ratio: float) -> dict[str, torch.Tensor]:
    """SDCLR's definition, written out: one magnitude threshold over all conv weights of the encoder."""
    convs = {
        f"{name}.weight": m.weight for name, m in encoder.named_modules() if isinstance(m, torch.nn.Conv2d)
    }
    magnitudes = torch.cat([weight.detach().abs().flatten() for weight in convs.values()])
    num_pruned = round(ratio * magnitudes.numel())
    threshold = magnitudes.sort().values[num_pruned - 1]  # the largest pruned magnitude
    return {name: (weight.detach().abs() > threshold).float() for name, weight in convs.items()}


@pytest.mark.parametrize("ratio", [0.9, 0.1])
def test_pruning_is_global_with_one_threshold(model, ratio):
    branch = PrunedBranch(model.encoder, model.projector, ratio)
    branch.update_masks(model.encoder)
    expected = reference_global_masks(model.encoder, ratio)
    assert sorted(expected) == sorted(prunable_weights(model.encoder))  # a ResNet encoder: convs only
    for name, mask in expected.items():
        assert torch.equal(branch.mask(name), mask), name
    total = sum(weight.numel() for weight in prunable_weights(model.encoder).values())
    pruned = sum((branch.mask(name) == 0).sum().item() for name in expected)
    assert pruned == round(ratio * total)
    # Global, not per layer: layers of smaller weights lose a larger share.
    fractions = [(branch.mask(name) == 0).float().mean().item() for name in expected]
    assert max(fractions) - min(fractions) > 0.05


def test_global_magnitude_masks_prune_the_smallest_over_all_tensors():
    small, large = torch.tensor([0.1, -0.2, 0.3]), torch.tensor([[1.0, -0.05], [2.0, 3.0]])
    masks = global_magnitude_masks([small, large], 3 / 7)
    assert masks[0].tolist() == [0, 0, 1] and masks[1].tolist() == [[1, 0], [1, 1]]


def test_pruned_forward_equals_a_masked_copy(model):
    branch = PrunedBranch(model.encoder, model.projector, 0.9)
    branch.update_masks(model.encoder)
    pixels = torch.randn(6, 1, 16, 16)
    copy_encoder, copy_projector = copy.deepcopy(model.encoder), copy.deepcopy(model.projector)
    with torch.no_grad():
        for name, weight in prunable_weights(copy_encoder).items():
            weight.mul_(branch.mask(name))
    # The copy uses the pruned branch's BatchNorm sets (fresh copies of the dense ones here).
    _, projections = branch(model.encoder, model.projector, pixels)
    expected = copy_projector(copy_encoder(pixels).pooler_output)
    torch.testing.assert_close(projections, expected)


def test_dense_forward_and_dense_bn_unchanged_by_pruned_forward(model):
    branch = PrunedBranch(model.encoder, model.projector, 0.9)
    branch.update_masks(model.encoder)
    pixels = torch.randn(6, 1, 16, 16)
    dense_before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    reference = model.encoder(pixels).pooler_output
    model.train()
    branch(model.encoder, model.projector, pixels)
    for key, value in model.state_dict().items():
        assert torch.equal(value, dense_before[key]), key
    model.eval()
    torch.testing.assert_close(model.encoder(pixels).pooler_output, reference)


def test_pruned_bn_statistics_move_and_gradients_reach_dense_weights(model):
    branch = PrunedBranch(model.encoder, model.projector, 0.5)
    branch.update_masks(model.encoder)
    name = next(iter(branch.norms))
    before = branch.norms[name].running_mean.clone()
    _, projections = branch(model.encoder, model.projector, torch.randn(6, 1, 16, 16))
    assert not torch.equal(branch.norms[name].running_mean, before)
    projections.sum().backward()
    conv = model.encoder.backbone.conv1.weight
    mask = branch.mask("backbone.conv1.weight")
    assert conv.grad is not None and conv.grad.abs().sum() > 0
    assert torch.all(conv.grad[mask == 0] == 0)  # pruned entries get no gradient from this branch
