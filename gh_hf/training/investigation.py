"""Which anchors the *current* model gives each training image: occupancy and purity, from one forward pass.

The score bank lags behind the model (it is a moving average over past epochs); this module
scores the whole pretraining split again with the eval transform, so its figures describe the
model as it is. `results/fashion_mnist_lt/investigate_prior.py` calls it; training uses only
`split_features`, for `--anchor_alignment kmeans`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from safetensors.torch import load_file

from gh_hf.data import build_eval_transform, with_eval_transform
from gh_hf.modeling_gh_pretraining import GHForPreTraining
from gh_hf.training.anchor_alignment import kmeans_centroids
from gh_hf.training.arguments import DataArguments, ModelArguments
from gh_hf.training.checkpointing import checkpoint_root, list_checkpoints
from gh_hf.training.data import load_long_tailed_train
from gh_hf.training.prior import anchor_purity, class_frequencies, prior_entropy, total_variation


@torch.no_grad()
def split_features(
    model: GHForPreTraining, dataset: Dataset, batch_size: int = 256, num_workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each image's pooled backbone features and projection (eval view, eval mode, no gradient).

    Args:
        model: The pretraining model (encoder, projector and anchors).
        dataset: A split with `image` and `label` columns, e.g. `load_long_tailed_train(...)`.
        batch_size: Images per forward pass.
        num_workers: DataLoader workers.

    Returns:
        (features (N, F), projections (N, d), labels (N,)) in dataset order, on the CPU; the
        projections are the projector's output, before GH's normalisation.
    """
    from gh_hf.evaluation.features import extract_features  # the evaluation stack, only when used

    config = model.config
    transform = build_eval_transform(config.image_size, config.in_chans, config.image_mean, config.image_std)
    was_training = model.training
    model.eval()
    features, labels = extract_features(
        model.encoder, with_eval_transform(dataset, transform), batch_size, num_workers, show_progress=False
    )  # (N, F) pooled backbone features
    device = next(model.parameters()).device
    projections = torch.cat([model.projector(chunk.to(device)).cpu() for chunk in features.split(batch_size)])
    model.train(was_training)
    return features, projections, labels


@torch.no_grad()
def anchor_assignments(
    model: GHForPreTraining, dataset: Dataset, batch_size: int = 256, num_workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """argmax_k of each image's anchor scores (eval view, eval mode, no gradient), and its label.

    Args: as `split_features`.

    Returns:
        (anchors (N,), labels (N,)), int64, in dataset order, on the CPU.
    """
    _, projections, labels = split_features(model, dataset, batch_size, num_workers)
    device = next(model.parameters()).device
    anchors = torch.cat(
        [model.anchor_scores(chunk.to(device)).argmax(1).cpu() for chunk in projections.split(batch_size)]
    )
    return anchors, labels


def cluster_purity(vectors: torch.Tensor, labels: torch.Tensor, num_clusters: int, seed: int = 0) -> float:
    """Anchor purity of the best partition k-means finds in `vectors` (L2-normalised first).

    What fixed anchors could at best read from a feature space without labels: when this is high
    and the anchors' purity (`anchor_assignments`) is low, the classes are there but the anchors
    do not follow them.

    Args:
        vectors: (N, D) features or projections.
        labels: (N,) class ids (>= 0), used only to score the partition.
        num_clusters: Clusters, e.g. the run's K.
        seed: k-means' seed (10 restarts, the lowest inertia kept).

    Returns:
        The sample-weighted share of each cluster's majority class (`anchor_purity`'s mean).
    """
    _, clusters = kmeans_centroids(vectors, num_clusters, seed)
    return anchor_purity(clusters, labels, num_clusters)[1]


def anchor_ownership(table: torch.Tensor) -> dict[str, Any]:
    """Which classes own anchors, from a (C, K) table of images per class and anchor.

    An anchor's owner is its majority class (ties: the lower class id; None when it is empty). GH
    claims the tail keeps its own region of the hypersphere; here that reads as tail classes owning
    anchors, against the head spreading over most of them.

    Returns:
        `majority_class_of_anchor` (K,), `classes_owning_an_anchor` (sorted class ids) and, with the
        classes grouped into Many / Medium / Few by their counts in the table (thirds, as the
        benchmark groups them), `anchors_owned_by_group` and `classes_owning_by_group` ("k/n": k of
        the group's n classes own at least one anchor).
    """
    from gh_hf.evaluation.long_tailed_accuracy.long_tailed_accuracy import class_groups

    occupancy = table.sum(0)
    owners = [int(table[:, k].argmax()) if occupancy[k] else None for k in range(table.shape[1])]
    owning = sorted({owner for owner in owners if owner is not None})
    groups = class_groups(table.sum(1).tolist())
    return {
        "majority_class_of_anchor": owners,
        "classes_owning_an_anchor": owning,
        "anchors_owned_by_group": {
            name: sum(owner in ids for owner in owners) for name, ids in groups.items()
        },
        "classes_owning_by_group": {
            name: f"{len(set(ids) & set(owning))}/{len(ids)}" for name, ids in groups.items()
        },
    }


def investigate_anchors(
    model: GHForPreTraining, dataset: Dataset, batch_size: int = 256, num_workers: int = 0
) -> dict[str, Any]:
    """Anchor occupancy and purity of `model` on `dataset`, against the class frequencies.

    Returns:
        A JSON-ready dict: `anchor_occupancy`, `anchor_purity` (per anchor, None when empty),
        `anchor_purity_mean` (sample-weighted), `class_counts` (images per class of the split),
        `images_per_class_and_anchor` (C, K),
        `anchor_ownership`'s entries, `anchors_holding_10pct_of_class` (per class), the sorted
        estimate (occupancy shares) and
        true class frequencies with their entropies and total-variation distance, and
        `prior_sorted`, the prior the model last trained with (its `class_prior` buffer).
    """
    anchors, labels = anchor_assignments(model, dataset, batch_size, num_workers)
    num_anchors, num_classes = model.config.num_anchors, int(labels.max()) + 1
    table = torch.zeros(num_classes, num_anchors, dtype=torch.long)  # (C, K) images per class and anchor
    table.index_put_((labels, anchors), torch.ones_like(labels), accumulate=True)
    occupancy = table.sum(0)
    estimate = (occupancy.double() / occupancy.sum()).sort(descending=True).values
    true = class_frequencies(labels)
    per_anchor, mean = anchor_purity(anchors, labels, num_anchors)
    return {
        "anchor_occupancy": occupancy.tolist(),
        "anchor_purity": per_anchor,
        "anchor_purity_mean": round(mean, 4),
        "class_counts": table.sum(1).tolist(),
        "images_per_class_and_anchor": table.tolist(),
        **anchor_ownership(table),
        "anchors_holding_10pct_of_class": [int((row > 0.1 * row.sum()).sum()) for row in table],
        "estimate_sorted": [round(float(p), 4) for p in estimate],
        "class_frequencies_sorted": [round(float(p), 4) for p in true],
        "estimate_entropy": round(prior_entropy(estimate), 4),
        "true_entropy": round(prior_entropy(true), 4),
        "estimate_tv_to_classes": round(total_variation(estimate, true), 4),
        "prior_sorted": [round(float(p), 4) for p in model.class_prior.sort(descending=True).values],
    }


def load_run(run_dir: str | Path, checkpoint: str | None = None) -> tuple[GHForPreTraining, Dataset]:
    """The model of one of a run's checkpoints and the run's long-tailed split (from training_args.json).

    Args:
        run_dir: A pretraining run's `output_dir`.
        checkpoint: The name of a folder under `checkpoints/` ("warmup" for the state kept when the
            warm-up ended, "step_N"), or None for the latest `step_N`.
    """
    from gh_hf.training.trainer import build_config  # the trainer imports this package's prior module

    run_dir = Path(run_dir)
    if checkpoint is None:
        checkpoints = list_checkpoints(run_dir)
        if not checkpoints:
            raise ValueError(
                f"run_dir={str(run_dir)!r} has no checkpoint (checkpoints/step_N/): nothing to load."
            )
        path = checkpoints[-1]
    else:
        path = checkpoint_root(run_dir) / checkpoint
        if not (path / "model.safetensors").is_file():
            root = checkpoint_root(run_dir)
            found = sorted(p.name for p in root.glob("*") if (p / "model.safetensors").is_file()) or "none"
            raise ValueError(
                f"checkpoint={checkpoint!r} is not a checkpoint of {str(run_dir)!r}: it has {found}."
            )
    saved = json.loads((run_dir / "training_args.json").read_text())
    data_args, model_args = DataArguments(**saved["data"]), ModelArguments(**saved["model"])
    seed = int(saved["training"]["seed"])
    model = GHForPreTraining(build_config(data_args, model_args, seed))
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model, load_long_tailed_train(data_args, seed)


def investigate_run(
    run_dir: str | Path, batch_size: int = 256, checkpoint: str | None = None
) -> dict[str, Any]:
    """`investigate_anchors` for a checkpoint of the run in `run_dir` (`load_run`; the latest by default)."""
    model, dataset = load_run(run_dir, checkpoint)
    return investigate_anchors(model, dataset, batch_size)
