"""gh_hf models: a timm backbone as a transformers `PreTrainedModel`, with the GH-SSL objective."""

from __future__ import annotations

import math
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from .configuration_gh import GHConfig
from .geometry import simplex_etf

# Relative imports only, apart from the losses: transformers copies this file, and the files it
# imports relatively, next to a saved GHModel (Hub remote code, see gh_hf.hub), where gh_hf may be
# absent. The copy loads the encoder; only pretraining needs the losses.
try:
    from gh_hf.losses import GHLoss, focal_nt_xent, nt_xent, swapped_prediction
    from gh_hf.sdclr import PrunedBranch
except ModuleNotFoundError as error:
    if error.name != "gh_hf":
        raise
    GHLoss = focal_nt_xent = nt_xent = swapped_prediction = PrunedBranch = None


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


def _use_small_input_stem(backbone: nn.Module, config: GHConfig) -> None:
    """Swaps a ResNet-style stem for a 3x3 stride-1 conv without max-pool (CIFAR convention)."""
    if not (hasattr(backbone, "conv1") and hasattr(backbone, "bn1") and hasattr(backbone, "maxpool")):
        raise ValueError(
            f"GHConfig.small_input_stem=True needs a ResNet-style timm backbone (with conv1, bn1 and "
            f"maxpool); backbone={config.backbone!r} has none. Set small_input_stem=False."
        )
    stem_width = backbone.bn1.num_features
    backbone.conv1 = nn.Conv2d(config.in_chans, stem_width, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(backbone.conv1.weight, mode="fan_out", nonlinearity="relu")
    backbone.maxpool = nn.Identity()


def create_backbone(config: GHConfig) -> nn.Module:
    """The timm backbone of `config`, without classifier (its forward returns pooled features)."""
    backbone = timm.create_model(
        config.backbone, pretrained=False, num_classes=0, in_chans=config.in_chans, **config.backbone_kwargs
    )
    if config.small_input_stem:
        _use_small_input_stem(backbone, config)
    return backbone


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


class GHPreTrainedModel(PreTrainedModel):
    config_class = GHConfig
    base_model_prefix = "encoder"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False
    _no_split_modules: list[str] = []

    def _init_weights(self, module: nn.Module) -> None:
        """Initialises gh_hf's own modules only; timm's initialisation of the backbone is kept."""
        if isinstance(module, GHProjector):
            for layer in module.layers:
                if isinstance(layer, nn.Linear):
                    init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
                    if layer.bias is not None:
                        bound = 1 / math.sqrt(layer.in_features)
                        init.uniform_(layer.bias, -bound, bound)
                elif isinstance(layer, nn.BatchNorm1d):
                    init.ones_(layer.weight)
                    init.zeros_(layer.bias)
        elif isinstance(module, GHForPreTraining):
            config = module.config
            init.copy_(
                module.anchors, simplex_etf(config.num_anchors, config.projection_dim, config.anchors_seed)
            )
            init.constant_(module.class_prior, 1.0 / config.num_anchors)


class GHModel(GHPreTrainedModel):
    """The encoder: a timm backbone whose pooled features are the representation."""

    # A GHForPreTraining checkpoint also holds the projector and GH buffers; the encoder drops them.
    _keys_to_ignore_on_load_unexpected = [r"^projector\.", r"^anchors$", r"^class_prior$", r"^pruned\."]

    def __init__(self, config: GHConfig):
        super().__init__(config)
        self.backbone = create_backbone(config)
        self.num_features = self.backbone.num_features
        self.post_init()

    def forward(
        self, pixel_values: torch.Tensor, return_dict: bool | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        """Encodes images.

        Args:
            pixel_values: (B, C, H, W) normalised images.

        Returns:
            `BaseModelOutputWithPooling` with `last_hidden_state` the backbone's feature map and
            `pooler_output` (B, num_features) the pooled features.
        """
        feature_map = self.backbone.forward_features(pixel_values)
        pooled = self.backbone.forward_head(feature_map, pre_logits=True)
        return BaseModelOutputWithPooling(last_hidden_state=feature_map, pooler_output=pooled)


class GHForPreTraining(GHPreTrainedModel):
    """Encoder + projector + fixed GUS anchors, trained with an SSL base (+ GH).

    Buffers: `anchors` (K, d), the simplex ETF; `class_prior` (K,), the anchor marginal pi used by
    the surrogate label allocation (uniform until the training loop estimates it).
    """

    def __init__(self, config: GHConfig):
        if GHLoss is None:
            raise ImportError(
                "GHForPreTraining needs the gh_hf package (pip install gh_hf); this copy of modeling_gh.py "
                "runs as Hub remote code, which loads the encoder (AutoModel) only."
            )
        super().__init__(config)
        self.encoder = GHModel(config)
        self.projector = GHProjector(self.encoder.num_features, config.projection_dim)
        anchors = simplex_etf(config.num_anchors, config.projection_dim, config.anchors_seed)
        self.register_buffer("anchors", anchors)
        self.register_buffer("class_prior", torch.full((config.num_anchors,), 1.0 / config.num_anchors))
        self.gh_loss_fn = GHLoss(
            epsilon=config.sinkhorn_epsilon,
            sinkhorn_iters=config.sinkhorn_iterations,
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
            pooled = self.encoder(pixel_values).pooler_output
            return pooled, self.projector(pooled)
        dense, pruned = pixel_values.chunk(2)  # view 1 -> dense branch, view 2 -> pruned branch
        dense_pooled = self.encoder(dense).pooler_output
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
            return_dict: return a `GHPreTrainingOutput` (default) or a tuple.
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
        return output if return_dict is not False else output.to_tuple()


__all__ = ["GHForPreTraining", "GHModel", "GHPreTrainedModel", "GHPreTrainingOutput", "GHProjector"]
