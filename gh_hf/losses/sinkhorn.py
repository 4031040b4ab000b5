"""Sinkhorn-Knopp surrogate label allocation, in the log domain and float32."""

from __future__ import annotations

import math

import torch

from gh_hf import dist


@torch.no_grad()
def sinkhorn(
    scores: torch.Tensor,
    prior: torch.Tensor,
    epsilon: float = 0.05,
    num_iters: int = 300,
    gather_distributed: bool = False,
) -> torch.Tensor:
    """Entropic optimal transport from samples (uniform) to anchors (marginal `prior`).

    Solves Q* = argmin_{Q >= 0, Q 1 = 1/N, Q^T 1 = prior} <Q, -S> - eps H(Q) and returns
    q = N Q*: every row sums to 1 and the column masses follow `prior`.

    Args:
        scores: (N, K) anchor scores S. Any float dtype; computed in float32.
        prior: (K,) non-negative anchor marginal pi; normalised here.
        epsilon: entropic regularisation (> 0).
        num_iters: Sinkhorn iterations (>= 1); each is one column and one row scaling.
        gather_distributed: solve over the scores of all processes (the global batch) and return
            this process's rows.

    Returns:
        (N_local, K) float32 allocation, no gradient.
    """
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}.")
    if num_iters < 1:
        raise ValueError(f"num_iters must be >= 1, got {num_iters}.")
    if prior.ndim != 1 or prior.shape[0] != scores.shape[-1]:
        raise ValueError(f"prior must have shape ({scores.shape[-1]},), got {tuple(prior.shape)}.")
    local_batch = scores.shape[0]
    if gather_distributed:
        scores = dist.gather(scores.detach())
    with torch.autocast(device_type=scores.device.type, enabled=False):
        log_kernel = scores.float() / epsilon  # (N, K)
        prior = prior.to(device=scores.device, dtype=torch.float32).clamp_min(0)
        if not prior.sum() > 0:
            raise ValueError("prior must have positive total mass.")
        log_prior = (prior / prior.sum()).log()  # (K,), -inf where the prior is 0
        num_samples = log_kernel.shape[0]
        log_row = torch.full((num_samples,), -math.log(num_samples), device=scores.device)
        log_u = torch.zeros_like(log_row)
        log_v = torch.zeros_like(log_prior)
        for _ in range(num_iters):
            log_v = log_prior - torch.logsumexp(log_kernel + log_u[:, None], dim=0)
            log_u = log_row - torch.logsumexp(log_kernel + log_v[None, :], dim=1)
        allocation = (log_kernel + log_u[:, None] + log_v[None, :] + math.log(num_samples)).exp()
    if gather_distributed:
        allocation = dist.local_slice(allocation, local_batch)
    return allocation
