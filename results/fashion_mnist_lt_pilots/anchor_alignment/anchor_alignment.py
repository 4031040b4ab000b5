"""Are the classes in the projector's space when GH starts, and do GH's fixed anchors read them?

For each checkpoint: the anchor purity of GH's argmax over its K fixed anchors (what the prior
and the allocation see), the purity of K-means partitions of the same projections and of the
backbone features (what any K regions of that space could at best give without labels), and the
purity of the argmax over randomly rotated copies of the anchor frame (whether another placement
of the same fixed frame would follow the classes). Purity as in `gh_hf.training.prior`: the
sample-weighted share of each region's majority class; a class-blind partition scores the head
class's share. Labels are used only to score.

    PYTHONPATH=. python results/fashion_mnist_lt_pilots/anchor_alignment/anchor_alignment.py \\
        RUN_DIR[:CHECKPOINT] ... --output results/fashion_mnist_lt_pilots/anchor_alignment/results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from gh_hf.training.investigation import cluster_purity, load_run, split_features
from gh_hf.training.prior import anchor_purity


def rotated_anchor_purities(
    projections: torch.Tensor, anchors: torch.Tensor, labels: torch.Tensor, rotations: int, seed: int
) -> list[float]:
    """Purity of argmax_k <z/|z|, Q a_k> for `rotations` random orthogonal Q (Haar, via QR)."""
    generator = torch.Generator().manual_seed(seed)
    unit = torch.nn.functional.normalize(projections.double(), dim=1)
    dim = anchors.shape[1]
    purities = []
    for _ in range(rotations):
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))  # Haar-distributed
        regions = (unit @ (anchors.double() @ q.T).T).argmax(1)
        purities.append(anchor_purity(regions, labels, anchors.shape[0])[1])
    return purities


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "runs", nargs="+", help="RUN_DIR or RUN_DIR:CHECKPOINT (e.g. warmup; default the latest)"
    )
    parser.add_argument("--rotations", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    results = {}
    for spec in args.runs:
        run_dir, _, checkpoint = spec.partition(":")
        model, dataset = load_run(run_dir, checkpoint or None)
        features, projections, labels = split_features(model, dataset)
        num_anchors = model.config.num_anchors
        scores = model.anchor_scores(projections)
        rotated = rotated_anchor_purities(projections, model.anchors.cpu(), labels, args.rotations, args.seed)
        head_share = torch.bincount(labels).max().item() / len(labels)
        kmeans_projections = cluster_purity(projections, labels, num_anchors, args.seed)
        results[spec] = {
            "images": len(labels),
            "class_blind_purity": round(head_share, 4),
            "anchor_purity": round(anchor_purity(scores.argmax(1), labels, num_anchors)[1], 4),
            "anchors_occupied": int((torch.bincount(scores.argmax(1), minlength=num_anchors) > 0).sum()),
            "kmeans_purity_projections": round(kmeans_projections, 4),
            "kmeans_purity_features": round(cluster_purity(features, labels, num_anchors, args.seed), 4),
            "rotated_anchor_purity_mean": round(sum(rotated) / len(rotated), 4),
            "rotated_anchor_purity_max": round(max(rotated), 4),
        }
        print(spec, results[spec], flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
