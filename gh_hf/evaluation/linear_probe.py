"""Linear probe on frozen features: Adam, lr decayed exponentially, features kept in one tensor."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_NORMS = ("standardize", "l2", "none")


def default_device(device: str | torch.device | None = None) -> torch.device:
    """`device` if given, else the first CUDA GPU when there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class LinearProbe(nn.Module):
    """A feature normalisation fitted on the training features, then one Linear layer.

    "standardize" (default) z-scores every feature dimension with the training mean and std,
    the equivalent of a BatchNorm1d without affine parameters frozen after fitting (as in
    MAE's linear probe): it makes one learning rate suit every backbone. "l2" projects each
    feature onto the unit sphere; "none" leaves features raw.

    Args:
        num_features: F.
        num_classes: C.
        feature_norm: "standardize", "l2" or "none".
    """

    def __init__(self, num_features: int, num_classes: int, feature_norm: str = "standardize"):
        super().__init__()
        if feature_norm not in FEATURE_NORMS:
            raise ValueError(f"feature_norm must be one of {list(FEATURE_NORMS)}, got {feature_norm!r}")
        self.feature_norm = feature_norm
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.linear = nn.Linear(num_features, num_classes)
        # Softmax regression is convex: a zero start is deterministic and loses nothing.
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    @torch.no_grad()
    def fit_normalization(self, features: torch.Tensor) -> None:
        """Set the standardisation statistics from the training features (N, F)."""
        self.mean.copy_(features.mean(dim=0))
        self.std.copy_(features.std(dim=0, unbiased=False).clamp_min(1e-6))

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        """Features (N, F) as the Linear layer sees them."""
        if self.feature_norm == "standardize":
            return (features - self.mean) / self.std
        if self.feature_norm == "l2":
            return F.normalize(features, dim=-1)
        return features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (N, C) of raw features (N, F)."""
        return self.linear(self.normalize(features))


def _check_probe_args(
    train_features: torch.Tensor, train_labels: torch.Tensor, num_classes: int, **values: float
) -> None:
    if train_features.ndim != 2 or train_features.shape[0] != train_labels.shape[0]:
        raise ValueError(
            f"train_features must be (N, F) with N = len(train_labels) = {train_labels.shape[0]}, "
            f"got shape {tuple(train_features.shape)}"
        )
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    if values["final_lr"] > values["lr"]:
        raise ValueError(f"final_lr must be <= lr = {values['lr']}, got {values['final_lr']}")
    if train_labels.numel() and not 0 <= int(train_labels.min()) <= int(train_labels.max()) < num_classes:
        raise ValueError(
            f"train_labels must be in [0, num_classes={num_classes}), "
            f"got range [{int(train_labels.min())}, {int(train_labels.max())}]"
        )


def probe_optimizer(
    parameters: Iterable[nn.Parameter], epochs: int, lr: float, final_lr: float, weight_decay: float
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.ExponentialLR]:
    """Adam and a per-epoch ExponentialLR with gamma = (final_lr / lr) ** (1 / epochs).

    After `epochs` calls of `scheduler.step()` the learning rate is `final_lr`.
    """
    optimizer = torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=(final_lr / lr) ** (1.0 / epochs))
    return optimizer, scheduler


@torch.no_grad()
def predict(probe: nn.Module, features: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Argmax class ids (N,) of `probe` on features (N, F), on the CPU."""
    device = next(probe.parameters()).device
    probe.eval()
    chunks = [probe(chunk.to(device).float()).argmax(dim=1).cpu() for chunk in features.split(batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.long)


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    epochs: int = 500,
    lr: float = 1e-2,
    final_lr: float = 1e-6,
    weight_decay: float = 5e-6,
    batch_size: int = 1000,
    seed: int = 0,
    device: str | torch.device | None = None,
    feature_norm: str = "standardize",
) -> tuple[torch.Tensor, LinearProbe]:
    """Train a linear classifier on frozen features and predict the test set (DESIGN.md 5).

    Adam with `weight_decay`, lr multiplied once per epoch by (final_lr / lr) ** (1 / epochs),
    so the last epoch ends at `final_lr`; mini-batches of `batch_size` from a seeded per-epoch
    shuffle of the feature tensor (the last, smaller batch is kept).

    Args:
        train_features: (N, F) features of the (balanced) training set.
        train_labels: (N,) class ids in [0, num_classes).
        test_features: (M, F) features to predict.
        num_classes: C.
        epochs: Passes over the training features.
        lr: Initial learning rate.
        final_lr: Learning rate after the last epoch.
        weight_decay: Adam's L2 penalty.
        batch_size: Mini-batch size.
        seed: Seed of the shuffles.
        device: Where to train; defaults to CUDA when available, else the CPU.
        feature_norm: "standardize" (default), "l2" or "none" (see `LinearProbe`).

    Returns:
        (predicted class ids (M,) int64 on the CPU, the trained `LinearProbe` in eval mode).
    """
    _check_probe_args(
        train_features,
        train_labels,
        num_classes,
        epochs=epochs,
        lr=lr,
        final_lr=final_lr,
        batch_size=batch_size,
    )
    device = default_device(device)
    features = train_features.to(device).float()  # (N, F)
    labels = train_labels.to(device).long()  # (N,)
    probe = LinearProbe(features.shape[1], num_classes, feature_norm).to(device)
    probe.fit_normalization(features)
    with torch.no_grad():
        features = probe.normalize(features)  # normalised once, not per step
    optimizer, scheduler = probe_optimizer(probe.linear.parameters(), epochs, lr, final_lr, weight_decay)
    generator = torch.Generator().manual_seed(seed)
    probe.train()
    for _ in range(epochs):
        order = torch.randperm(features.shape[0], generator=generator).to(device)
        for batch in order.split(batch_size):
            loss = F.cross_entropy(probe.linear(features[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    return predict(probe, test_features), probe.eval()
