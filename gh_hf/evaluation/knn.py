"""Weighted k-nearest-neighbour classifier on frozen features (the InstDisc / SimCLR kNN monitor)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gh_hf.evaluation.linear_probe import default_device


def _check_knn_args(
    train_features: torch.Tensor, train_labels: torch.Tensor, num_classes: int, k: int, temperature: float
) -> None:
    if (
        train_features.ndim != 2
        or train_features.shape[0] != train_labels.shape[0]
        or train_labels.numel() == 0
    ):
        raise ValueError(
            f"train_features must be (N, F) with N = len(train_labels) = {train_labels.shape[0]} >= 1, "
            f"got shape {tuple(train_features.shape)}"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 <= int(train_labels.min()) <= int(train_labels.max()) < num_classes:
        raise ValueError(
            f"train_labels must be in [0, num_classes={num_classes}), "
            f"got range [{int(train_labels.min())}, {int(train_labels.max())}]"
        )


@torch.no_grad()
def knn_scores(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.07,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Class votes (M, C): each of the k most cosine-similar training samples votes exp(sim / T).

    Args:
        train_features: (N, F) features of the labelled bank.
        train_labels: (N,) class ids in [0, num_classes).
        test_features: (M, F) query features.
        num_classes: C.
        k: Neighbours per query (capped at N).
        temperature: T of the vote weights.
        batch_size: Queries per similarity chunk (memory is batch_size x N).
        device: Where to compute; defaults to CUDA when available, else the CPU.

    Returns:
        Votes (M, C) float32 on the CPU.
    """
    _check_knn_args(train_features, train_labels, num_classes, k, temperature)
    device = default_device(device)
    bank = F.normalize(train_features.to(device).float(), dim=1)  # (N, F)
    labels = train_labels.to(device).long()  # (N,)
    k = min(k, bank.shape[0])
    votes = []
    for chunk in test_features.split(batch_size):
        queries = F.normalize(chunk.to(device).float(), dim=1)  # (b, F)
        similarity, neighbours = (queries @ bank.T).topk(k, dim=1)  # (b, k)
        weights = (similarity / temperature).exp()  # (b, k)
        scores = torch.zeros(queries.shape[0], num_classes, device=device)
        votes.append(scores.scatter_add_(1, labels[neighbours], weights).cpu())  # (b, C)
    return torch.cat(votes) if votes else torch.zeros(0, num_classes)


def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.07,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Weighted kNN predictions (M,) int64 on the CPU; a tie goes to the lower class id.

    Cosine similarity between L2-normalised features; each of the k nearest training samples
    adds exp(similarity / temperature) to its class; the class with the most weight wins.
    Arguments as in `knn_scores`.
    """
    scores = knn_scores(
        train_features, train_labels, test_features, num_classes, k, temperature, batch_size, device
    )
    return scores.argmax(dim=1)
