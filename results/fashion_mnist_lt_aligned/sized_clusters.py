"""Do regions sized by the known class frequencies follow the classes better than K-means' regions?

At a run's GH start (its `checkpoints/warmup`), one eval pass over the split, then partitions of the
L2-normalised projections into K regions, each scored against the labels (purity, adjusted mutual
information, which classes own a region) and by the clustering objective (mean cosine of each
projection to its region's mean direction):
- the anchors' argmax (what GH starts from without alignment);
- K-means (what `--anchor_alignment kmeans` rotates the anchors onto);
- "sized" K-means: the assignment step is an optimal transport whose region masses are the known
  prior (largest mass to the largest region, re-ranked each iteration; GH's own Sinkhorn,
  gh_hf.losses.sinkhorn, at temperature 0.05), i.e. the kind of partition GH with the known
  prior asks for; started from K-means and from RESTARTS k-means++ seeds (the best objective kept);
- two references that read the labels (a search started from the class means, not a method).
Labels only score the partitions. Usage (repository root), e.g.:
  python results/fashion_mnist_lt_aligned/sized_clusters.py \
      outputs/experiment/simclr_gh_known_aligned_seed0 outputs/experiment/class_prior_seed0.json
"""

import json
import sys

import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.metrics import adjusted_mutual_info_score

from gh_hf.losses.sinkhorn import sinkhorn
from gh_hf.training.anchor_alignment import kmeans_centroids
from gh_hf.training.investigation import anchor_ownership, load_run, split_features
from gh_hf.training.prior import anchor_class_counts, purity_of_counts

RESTARTS = 20
EPSILON = 0.05


def sized_kmeans(z, prior, centroids, clusters, iterations=50):
    """K-means whose assignment is GH's Sinkhorn allocation with column masses `prior` (sorted,
    descending): gh_hf.losses.sinkhorn, at temperature EPSILON."""
    k = len(prior)
    for _ in range(iterations):
        mass = torch.empty(k, dtype=torch.float64)
        mass[torch.bincount(clusters, minlength=k).argsort(descending=True)] = prior
        new = sinkhorn(z @ centroids.T, mass, epsilon=EPSILON).argmax(1)
        means = [z[new == j].mean(0) if (new == j).any() else centroids[j] for j in range(k)]
        centroids = F.normalize(torch.stack(means), dim=1)
        if torch.equal(new, clusters):
            break
        clusters = new
    return clusters


def objective(z, clusters, k):
    """Mean cosine of each point to its region's mean direction (what K-means on the sphere raises)."""
    centroids = F.normalize(torch.stack([z[clusters == j].mean(0) for j in range(k)]), dim=1)
    return float((z * centroids[clusters]).sum(1).mean())


def report(name, z, clusters, labels, prior):
    k = len(prior)
    counts = anchor_class_counts(clusters, labels, k)  # (K, C)
    sizes = counts.sum(1)
    _, purity = purity_of_counts(counts)
    tv = 0.5 * float((sizes.sort(descending=True).values / len(z) - prior).abs().sum())
    ami = adjusted_mutual_info_score(labels.numpy(), clusters.numpy())
    owning = anchor_ownership(counts.T)["classes_owning_by_group"]
    print(f"{name}: objective {objective(z, clusters, k):.4f}, purity {purity:.3f}, AMI {ami:.3f}, "
          f"TV(sizes, classes) {tv:.3f}, classes owning a region {owning}")  # fmt: skip
    print(f"  sizes {sorted(sizes.tolist(), reverse=True)}", flush=True)


def main(run_dir, prior_file):
    model, dataset = load_run(run_dir, checkpoint="warmup")
    _, projections, labels = split_features(model, dataset)
    z = F.normalize(projections.double(), dim=1)
    k = model.config.num_anchors
    prior = torch.tensor(sorted(json.load(open(prior_file)), reverse=True), dtype=torch.float64)
    prior = prior / prior.sum()
    print(f"{run_dir}, GH start: N {len(z)}, K {k}")
    with torch.no_grad():
        scores = torch.cat([model.anchor_scores(chunk) for chunk in projections.split(1024)])
    report("anchors", z, scores.argmax(1), labels, prior)
    centroids, clusters = kmeans_centroids(projections, k, 0)
    report("K-means", z, clusters, labels, prior)
    report("sized K-means from K-means", z, sized_kmeans(z, prior, centroids, clusters), labels, prior)
    best = None
    for seed in range(RESTARTS):
        init, _ = kmeans_plusplus(z.numpy(), k, random_state=seed)
        start = F.normalize(torch.from_numpy(init), dim=1)
        found = sized_kmeans(z, prior, start, (z @ start.T).argmax(1))
        if best is None or objective(z, found, k) > objective(z, best, k):
            best = found
    report(f"sized K-means, best of {RESTARTS} k-means++ starts", z, best, labels, prior)
    class_means = F.normalize(torch.stack([z[labels == c].mean(0) for c in range(k)]), dim=1)
    from_classes = sized_kmeans(z, prior, class_means, labels)
    report("reference: sized K-means from the class means", z, from_classes, labels, prior)
    lloyd = KMeans(k, init=class_means.numpy(), n_init=1).fit(z.numpy())
    lloyd_clusters = torch.from_numpy(lloyd.labels_).long()
    report("reference: K-means from the class means", z, lloyd_clusters, labels, prior)


if __name__ == "__main__":
    main(*sys.argv[1:3])
