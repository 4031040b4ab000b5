"""BCL's memory: a per-sample moving average of the contrastive loss, turned into augmentation strength.

(Zhou et al., "Contrastive Learning with Boosted Memorization", ICML 2022.) Samples the model
finds hard (a high remembered loss; often tail samples) get stronger RandAugment next epoch.
"""

from __future__ import annotations

import torch


class LossMemory:
    """Per-sample moving average of the SSL loss.

    Args:
        num_samples: size of the training split (samples are addressed by `index`).
        momentum: beta of the moving average (0.97 in BCL).
    """

    def __init__(self, num_samples: int, momentum: float = 0.97, device: torch.device | str = "cpu"):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        self.momentum = momentum
        self.losses = torch.zeros(num_samples, device=device)
        self.seen = torch.zeros(num_samples, dtype=torch.bool, device=device)
        self.current_strengths = torch.zeros(num_samples, device=device)  # what this epoch's views use

    @torch.no_grad()
    def update(self, indices: torch.Tensor, losses: torch.Tensor) -> None:
        """First sighting copies the loss; later ones average it in. indices, losses: (N,)."""
        indices = indices.to(self.losses.device, torch.long)
        losses = losses.detach().to(self.losses.device, torch.float32)
        seen = self.seen[indices]
        self.losses[indices] = torch.where(
            seen, self.momentum * self.losses[indices] + (1 - self.momentum) * losses, losses
        )
        self.seen[indices] = True

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
        return {"losses": self.losses, "seen": self.seen, "current_strengths": self.current_strengths}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["losses"].shape != self.losses.shape:
            raise ValueError(
                f"Checkpointed loss memory has shape {tuple(state['losses'].shape)}, expected {tuple(self.losses.shape)}."
            )
        self.losses.copy_(state["losses"].to(self.losses.device))
        self.seen.copy_(state["seen"].to(self.seen.device))
        self.current_strengths.copy_(state["current_strengths"].to(self.current_strengths.device))
