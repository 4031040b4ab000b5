"""Sinkhorn-Knopp surrogate label allocation, in float32, safe for small epsilon and bf16 inputs."""

from __future__ import annotations

import math

import torch

from gh_hf import dist

# exp(-50) ~ 2e-22: a kernel whose entries span at most e^50 stays far from float32 underflow
# (1e-38), so the scaling vectors stay finite in the plain (exp) domain.
_EXP_DOMAIN_RANGE = 50.0
_CHECK_EVERY = 10


@torch.no_grad()
def sinkhorn(
    scores: torch.Tensor,
    prior: torch.Tensor,
    epsilon: float = 0.05,
    num_iters: int = 300,
    gather_distributed: bool = False,
    tolerance: float = 1e-6,
) -> torch.Tensor:
    """Entropic optimal transport from samples (uniform) to anchors (marginal `prior`).

    Solves Q* = argmin_{Q >= 0, Q 1 = 1/N, Q^T 1 = prior} <Q, -S> - eps H(Q) and returns
    q = N Q*: every row sums to 1 and the column masses follow `prior`.

    Q* = diag(u) exp(S/eps) diag(v). Each row of S/eps is shifted by its maximum (absorbed in u).
    When the shifted kernel spans at most e^50 (always for scores in [-1, 1] and eps >= 0.04),
    the scalings run in the plain domain, two matrix-vector products per iteration; otherwise
    (small eps) in the log domain, where nothing can overflow. Both compute in float32.

    Args:
        scores: (N, K) anchor scores S. Any float dtype.
        prior: (K,) non-negative anchor marginal pi; normalised here.
        epsilon: entropic regularisation (> 0).
        num_iters: the most Sinkhorn iterations (>= 1); each is one column and one row scaling.
        gather_distributed: solve over the scores of all processes (the global batch) and return
            this process's rows.
        tolerance: stop early once every column's mass is within `tolerance` of `prior` (checked
            every 10 iterations; rows are exact after each iteration). 0 runs all `num_iters`.
            Typical batches converge to 1e-6 in 10-150 iterations.

    Returns:
        (N_local, K) float32 allocation, no gradient.
    """
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}.")
    if num_iters < 1:
        raise ValueError(f"num_iters must be >= 1, got {num_iters}.")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}.")
    if prior.ndim != 1 or prior.shape[0] != scores.shape[-1]:
        raise ValueError(f"prior must have shape ({scores.shape[-1]},), got {tuple(prior.shape)}.")
    local_batch = scores.shape[0]
    if gather_distributed:
        scores = dist.gather(scores.detach())
    with torch.autocast(device_type=scores.device.type, enabled=False):
        prior = prior.to(device=scores.device, dtype=torch.float32).clamp_min(0)
        if not prior.sum() > 0:
            raise ValueError("prior must have positive total mass.")
        prior = prior / prior.sum()
        log_kernel = scores.float() / epsilon
        log_kernel = log_kernel - log_kernel.max(dim=1, keepdim=True).values  # (N, K), row max 0
        if -log_kernel.min() <= _EXP_DOMAIN_RANGE:
            allocation = _sinkhorn_exp(log_kernel.exp(), prior, num_iters, tolerance)
        else:
            allocation = _sinkhorn_log(log_kernel, prior, num_iters, tolerance)
    if gather_distributed:
        allocation = dist.local_slice(allocation, local_batch)
    return allocation


def _sinkhorn_exp(kernel: torch.Tensor, prior: torch.Tensor, num_iters: int, tolerance: float) -> torch.Tensor:
    num_samples = kernel.shape[0]
    u = torch.full((num_samples,), 1.0 / num_samples, device=kernel.device)
    for iteration in range(1, num_iters + 1):
        v = prior / (kernel.T @ u)  # (K,)
        u = (1.0 / num_samples) / (kernel @ v)  # (N,)
        if tolerance and iteration % _CHECK_EVERY == 0 and (v * (kernel.T @ u) - prior).abs().max() <= tolerance:
            break
    return num_samples * u[:, None] * kernel * v[None, :]


def _sinkhorn_log(log_kernel: torch.Tensor, prior: torch.Tensor, num_iters: int, tolerance: float) -> torch.Tensor:
    num_samples = log_kernel.shape[0]
    log_prior = prior.log()  # -inf where the prior is 0
    log_row = -math.log(num_samples)
    log_u = torch.full((num_samples,), log_row, device=log_kernel.device)
    for iteration in range(1, num_iters + 1):
        log_v = log_prior - torch.logsumexp(log_kernel + log_u[:, None], dim=0)  # (K,)
        log_u = log_row - torch.logsumexp(log_kernel + log_v[None, :], dim=1)  # (N,)
        if tolerance and iteration % _CHECK_EVERY == 0:
            column_mass = (log_kernel + log_u[:, None] + log_v[None, :]).exp().sum(dim=0)
            if (column_mass - prior).abs().max() <= tolerance:
                break
    return (log_kernel + log_u[:, None] + log_v[None, :] + math.log(num_samples)).exp()
