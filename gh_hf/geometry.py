"""The geometric uniform structure (GUS): a simplex equiangular tight frame of anchors."""

from __future__ import annotations

import math

import torch


def simplex_etf(num_anchors: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Builds K unit vectors in R^d with pairwise cosine exactly -1/(K-1).

    M = sqrt(K/(K-1)) (I_K - 11^T/K) U, where U (K x d) has orthonormal rows drawn from a seeded
    random rotation. The rows have unit norm, sum to zero and are maximally and equally separated.

    Args:
        num_anchors: K, the number of anchors (>= 2).
        dim: d, the embedding dimension; needs K <= d + 1.
        seed: seed of the random rotation; the same seed gives the same anchors on any machine.

    Returns:
        Tensor of shape (K, d), float32.

    Raises:
        ValueError: if K < 2, d < 1, or K > d + 1 (no exact simplex ETF exists then).
    """
    if num_anchors < 2:
        raise ValueError(f"num_anchors must be >= 2, got {num_anchors}.")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}.")
    if num_anchors > dim + 1:
        raise ValueError(
            f"A simplex ETF of num_anchors={num_anchors} anchors needs dim >= num_anchors - 1 = "
            f"{num_anchors - 1}, got dim={dim}. Lower num_anchors or raise the projection dimension."
        )
    generator = torch.Generator().manual_seed(seed)
    # Orthonormal rows U (K x d) for K <= d; for K = d + 1 the centred simplex only spans K-1
    # dimensions, so an orthonormal (K-1)-frame suffices after centring in K-1 coordinates.
    frame_rank = min(num_anchors, dim)
    gaussian = torch.randn(dim, frame_rank, generator=generator, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(gaussian)  # (d, r) with orthonormal columns
    centring = torch.eye(num_anchors, dtype=torch.float64) - 1.0 / num_anchors
    if frame_rank == num_anchors:
        basis = centring  # (K, K)
    else:
        # Express the centred simplex in an orthonormal basis of the K-1 dim subspace 1^perp.
        eigvals, eigvecs = torch.linalg.eigh(centring)
        basis = centring @ eigvecs[:, eigvals > 0.5]  # (K, K-1)
    anchors = math.sqrt(num_anchors / (num_anchors - 1)) * basis @ rotation.T  # (K, d)
    return anchors.to(torch.float32)
