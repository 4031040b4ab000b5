"""Per-sample moving averages of anchor scores, and the anchor prior estimated from them."""

from __future__ import annotations

import torch


class ScoreBank:
    """Holds B (N_train, K): per training sample, a moving average of its view-1 anchor scores.

    The first sighting of a sample copies its score; later ones do B_i <- beta B_i + (1-beta) s_i.
    Updates take the whole global batch, so every process holds the same bank.

    Args:
        num_samples: N_train, the size of the training split (samples are addressed by `index`).
        num_anchors: K.
        device: where the bank lives (the training device avoids a host copy per step).
    """

    def __init__(self, num_samples: int, num_anchors: int, device: torch.device | str = "cpu"):
        if num_samples < 1 or num_anchors < 1:
            raise ValueError(
                f"ScoreBank needs num_samples >= 1 and num_anchors >= 1, got {num_samples}, {num_anchors}."
            )
        self.scores = torch.zeros(num_samples, num_anchors, device=device)
        self.seen = torch.zeros(num_samples, dtype=torch.bool, device=device)

    @torch.no_grad()
    def update(self, indices: torch.Tensor, scores: torch.Tensor, momentum: float) -> None:
        """Vectorised moving-average update.

        Args:
            indices: (N,) sample indices (duplicates allowed only with identical scores).
            scores: (N, K) anchor scores of view 1.
            momentum: beta in [0, 1).
        """
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        indices = indices.to(self.scores.device, torch.long)
        scores = scores.detach().to(self.scores.device, torch.float32)
        seen = self.seen[indices][:, None]  # (N, 1)
        updated = torch.where(seen, momentum * self.scores[indices] + (1 - momentum) * scores, scores)
        self.scores[indices] = updated
        self.seen[indices] = True

    @torch.no_grad()
    def assignments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices (N_seen,), anchors (N_seen,)): the samples seen so far and the argmax_k of their B_i."""
        indices = self.seen.nonzero().squeeze(1)
        return indices, self.scores[indices].argmax(dim=1)

    @torch.no_grad()
    def occupancy(self) -> torch.Tensor:
        """(K,) how many samples seen so far have their bank argmax on each anchor."""
        return torch.bincount(self.assignments()[1], minlength=self.scores.shape[1])

    @torch.no_grad()
    def estimate_prior(self, floor: float = 0.0) -> torch.Tensor:
        """pi = normalise(histogram of argmax_k B_i over the samples seen + floor), shape (K,).

        Uniform when no sample has been seen and `floor` is 0.
        """
        num_anchors = self.scores.shape[1]
        counts = self.occupancy().float() + floor
        if counts.sum() <= 0:
            return torch.full((num_anchors,), 1.0 / num_anchors, device=counts.device)
        return counts / counts.sum()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"scores": self.scores, "seen": self.seen}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["scores"].shape != self.scores.shape:
            raise ValueError(
                f"Checkpointed score bank has shape {tuple(state['scores'].shape)}, expected {tuple(self.scores.shape)}: "
                "was it written for another dataset or number of anchors?"
            )
        self.scores.copy_(state["scores"].to(self.scores.device))
        self.seen.copy_(state["seen"].to(self.seen.device))
