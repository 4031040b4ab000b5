"""Configuration of GH models: a timm backbone, a projector and the GH objective.

Copied next to every saved encoder (Hub remote code): it imports transformers and timm only.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

SSL_METHODS = ("simclr", "focal", "sdclr", "bcl")
# ImageNet's statistics. The training data layer reads them from here: this file is shipped with
# every encoder and imports nothing of the package, so it is where the constant can live once.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _require(condition: bool, field: str, value: Any, allowed: str) -> None:
    if not condition:
        raise ValueError(f"GHConfig.{field}={value!r} is invalid: {allowed}.")


class GHConfig(PretrainedConfig):
    r"""Configuration of [`GHModel`] and [`GHForPreTraining`].

    Args:
        backbone: timm model name (any name `timm.is_model` accepts), built without pretrained
            weights and without a classifier.
        backbone_kwargs: extra keyword arguments for `timm.create_model` (e.g. `channels` for a
            narrow ResNet).
        in_chans: input channels (1 for grayscale data).
        image_size: training resolution (square).
        small_input_stem: replace a ResNet-style stem by a 3x3 stride-1 conv without max-pool (the
            CIFAR convention for 32x32 images).
        image_mean, image_std: per-channel normalisation used for training and evaluation.
        projection_dim: d, output size of the projector.
        num_anchors: K, the number of GUS anchors; needs K <= d + 1.
        anchors_seed: seed of the simplex ETF.
        ssl_method: the SSL base, one of "simclr", "focal", "sdclr", "bcl".
        use_gh: add the Geometric Harmonization term.
        contrastive_temperature: NT-Xent temperature.
        focal_gamma: focal modulation exponent of the "focal" base.
        gh_temperature: softmax temperature gamma of the GH swapped prediction.
        sinkhorn_epsilon: entropic regularisation of the surrogate label allocation.
        sinkhorn_iterations: the most Sinkhorn iterations.
        sinkhorn_tolerance: Sinkhorn stops once the column marginals are this close to the prior
            (0 runs every iteration).
        gh_weight: weight of the GH term once fully ramped up.
        prune_ratio: SDCLR's pruning ratio of the self-competitor.
    """

    model_type = "gh_timm"

    def __init__(
        self,
        backbone: str = "resnet18",
        backbone_kwargs: dict | None = None,
        in_chans: int = 3,
        image_size: int = 32,
        small_input_stem: bool = True,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        projection_dim: int = 128,
        num_anchors: int = 100,
        anchors_seed: int = 0,
        ssl_method: str = "simclr",
        use_gh: bool = True,
        contrastive_temperature: float = 0.2,
        focal_gamma: float = 2.0,
        gh_temperature: float = 0.1,
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_iterations: int = 300,
        sinkhorn_tolerance: float = 1e-6,
        gh_weight: float = 1.0,
        prune_ratio: float = 0.9,
        **kwargs: Any,
    ):
        self.backbone = backbone
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.in_chans = in_chans
        self.image_size = image_size
        self.small_input_stem = small_input_stem
        default_mean = IMAGENET_MEAN if in_chans == 3 else (0.5,) * in_chans
        default_std = IMAGENET_STD if in_chans == 3 else (0.5,) * in_chans
        self.image_mean = list(image_mean if image_mean is not None else default_mean)
        self.image_std = list(image_std if image_std is not None else default_std)
        self.projection_dim = projection_dim
        self.num_anchors = num_anchors
        self.anchors_seed = anchors_seed
        self.ssl_method = ssl_method
        self.use_gh = use_gh
        self.contrastive_temperature = contrastive_temperature
        self.focal_gamma = focal_gamma
        self.gh_temperature = gh_temperature
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_iterations = sinkhorn_iterations
        self.sinkhorn_tolerance = sinkhorn_tolerance
        self.gh_weight = gh_weight
        self.prune_ratio = prune_ratio
        super().__init__(**kwargs)
        self.validate_values()

    def validate_values(self) -> None:
        """Raises ValueError naming the first field with a value outside its allowed range."""
        import timm

        _require(
            timm.is_model(self.backbone),
            "backbone",
            self.backbone,
            "not a timm model name (see timm.list_models())",
        )
        _require(self.in_chans >= 1, "in_chans", self.in_chans, "must be >= 1")
        _require(self.image_size >= 1, "image_size", self.image_size, "must be >= 1")
        for field in ("image_mean", "image_std"):
            values = getattr(self, field)
            _require(
                len(values) == self.in_chans,
                field,
                values,
                f"needs one value per channel (in_chans={self.in_chans})",
            )
        _require(all(s > 0 for s in self.image_std), "image_std", self.image_std, "must be > 0")
        _require(self.projection_dim >= 1, "projection_dim", self.projection_dim, "must be >= 1")
        _require(
            2 <= self.num_anchors <= self.projection_dim + 1,
            "num_anchors",
            self.num_anchors,
            f"a simplex ETF needs 2 <= num_anchors <= projection_dim + 1 = {self.projection_dim + 1}",
        )
        _require(
            self.ssl_method in SSL_METHODS, "ssl_method", self.ssl_method, f"must be one of {SSL_METHODS}"
        )
        for field in ("contrastive_temperature", "gh_temperature", "sinkhorn_epsilon"):
            _require(getattr(self, field) > 0, field, getattr(self, field), "must be > 0")
        _require(self.focal_gamma >= 0, "focal_gamma", self.focal_gamma, "must be >= 0")
        _require(
            self.sinkhorn_iterations >= 1, "sinkhorn_iterations", self.sinkhorn_iterations, "must be >= 1"
        )
        _require(self.sinkhorn_tolerance >= 0, "sinkhorn_tolerance", self.sinkhorn_tolerance, "must be >= 0")
        _require(self.gh_weight >= 0, "gh_weight", self.gh_weight, "must be >= 0")
        _require(0 <= self.prune_ratio < 1, "prune_ratio", self.prune_ratio, "must be in [0, 1)")


__all__ = ["GHConfig"]
