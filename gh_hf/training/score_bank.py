"""Per-sample moving averages of anchor scores, and the anchor prior estimated from them."""

from __future__ import annotations

import torch

from gh_hf.training.moving_average import PerSampleMovingAverage


class ScoreBank(PerSampleMovingAverage):
    """Holds B (N_train, K): per training sample, a moving average of its view-1 anchor scores.

    The first sighting of a sample copies its score; later ones do B_i <- beta B_i + (1-beta) s_i.
    Updates take the whole global batch, so every process holds the same bank.

    Args:
        num_samples: N_train, the size of the training split (samples are addressed by `index`).
        num_anchors: K.
        device: where the bank lives (the training device avoids a host copy per step).
    """

    value_key = "scores"
    description = "score bank"

    def __init__(self, num_samples: int, num_anchors: int, device: torch.device | str = "cpu"):
        super().__init__(num_samples, (num_anchors,), device=device)

    @property
    def scores(self) -> torch.Tensor:
        """(N_train, K) the bank B (rows of samples not seen yet are 0)."""
        return self.values

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
