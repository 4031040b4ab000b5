"""The Geometric Harmonization loss: swapped prediction of Sinkhorn surrogate labels."""

from __future__ import annotations

import torch

from gh_hf.losses.sinkhorn import sinkhorn


def swapped_prediction(
    scores_1: torch.Tensor,
    scores_2: torch.Tensor,
    allocation_1: torch.Tensor,
    allocation_2: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """-mean_i sum_k q1_ik log softmax(s2_i/T)_k - mean_i sum_k q2_ik log softmax(s1_i/T)_k.

    Args:
        scores_1, scores_2: (N, K) anchor scores of the two views.
        allocation_1, allocation_2: (N, K) surrogate labels (treated as constants).
        temperature: softmax temperature gamma.
    """
    log_p1 = (scores_1.float() / temperature).log_softmax(dim=-1)
    log_p2 = (scores_2.float() / temperature).log_softmax(dim=-1)
    term_1 = -(allocation_1 * log_p2).sum(dim=-1).mean()
    term_2 = -(allocation_2 * log_p1).sum(dim=-1).mean()
    return term_1 + term_2


class GHLoss(torch.nn.Module):
    """Category-level uniformity loss of Geometric Harmonization (Zhou et al., NeurIPS 2023).

    Called as ``loss(scores_1, scores_2, prior)`` with (N, K) anchor scores of two views and the
    (K,) anchor prior pi; each view's surrogate labels come from Sinkhorn (no gradient) and
    supervise the other view's softmax. After each allocation, `last_sinkhorn_iterations` holds
    the number of Sinkhorn iterations it ran (0 before the first), for the training logs.

    Args:
        epsilon: Sinkhorn entropic regularisation (> 0).
        sinkhorn_iterations: the most Sinkhorn iterations (>= 1).
        temperature: softmax temperature gamma of the swapped prediction (> 0).
        gather_distributed: run Sinkhorn over the global batch of all processes.
        sinkhorn_tolerance: Sinkhorn's early-stopping tolerance on the column marginals (0: off).
        sinkhorn_overrelax: over-relax Sinkhorn's scalings while it converges to the tolerance
            (the same solution in fewer iterations; see `sinkhorn`). False: plain Sinkhorn-Knopp.
    """

    def __init__(
        self,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 300,
        temperature: float = 0.1,
        gather_distributed: bool = False,
        sinkhorn_tolerance: float = 1e-6,
        sinkhorn_overrelax: bool = True,
    ):
        super().__init__()
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}.")
        if not (isinstance(sinkhorn_iterations, int) and sinkhorn_iterations >= 1):
            raise ValueError(f"sinkhorn_iterations must be an integer >= 1, got {sinkhorn_iterations}.")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if sinkhorn_tolerance < 0:
            raise ValueError(f"sinkhorn_tolerance must be >= 0, got {sinkhorn_tolerance}.")
        self.epsilon = epsilon
        self.sinkhorn_iterations = sinkhorn_iterations
        self.temperature = temperature
        self.gather_distributed = gather_distributed
        self.sinkhorn_tolerance = sinkhorn_tolerance
        self.sinkhorn_overrelax = sinkhorn_overrelax
        self.last_sinkhorn_iterations = 0

    def allocate(self, scores: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """Surrogate labels q: (N, K) for one view, or (V, N, K) for V views solved together."""
        allocation, self.last_sinkhorn_iterations = sinkhorn(
            scores,
            prior,
            self.epsilon,
            self.sinkhorn_iterations,
            self.gather_distributed,
            self.sinkhorn_tolerance,
            return_iterations=True,
            overrelax=self.sinkhorn_overrelax,
        )
        return allocation

    def forward(self, scores_1: torch.Tensor, scores_2: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        allocation_1, allocation_2 = self.allocate(torch.stack([scores_1, scores_2]), prior)
        return swapped_prediction(scores_1, scores_2, allocation_1, allocation_2, self.temperature)
