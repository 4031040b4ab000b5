"""The GH encoder: a timm backbone as a transformers `PreTrainedModel`.

This file, `configuration_gh.py` and `image_processing_gh.py` are copied next to every saved
encoder (Hub remote code) and run where the package that trained it may be absent: they import
torch, timm, transformers, numpy, PIL and each other (relatively), nothing else. The pretraining
head (projector, anchors, losses) lives beside them, in `modeling_gh_pretraining.py`, which is
not copied.
"""

from __future__ import annotations

import itertools

import timm
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_gh import GHConfig


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


def _keep_timm_initialisation(module: nn.Module) -> None:
    """Flags the tensors of a freshly built timm module as initialised.

    transformers' init functions skip tensors flagged `_is_hf_initialized`, so `post_init` keeps
    timm's initialisation (the default `_init_weights` would redo every Linear, Conv and norm). A
    tensor that `from_pretrained` materialises from the meta device (a missing or mismatched key)
    is a new, unflagged tensor and gets `_init_weights`.
    """
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if not tensor.is_meta:
            tensor._is_hf_initialized = True


class GHPreTrainedModel(PreTrainedModel):
    config_class = GHConfig
    base_model_prefix = "encoder"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules: list[str] = []

    def _init_weights(self, module: nn.Module) -> None:
        """transformers' default initialisation, plus timm's non-persistent buffers.

        Only tensors without timm's (or a checkpoint's) values reach it: see
        `_keep_timm_initialisation`.
        """
        super()._init_weights(module)
        if hasattr(module, "init_non_persistent_buffers"):
            module.init_non_persistent_buffers()

    def _set_gradient_checkpointing(self, enable: bool = True, *args, **kwargs) -> None:
        """Switches timm's own gradient checkpointing (`set_grad_checkpointing`) of every encoder."""
        for encoder in (module for module in self.modules() if isinstance(module, GHModel)):
            try:
                encoder.backbone.set_grad_checkpointing(enable)
            except (AttributeError, AssertionError, NotImplementedError) as error:
                raise ValueError(
                    f"GHConfig.backbone={self.config.backbone!r} does not support gradient checkpointing "
                    f"(timm's set_grad_checkpointing failed: {error!r}); train without it."
                ) from error
            encoder.gradient_checkpointing = enable  # what `is_activation_checkpointing` reads


class GHModel(GHPreTrainedModel):
    """The encoder: a timm backbone whose pooled features are the representation."""

    # A GHForPreTraining checkpoint also holds the projector and GH buffers; the encoder drops them.
    _keys_to_ignore_on_load_unexpected = [r"^projector\.", r"^anchors$", r"^class_prior$", r"^pruned\."]

    def __init__(self, config: GHConfig):
        super().__init__(config)
        self.backbone = create_backbone(config)
        _keep_timm_initialisation(self.backbone)
        self.num_features = self.backbone.num_features
        self.gradient_checkpointing = False
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple[torch.Tensor, ...]:
        """Encodes images.

        Args:
            pixel_values: (B, C, H, W) normalised images.
            output_hidden_states: Also return every stage's feature map (timm's
                `forward_intermediates`); defaults to `config.output_hidden_states`.
            return_dict: Return a `BaseModelOutputWithPooling` rather than a tuple; defaults to
                `config.return_dict`.

        Returns:
            `last_hidden_state`, the backbone's last feature map; `pooler_output` (B, num_features),
            the pooled features; `hidden_states`, the stages' feature maps (stem first), or None.
            As a tuple, the fields that are not None, in that order.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        hidden_states = None
        if output_hidden_states:
            feature_map, intermediates = self.backbone.forward_intermediates(pixel_values)
            hidden_states = tuple(intermediates)
        else:
            feature_map = self.backbone.forward_features(pixel_values)
        pooled = self.backbone.forward_head(feature_map, pre_logits=True)
        output = BaseModelOutputWithPooling(
            last_hidden_state=feature_map, pooler_output=pooled, hidden_states=hidden_states
        )
        return output if return_dict else output.to_tuple()


__all__ = ["GHModel", "GHPreTrainedModel"]
