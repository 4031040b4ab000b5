"""SDCLR's self-competitor: a magnitude-pruned view of the encoder with its own BatchNorm.

The pruned branch shares the dense weights (no copy of the model): its forward substitutes
`weight * mask` for every prunable weight and swaps in separate BatchNorm parameters and
statistics with `torch.func.functional_call`, so gradients from the pruned branch reach the
dense weights through the mask and the dense BatchNorm statistics are left alone. Pruning is
global, as in SDCLR's code: one magnitude threshold over all prunable weights of the encoder, so
layers of small weights lose more than layers of large ones.
(Jiang et al., "Self-Damaging Contrastive Learning", ICML 2021.)
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import nn
from torch.func import functional_call
from transformers import initialization as init

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)
# How the pretraining head calls its encoder: pooled features only, whatever the config says.
ENCODER_CALL = {"output_hidden_states": False, "return_dict": True}


def _key(name: str) -> str:
    return name.replace(".", "__")


def _norm_layers(encoder: nn.Module, projector: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(key, layer) of every BatchNorm of the encoder and the projector."""
    for part, module in (("encoder", encoder), ("projector", projector)):
        for name, layer in module.named_modules():
            if isinstance(layer, _NORMS):
                yield _key(f"{part}.{name}"), layer


def prunable_weights(module: nn.Module) -> dict[str, nn.Parameter]:
    """Weights of every convolution and linear layer of `module`, by parameter name.

    For the ResNets of SDCLR's code (no classifier) these are exactly its pruned conv layers.
    """
    return {
        f"{name}.weight" if name else "weight": layer.weight
        for name, layer in module.named_modules()
        if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
    }


@torch.no_grad()
def magnitude_mask(weight: torch.Tensor, prune_ratio: float) -> torch.Tensor:
    """A 0/1 mask zeroing the round(prune_ratio * numel) smallest-magnitude entries of `weight`."""
    if not 0 <= prune_ratio < 1:
        raise ValueError(f"prune_ratio must be in [0, 1), got {prune_ratio}.")
    num_pruned = round(prune_ratio * weight.numel())
    mask = torch.ones(weight.numel(), device=weight.device, dtype=weight.dtype)
    if num_pruned:
        # argsort (stable) rather than a threshold, so ties cannot change the pruned count.
        order = weight.detach().abs().flatten().argsort(stable=True)
        mask[order[:num_pruned]] = 0
    return mask.view_as(weight)


@torch.no_grad()
def global_magnitude_masks(weights: list[torch.Tensor], prune_ratio: float) -> list[torch.Tensor]:
    """0/1 masks zeroing the round(prune_ratio * N) smallest-magnitude entries among all N of `weights`.

    One threshold for all tensors (SDCLR's global magnitude pruning), not one per tensor.
    """
    if not weights:
        return []
    flat = torch.cat([weight.detach().flatten() for weight in weights])  # (N,)
    masks = magnitude_mask(flat, prune_ratio).split([weight.numel() for weight in weights])
    return [mask.view_as(weight) for mask, weight in zip(masks, weights, strict=True)]


class PrunedBranch(nn.Module):
    """Masks and BatchNorm sets of the pruned branch of an (encoder, projector) pair.

    Args:
        encoder: the dense encoder (its conv/linear weights are pruned, globally).
        projector: the projector (not pruned; it gets separate BatchNorm sets too).
        prune_ratio: fraction of all the encoder's prunable weights pruned.
    """

    def __init__(self, encoder: nn.Module, projector: nn.Module, prune_ratio: float):
        super().__init__()
        if not 0 <= prune_ratio < 1:
            raise ValueError(f"prune_ratio must be in [0, 1), got {prune_ratio}.")
        self.prune_ratio = prune_ratio
        self.weight_names = list(prunable_weights(encoder))
        for name, weight in prunable_weights(encoder).items():
            self.register_buffer(f"mask__{_key(name)}", torch.ones_like(weight))
        self.norms = nn.ModuleDict(
            {key: copy.deepcopy(layer) for key, layer in _norm_layers(encoder, projector)}
        )

    def mask(self, name: str) -> torch.Tensor:
        return getattr(self, f"mask__{_key(name)}")

    @torch.no_grad()
    def update_masks(self, encoder: nn.Module) -> None:
        """Recomputes the masks from the current dense weights (identical on all ranks)."""
        weights = prunable_weights(encoder)
        masks = global_magnitude_masks([weights[name] for name in self.weight_names], self.prune_ratio)
        for name, mask in zip(self.weight_names, masks, strict=True):
            self.mask(name).copy_(mask)

    @torch.no_grad()
    def reset_from_dense(self, encoder: nn.Module, projector: nn.Module) -> None:
        """The branch as first built: masks of ones, BatchNorm sets copied from the dense ones.

        Uses transformers' guarded init functions: tensors loaded from a checkpoint are kept.
        """
        for name in self.weight_names:
            init.ones_(self.mask(name))
        for key, layer in _norm_layers(encoder, projector):
            own = self.norms[key].state_dict(keep_vars=True)
            for name, dense in layer.state_dict().items():
                init.copy_(own[name], dense)

    def _overrides(self, part: str, module: nn.Module) -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {}
        if part == "encoder":
            weights = prunable_weights(module)
            tensors.update({name: weights[name] * self.mask(name) for name in self.weight_names})
        for name, layer in module.named_modules():
            if isinstance(layer, _NORMS):
                norm = self.norms[_key(f"{part}.{name}")]
                prefix = f"{name}." if name else ""
                tensors.update({prefix + key: value for key, value in norm.named_parameters()})
                tensors.update({prefix + key: value for key, value in norm.named_buffers()})
        return tensors

    def forward(self, encoder: nn.Module, projector: nn.Module, pixel_values: torch.Tensor):
        """(pooled features, projections) of the pruned branch for `pixel_values` (B, C, H, W)."""
        overrides = self._overrides("encoder", encoder)
        pooled = functional_call(encoder, overrides, (pixel_values,), ENCODER_CALL).pooler_output
        projections = functional_call(projector, self._overrides("projector", projector), (pooled,))
        return pooled, projections
