"""`--anchor_alignment kmeans`: turn GH's anchor frame onto the clusters of the projections at the GH start.

GH's K anchors are a simplex ETF in a fixed, arbitrary orientation (DESIGN.md 1). When GH starts
after an SSL warm-up, the argmax over them can cut the projections across their clusters: on
Fashion-MNIST-LT the anchors' partition had purity 0.45-0.57 where K-means found 0.67-0.73 in the
same projections (`results/fashion_mnist_lt_pilots/anchor_alignment/`), and GH then pulls the
projector into those mixed cells. This option rotates the ETF, once, by the orthogonal Procrustes
solution onto the K-means centroids of the split's projections. A rotated ETF is still an ETF
(the Gram matrix is unchanged, so GH's geometry is the paper's); only its orientation follows
the data. Which anchor meets which centroid does not matter: any permutation of a simplex's
vertices is an orthogonal map of the simplex, so every matching reaches the same optimum. No
label is used. Not in the paper; off by default.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ANCHOR_ALIGNMENTS = ("none", "kmeans")


def procrustes_rotation(anchors: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The orthogonal R (d, d) that minimises ||anchors @ R - targets||_F.

    Args:
        anchors: (K, d) the current anchors.
        targets: (K, d) where to put them, row k for anchor k.

    Returns:
        R in float64 (U V^T of the SVD of anchors^T targets).
    """
    u, _, vh = torch.linalg.svd(anchors.double().T @ targets.double())
    return u @ vh


def kmeans_centroids(
    projections: torch.Tensor, num_clusters: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm K-means centroids of the L2-normalised projections (scikit-learn, 10 restarts).

    Args:
        projections: (N, d) projector outputs.
        num_clusters: K.
        seed: K-means' random state.

    Returns:
        (centroids (K, d) float64, clusters (N,) int64), on the CPU.
    """
    from sklearn.cluster import KMeans

    unit = F.normalize(projections.detach().double().cpu(), dim=1).numpy()
    kmeans = KMeans(num_clusters, n_init=10, random_state=seed).fit(unit)
    centroids = F.normalize(torch.from_numpy(kmeans.cluster_centers_), dim=1)
    return centroids, torch.from_numpy(kmeans.labels_).long()


def aligned_anchors(
    anchors: torch.Tensor, projections: torch.Tensor, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The anchors rotated onto the K-means centroids of `projections`.

    Args:
        anchors: (K, d) the ETF.
        projections: (N, d) projector outputs of the training split.
        seed: K-means' random state.

    Returns:
        (the rotated anchors (K, d), in `anchors`' dtype and device; each sample's K-means cluster (N,)).
    """
    centroids, clusters = kmeans_centroids(projections, anchors.shape[0], seed)
    rotated = anchors.double().cpu() @ procrustes_rotation(anchors, centroids)
    return rotated.to(anchors.device, anchors.dtype), clusters
