"""The GH pretraining head: projector, GUS anchors, the SSL base (+ GH) and SDCLR's pruned branch.

Training-only: this module is not copied next to a saved encoder (see `gh_hf.modeling_gh`), so it
may import the rest of gh_hf.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.utils import ModelOutput

from gh_hf.configuration_gh import GHConfig
from gh_hf.geometry import simplex_etf
from gh_hf.losses import GHLoss, focal_nt_xent, nt_xent, swapped_prediction
from gh_hf.modeling_gh import GHModel, GHPreTrainedModel
from gh_hf.sdclr import ENCODER_CALL, PrunedBranch


@dataclass
class GHPreTrainingOutput(ModelOutput):
    r"""Output of [`GHForPreTraining`].

    Args:
        loss: `ssl_loss + gh_weight * gh_loss`, scalar.
        ssl_loss: the SSL base's contrastive loss, scalar.
        gh_loss: the Geometric Harmonization loss, scalar; None when GH is off or its weight is 0.
        projections: (B, 2, d) projector outputs z of both views (not normalised).
        anchor_scores: (B, 2, K) normalised anchor scores s = normalize(z M^T) of both views.
        pooler_output: (B, 2, F) pooled backbone features of both views.
        ssl_loss_per_sample: (B,) each image's SSL loss (its two views averaged); BCL's memory reads it.

    With ssl_method="sdclr" the second view goes through the pruned branch: index 1 of
    `projections`, `anchor_scores` and `pooler_output` is the pruned branch's.
    """

    loss: torch.FloatTensor | None = None
    ssl_loss: torch.FloatTensor | None = None
    gh_loss: torch.FloatTensor | None = None
    projections: torch.FloatTensor | None = None
    anchor_scores: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    ssl_loss_per_sample: torch.FloatTensor | None = None


class GHProjector(nn.Module):
    """Linear(c, c) - BN - ReLU - Linear(c, d, no bias) - BN."""

    def __init__(self, in_features: int, projection_dim: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, in_features),
            nn.BatchNorm1d(in_features),
            nn.ReLU(inplace=True),
            nn.Linear(in_features, projection_dim, bias=False),
            nn.BatchNorm1d(projection_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


@contextmanager
def _without_gradient_checkpointing(encoder: GHModel) -> Iterator[None]:
    """Runs SDCLR's pruned branch with timm's checkpointing off: its recomputation in the backward
    pass would run outside the branch's `functional_call`, with the dense weights and norms."""
    if not encoder.gradient_checkpointing:
        yield
        return
    encoder.backbone.set_grad_checkpointing(False)
    try:
        yield
    finally:
        encoder.backbone.set_grad_checkpointing(True)


class GHForPreTraining(GHPreTrainedModel):
    """Encoder + projector + fixed GUS anchors, trained with an SSL base (+ GH).

    Buffers: `anchors` (K, d), the simplex ETF; `class_prior` (K,), the anchor marginal pi used by
    the surrogate label allocation (uniform until the training loop estimates it).
    `GHForPreTraining.from_pretrained(encoder_folder)` continues pretraining from a saved encoder:
    the projector, anchors and prior (and SDCLR's branch) start from their initialisation.
    """

    def __init__(self, config: GHConfig):
        super().__init__(config)
        self.encoder = GHModel(config)
        self.projector = GHProjector(self.encoder.num_features, config.projection_dim)
        anchors = simplex_etf(config.num_anchors, config.projection_dim, config.anchors_seed)
        self.register_buffer("anchors", anchors)
        self.register_buffer("class_prior", torch.full((config.num_anchors,), 1.0 / config.num_anchors))
        self.gh_loss_fn = GHLoss(
            epsilon=config.sinkhorn_epsilon,
            sinkhorn_iterations=config.sinkhorn_iterations,
            temperature=config.gh_temperature,
            gather_distributed=True,
            sinkhorn_tolerance=config.sinkhorn_tolerance,
        )
        # SDCLR's self-competitor: masks and BatchNorm sets over the shared weights (no model copy).
        self.pruned = (
            PrunedBranch(self.encoder, self.projector, config.prune_ratio)
            if config.ssl_method == "sdclr"
            else None
        )
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """The head's own initialisation (the encoder's modules go to `GHModel._init_weights`).

        Projector: its Linear layers as PyTorch initialises them, its BatchNorms as transformers
        does (weight 1, bias 0, running mean 0, running variance 1). The anchors and the uniform
        prior; SDCLR's branch as first built (masks of ones, copies of the dense BatchNorms).
        """
        if isinstance(module, nn.Linear):  # the projector's: the encoder's are not dispatched here
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.in_features)
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, PrunedBranch):
            module.reset_from_dense(self.encoder, self.projector)
        elif isinstance(module, GHForPreTraining):
            config = module.config
            init.copy_(
                module.anchors, simplex_etf(config.num_anchors, config.projection_dim, config.anchors_seed)
            )
            init.constant_(module.class_prior, 1.0 / config.num_anchors)
        else:
            super()._init_weights(module)

    def anchor_scores(self, projections: torch.Tensor) -> torch.Tensor:
        """s = normalize(z M^T) over the K anchors; (..., d) -> (..., K)."""
        return F.normalize(projections @ self.anchors.to(projections.dtype).T, dim=-1)

    def ssl_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """(B,) per-image SSL loss of the configured base (NT-Xent; focal NT-Xent for "focal")."""
        config = self.config
        if config.ssl_method == "focal":
            return focal_nt_xent(
                z1,
                z2,
                config.contrastive_temperature,
                config.focal_gamma,
                gather_distributed=True,
                reduction="per_sample",
            )
        return nt_xent(
            z1, z2, config.contrastive_temperature, gather_distributed=True, reduction="per_sample"
        )

    def refresh_pruning_masks(self) -> None:
        """SDCLR: recompute the pruned branch's masks from the current dense weights (every epoch)."""
        if self.pruned is not None:
            self.pruned.update_masks(self.encoder)

    def encode_views(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled (2B, F), projections (2B, d)) for views stacked view-major: (2B, C, H, W)."""
        if self.pruned is None:
            pooled = self.encoder(pixel_values, **ENCODER_CALL).pooler_output
            return pooled, self.projector(pooled)
        dense, pruned = pixel_values.chunk(2)  # view 1 -> dense branch, view 2 -> pruned branch
        dense_pooled = self.encoder(dense, **ENCODER_CALL).pooler_output
        with _without_gradient_checkpointing(self.encoder):
            pruned_pooled, pruned_projections = self.pruned(self.encoder, self.projector, pruned)
        return torch.cat([dense_pooled, pruned_pooled]), torch.cat(
            [self.projector(dense_pooled), pruned_projections]
        )

    def gh_loss(self, scores_1: torch.Tensor, scores_2: torch.Tensor) -> torch.Tensor:
        """GH between two views' scores; for SDCLR, on both pairs (each branch vs the other, detached)."""
        if self.pruned is None:
            return self.gh_loss_fn(scores_1, scores_2, self.class_prior)
        allocation_1, allocation_2 = self.gh_loss_fn.allocate(
            torch.stack([scores_1, scores_2]), self.class_prior
        )
        temperature = self.gh_loss_fn.temperature
        return swapped_prediction(
            scores_1, scores_2.detach(), allocation_1, allocation_2, temperature
        ) + swapped_prediction(scores_2, scores_1.detach(), allocation_2, allocation_1, temperature)

    def forward(
        self,
        pixel_values: torch.Tensor,
        gh_weight: float | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> GHPreTrainingOutput | tuple:
        """Computes the pretraining loss on two views.

        Args:
            pixel_values: (B, 2, C, H, W), two augmented views of each image.
            gh_weight: weight of the GH term for this step (the warm-up/ramp schedule); defaults to
                `config.gh_weight`. Ignored when `config.use_gh` is False.
            return_dict: return a `GHPreTrainingOutput` or a tuple; defaults to `config.return_dict`.
        """
        if pixel_values.ndim != 5 or pixel_values.shape[1] != 2:
            raise ValueError(
                f"pixel_values must have shape (B, 2, C, H, W), got {tuple(pixel_values.shape)}."
            )
        batch_size = pixel_values.shape[0]
        views = pixel_values.transpose(0, 1).reshape(2 * batch_size, *pixel_values.shape[2:])
        pooled, projections = self.encode_views(views)  # (2B, F), (2B, d)
        scores = self.anchor_scores(projections)  # (2B, K)
        z1, z2 = projections[:batch_size], projections[batch_size:]
        if self.pruned is None:
            per_sample = self.ssl_loss(z1, z2)
        else:  # SDCLR: dense vs detached pruned + pruned vs detached dense
            per_sample = self.ssl_loss(z1, z2.detach()) + self.ssl_loss(z2, z1.detach())
        ssl_loss = per_sample.mean()
        weight = self.config.gh_weight if gh_weight is None else gh_weight
        gh_loss = None
        loss = ssl_loss
        if self.config.use_gh and weight > 0:
            gh_loss = self.gh_loss(scores[:batch_size], scores[batch_size:])
            loss = ssl_loss + weight * gh_loss
        output = GHPreTrainingOutput(
            loss=loss,
            ssl_loss=ssl_loss,
            gh_loss=gh_loss,
            projections=projections.view(2, batch_size, -1).transpose(0, 1),
            anchor_scores=scores.view(2, batch_size, -1).transpose(0, 1),
            pooler_output=pooled.view(2, batch_size, -1).transpose(0, 1),
            ssl_loss_per_sample=per_sample,
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()


__all__ = ["GHForPreTraining", "GHPreTrainingOutput", "GHProjector"]
