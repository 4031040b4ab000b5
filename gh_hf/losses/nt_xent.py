"""NT-Xent (SimCLR) and its focal variant over the 2N views of a (global) batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gh_hf import dist


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}.")


def _positive_log_probs(z1: torch.Tensor, z2: torch.Tensor, temperature: float, gather_distributed: bool):
    """log p(positive) for every local view, negatives = every other view of the global batch.

    Returns a tensor of shape (2B,): local view-1 rows first, then local view-2 rows.
    """
    batch_size = z1.shape[0]
    local = F.normalize(torch.cat([z1, z2], dim=0), dim=-1)  # (2B, d)
    if gather_distributed and dist.is_distributed():
        all_1, all_2 = dist.gather(F.normalize(z1, dim=-1)), dist.gather(F.normalize(z2, dim=-1))
        offset = dist.rank() * batch_size
    else:
        all_1, all_2 = local[:batch_size], local[batch_size:]
        offset = 0
    total = all_1.shape[0]
    candidates = torch.cat([all_1, all_2], dim=0)  # (2N, d)
    logits = local @ candidates.T / temperature  # (2B, 2N)
    rows = torch.arange(2 * batch_size, device=z1.device)
    local_ids = torch.arange(batch_size, device=z1.device) + offset
    self_cols = torch.cat([local_ids, local_ids + total])  # each view's own column
    positive_cols = torch.cat([local_ids + total, local_ids])  # the other view of the same image
    logits = logits.float().index_put((rows, self_cols), torch.tensor(float("-inf"), device=z1.device))
    log_probs = logits.log_softmax(dim=-1)
    return log_probs[rows, positive_cols]


def _reduce(per_view: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_view.mean()
    if reduction == "per_sample":  # (2B,) -> (B,): the mean of each image's two views
        return per_view.view(2, -1).mean(dim=0)
    raise ValueError(f"reduction must be 'mean' or 'per_sample', got {reduction!r}.")


def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.2,
    gather_distributed: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy, averaged over all views.

    Args:
        z1: (B, d) projections of the first views.
        z2: (B, d) projections of the second views.
        temperature: softmax temperature tau (> 0).
        gather_distributed: use the views of all processes as negatives (differentiable gather).
            The returned value is the mean over this process's 2B views; its mean over processes
            is the single-process loss on the global batch.
        reduction: "mean" (a scalar) or "per_sample" ((B,), each image's two views averaged).

    Returns:
        The loss.
    """
    _check_positive("temperature", temperature)
    return _reduce(-_positive_log_probs(z1, z2, temperature, gather_distributed), reduction)


def focal_nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.2,
    gamma: float = 2.0,
    gather_distributed: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """NT-Xent with focal modulation: per view (1 - p)^gamma * (-log p), p = p(positive)."""
    _check_positive("temperature", temperature)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}.")
    log_p = _positive_log_probs(z1, z2, temperature, gather_distributed)
    return _reduce(-((1 - log_p.exp()) ** gamma) * log_p, reduction)
