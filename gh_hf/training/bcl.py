"""BCL's memory: a per-sample moving average of the contrastive loss, turned into augmentation strength.

(Zhou et al., "Contrastive Learning with Boosted Memorization", ICML 2022.) Samples the model
finds hard (a high remembered loss; often tail samples) get stronger RandAugment next epoch.
"""

from __future__ import annotations

import torch

from gh_hf.training.moving_average import PerSampleMovingAverage


class LossMemory(PerSampleMovingAverage):
    """Per-sample moving average of the SSL loss, and the augmentation strengths it sets.

    Args:
        num_samples: size of the training split (samples are addressed by `index`).
        momentum: beta of the moving average (0.97 in BCL).
        device: where the memory lives.
    """

    value_key = "losses"
    description = "BCL loss memory"

    def __init__(self, num_samples: int, momentum: float = 0.97, device: torch.device | str = "cpu"):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        super().__init__(num_samples, (), device=device)
        self.momentum = momentum
        self.current_strengths = torch.zeros(num_samples, device=device)  # what this epoch's views use

    @property
    def losses(self) -> torch.Tensor:
        """(N_train,) the remembered losses (0 for samples not seen yet)."""
        return self.values

    def update(self, indices: torch.Tensor, losses: torch.Tensor, momentum: float | None = None) -> None:
        """First sighting copies the loss; later ones average it in. indices, losses: (N,).

        `momentum` defaults to the memory's own beta.
        """
        super().update(indices, losses, self.momentum if momentum is None else momentum)

    @torch.no_grad()
    def strengths(self) -> torch.Tensor:
        """Augmentation strength in [0, 1] per sample: min-max normalised remembered loss.

        Monotone in the remembered loss; samples not seen yet get 0 (no extra augmentation).
        """
        strengths = torch.zeros_like(self.losses)
        if self.seen.any():
            seen_losses = self.losses[self.seen]
            low, high = seen_losses.min(), seen_losses.max()
            strengths[self.seen] = (
                (seen_losses - low) / (high - low) if high > low else torch.zeros_like(seen_losses)
            )
        return strengths

    def next_epoch_strengths(self) -> torch.Tensor:
        """Fixes the strengths of the next epoch (kept, so a resumed run draws the same views)."""
        self.current_strengths.copy_(self.strengths())
        return self.current_strengths

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**super().state_dict(), "current_strengths": self.current_strengths}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.current_strengths.copy_(state["current_strengths"].to(self.current_strengths.device))
