"""A warm-up checkpoint whose GH anchors are rotated onto the clusters of its projections (a pilot).

GH's anchors are a simplex ETF in a fixed, arbitrary orientation. At the GH start the argmax over
them partitions the SimCLR projections at near class-blind purity, while K-means finds much purer
regions in the same projections (`../anchor_alignment/`). This script tests whether GH does better
when it starts from anchors that follow those regions, without touching the trainer:

1. load the `warmup` checkpoint of a run (`gh_hf.training.investigation.load_run`) and score its
   long-tailed split once (eval view): projections z;
2. K-means (K = the run's anchors) on the normalised z; centroids C;
3. rotate the ETF M by the orthogonal Procrustes solution R = argmin ||M R - C|| (R = U V^T from
   the SVD of M^T C). A rotated ETF is still an ETF (its Gram matrix is unchanged); the matching
   of anchors to centroids does not matter, since any permutation of a simplex's vertices is an
   orthogonal map of it;
4. write a copy of the checkpoint with the rotated anchors, and with a score bank recomputed in
   the new frame from the same pass (s_i = normalize(z_i R^T M^T); the kept bank holds scores
   against the old anchors, which would make the first prior refresh read the old partition).

A run forked from the copy (`--resume_from_checkpoint OUTPUT/checkpoints/warmup`) then trains its
GH stage as usual. No label is used except to report purity. The trainer now does the same with
`--anchor_alignment kmeans` (gh_hf/training/anchor_alignment.py; K-means seeded by `--seed`, where
this script takes `--seed`, default 0): forked from the original warm-up with it, seed 0's
known-prior arm logged bitwise the losses of the run forked from this script's copy.

    PYTHONPATH=. python results/fashion_mnist_lt_pilots/aligned_anchors/align_warmup.py \\
        --source outputs/pilots/continue160/simclr_gh_seed0 --output outputs/pilots/aligned_anchors/source
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from gh_hf.training.anchor_alignment import kmeans_centroids, procrustes_rotation
from gh_hf.training.checkpointing import WARMUP_CHECKPOINT, checkpoint_root
from gh_hf.training.investigation import load_run, split_features
from gh_hf.training.prior import anchor_purity


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, required=True, help="a run with checkpoints/warmup/")
    parser.add_argument("--output", type=Path, required=True, help="the new run folder to fork from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rotate",
        choices=("true", "false"),
        default="true",
        help="false: the control, keep the anchors and only recompute the bank from the eval view",
    )
    args = parser.parse_args()

    model, dataset = load_run(args.source, WARMUP_CHECKPOINT)
    _, projections, labels = split_features(model, dataset)
    anchors = model.anchors.double().cpu()
    num_anchors = anchors.shape[0]
    centroids, clusters = kmeans_centroids(projections, num_anchors, args.seed)
    rotation = (
        procrustes_rotation(anchors, centroids) if args.rotate == "true" else torch.eye(anchors.shape[1])
    )
    rotated = (anchors @ rotation.double()).float()
    torch.testing.assert_close(rotated.double() @ rotated.double().T, anchors @ anchors.T, atol=1e-5, rtol=0)
    unit = torch.nn.functional.normalize(projections.double(), dim=1)
    new_scores = torch.nn.functional.normalize(unit.float() @ rotated.T, dim=1)

    source = checkpoint_root(args.source) / WARMUP_CHECKPOINT
    target = checkpoint_root(args.output) / WARMUP_CHECKPOINT
    if target.exists():
        raise SystemExit(f"--output: {target} exists; remove it first.")
    shutil.copytree(source, target)
    shutil.copy(args.source / "training_args.json", args.output / "training_args.json")
    weights = load_file(str(source / "model.safetensors"))
    weights["anchors"] = rotated.to(weights["anchors"].dtype).contiguous()
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    (bank_file,) = source.glob("score_bank-shard*-of-00001.safetensors")  # written by one process
    bank = load_file(str(bank_file))
    old_bank_argmax = bank["scores"].argmax(1)
    bank["scores"] = new_scores.to(bank["scores"].dtype).contiguous()
    bank["seen"] = torch.ones_like(bank["seen"])
    save_file(bank, str(target / bank_file.name), metadata={"num_samples": str(len(labels))})

    old_argmax = (unit @ anchors.T).argmax(1)
    report = {
        "source": str(args.source / "checkpoints" / WARMUP_CHECKPOINT),
        "images": len(labels),
        "class_blind_purity": round(torch.bincount(labels).max().item() / len(labels), 4),
        "anchor_purity_before": round(anchor_purity(old_argmax, labels, num_anchors)[1], 4),
        "anchor_purity_after": round(anchor_purity(new_scores.argmax(1), labels, num_anchors)[1], 4),
        "kmeans_purity": round(anchor_purity(clusters, labels, num_anchors)[1], 4),
        "occupancy_before": torch.bincount(old_argmax, minlength=num_anchors).tolist(),
        "occupancy_after": torch.bincount(new_scores.argmax(1), minlength=num_anchors).tolist(),
        "kmeans_cluster_sizes": torch.bincount(clusters, minlength=num_anchors).tolist(),
        # The bank's rows are sample indices of the same split: its training-view argmax should agree
        # with the eval-view argmax of the same anchors far above chance (1/K).
        "kept_bank_agrees_with_eval_view": round((old_bank_argmax == old_argmax).double().mean().item(), 4),
        "rotated": args.rotate == "true",
        "residual_to_centroids": round(torch.linalg.norm(rotated.double() - centroids).item(), 4),
    }
    (args.output / "alignment.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
