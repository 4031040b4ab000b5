"""The step benchmark's reference: GH's per-step work as the paper's public code runs it.

Written from the algorithm (Zhou et al., NeurIPS 2023) for `step_benchmark` to time gh_hf against;
training never uses it. Its choices are the paper's, on purpose: plain-domain Sinkhorn (no
overflow guard) run for a fixed number of iterations on each view separately, matrix-vector
products on the transposed kernel, and a score-bank update that loops over the samples in Python.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def paper_sinkhorn(
    scores: torch.Tensor, prior: torch.Tensor, epsilon: float = 0.05, iterations: int = 300
) -> torch.Tensor:
    """One view's allocation q = N Q*, all `iterations` run, (N, K) -> (N, K).

    The kernel is exp(S / eps) transposed to (K, N); anchor scalings r (K, 1) and sample
    scalings c (N, 1) alternate, each a matrix product with a column vector.
    """
    kernel = torch.exp(scores / epsilon).t()  # (K, N), a transposed view
    num_anchors, num_samples = kernel.shape
    anchor_mass = (prior / prior.sum()).reshape(num_anchors, 1).float()
    sample_scaling = torch.ones(num_samples, 1, device=scores.device) / num_samples
    for _ in range(iterations):
        anchor_scaling = anchor_mass / (kernel @ sample_scaling)  # (K, 1)
        sample_scaling = (1.0 / num_samples) / (kernel.t() @ anchor_scaling)  # (N, 1)
    return (anchor_scaling * kernel * sample_scaling.t()).t() * num_samples


def paper_gh_loss(
    scores_1: torch.Tensor,
    scores_2: torch.Tensor,
    prior: torch.Tensor,
    epsilon: float = 0.05,
    iterations: int = 300,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Swapped prediction of the two views' allocations, each view solved on its own."""
    allocation_1 = paper_sinkhorn(scores_1, prior, epsilon, iterations)
    allocation_2 = paper_sinkhorn(scores_2, prior, epsilon, iterations)
    term_1 = -torch.mean(torch.sum(allocation_1 * F.log_softmax(scores_2 / temperature, dim=1), dim=1))
    term_2 = -torch.mean(torch.sum(allocation_2 * F.log_softmax(scores_1 / temperature, dim=1), dim=1))
    return term_1 + term_2


@torch.no_grad()
def paper_bank_update(
    bank: torch.Tensor, indices: torch.Tensor, scores: torch.Tensor, momentum: float
) -> None:
    """B_i <- beta B_i + (1 - beta) s_i, one sample at a time (in place on `bank`, (N_train, K))."""
    for position in range(indices.shape[0]):
        index = indices[position]
        bank[index] = momentum * bank[index] + (1.0 - momentum) * scores[position].clone()
