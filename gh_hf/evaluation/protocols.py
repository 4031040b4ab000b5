"""Evaluation protocols by name ("linear", "knn", "fewshot<N>") and `evaluate_encoder`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch import nn

from gh_hf.evaluation.features import encoder_of, extract_features
from gh_hf.evaluation.knn import knn_predict
from gh_hf.evaluation.linear_probe import linear_probe
from gh_hf.evaluation.long_tailed_accuracy.long_tailed_accuracy import GROUPINGS, long_tailed_accuracy

PROTOCOLS = ("linear", "knn", "fewshot100", "fewshot50")
_FEW_SHOT = re.compile(r"fewshot(\d+)")


@dataclass
class ProtocolSettings:
    """Hyper-parameters of the probes (defaults: DESIGN.md section 5, the paper's protocol).

    Attributes:
        linear_epochs, linear_lr, linear_final_lr, linear_weight_decay, linear_batch_size:
            the linear (and few-shot) probe's Adam schedule, see `linear_probe`.
        feature_norm: feature normalisation of the probe: "standardize", "l2" or "none".
        knn_k, knn_temperature: neighbours and vote temperature of the kNN classifier.
        seed: seed of the probe's shuffles and of the few-shot subsets.
    """

    linear_epochs: int = 500
    linear_lr: float = 1e-2
    linear_final_lr: float = 1e-6
    linear_weight_decay: float = 5e-6
    linear_batch_size: int = 1000
    feature_norm: str = "standardize"
    knn_k: int = 200
    knn_temperature: float = 0.07
    seed: int = 0

    def for_protocol(self, name: str) -> dict[str, Any]:
        """The settings `name` uses (what results.json records next to its metrics)."""
        if name == "knn":
            return {"protocol": name, "k": self.knn_k, "temperature": self.knn_temperature}
        probe = {key: value for key, value in asdict(self).items() if not key.startswith("knn_")}
        shots = few_shot_count(name)
        return {"protocol": name, **probe, **({"shots_per_class": shots} if shots else {})}


def few_shot_count(name: str) -> int | None:
    """N for a protocol named "fewshot<N>", else None."""
    match = _FEW_SHOT.fullmatch(name)
    return int(match.group(1)) if match else None


def parse_protocols(protocols: str | Sequence[str]) -> list[str]:
    """Protocol names from "linear,knn,fewshot100" or a list; each must be known.

    Raises:
        ValueError: naming the unknown protocol and the allowed ones.
    """
    names = [name.strip() for name in protocols.split(",")] if isinstance(protocols, str) else list(protocols)
    names = [name for name in names if name]
    if not names:
        raise ValueError(f"protocols must name at least one of {list(PROTOCOLS)}, got {protocols!r}")
    for name in names:
        if name not in ("linear", "knn") and not (few_shot_count(name) or 0) >= 1:
            raise ValueError(
                f"protocols: unknown protocol {name!r}; allowed: 'linear', 'knn', 'fewshot<N>' (N >= 1), "
                f"e.g. {', '.join(PROTOCOLS)}"
            )
    return names


def few_shot_rows(dataset: Dataset, shots_per_class: int, seed: int = 0) -> np.ndarray:
    """Row ids of `gh_hf.data.balanced_subset(dataset, shots_per_class, seed)` within `dataset`."""
    from gh_hf.data import balanced_subset

    rows = dataset.select_columns(["label"]).add_column("_row", np.arange(len(dataset), dtype=np.int64))
    return np.asarray(balanced_subset(rows, shots_per_class, seed=seed)["_row"], dtype=np.int64)


def run_protocol(
    name: str,
    train: tuple[torch.Tensor, torch.Tensor],
    test_features: torch.Tensor,
    num_classes: int,
    settings: ProtocolSettings,
    rows: np.ndarray | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Test predictions (M,) of protocol `name` from train (features, labels) and test features.

    Args:
        name: "linear", "knn" or "fewshot<N>".
        train: (features (N, F), labels (N,)) of the balanced train set.
        test_features: (M, F).
        num_classes: C.
        settings: The probes' hyper-parameters.
        rows: For "fewshot<N>", the train rows of the N-shot subset (see `few_shot_rows`).
        device: Where the probe runs (default: CUDA if available).
    """
    features, labels = train
    if name == "knn":
        return knn_predict(
            features,
            labels,
            test_features,
            num_classes,
            settings.knn_k,
            settings.knn_temperature,
            device=device,
        )
    if few_shot_count(name):
        if rows is None:
            raise ValueError(f"protocol {name!r} needs rows, the train rows of its balanced subset")
        features, labels = features[torch.as_tensor(rows)], labels[torch.as_tensor(rows)]
    predictions, _ = linear_probe(
        features,
        labels,
        test_features,
        num_classes,
        epochs=settings.linear_epochs,
        lr=settings.linear_lr,
        final_lr=settings.linear_final_lr,
        weight_decay=settings.linear_weight_decay,
        batch_size=settings.linear_batch_size,
        seed=settings.seed,
        device=device,
        feature_norm=settings.feature_norm,
    )
    return predictions


def eval_transform_for(model: nn.Module) -> tuple[Callable[[Any], torch.Tensor], dict[str, Any]]:
    """The eval transform from the encoder's config (image_size, in_chans, image_mean, image_std).

    Returns:
        (transform, its settings as a dict, usable as a cache key).
    """
    from gh_hf.data import build_eval_transform

    config = encoder_of(model).config
    settings = {
        "image_size": config.image_size,
        "in_chans": config.in_chans,
        "mean": list(config.image_mean),
        "std": list(config.image_std),
    }
    return build_eval_transform(**settings), settings


def evaluate_encoder(
    model: nn.Module,
    train_dataset: Dataset,
    test_dataset: Dataset,
    class_counts: Sequence[int],
    protocols: str | Sequence[str] = ("linear", "knn"),
    grouping: str = "thirds",
    settings: ProtocolSettings | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    accelerator: Any | None = None,
    cache_dir: str | None = None,
    device: str | torch.device | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate a frozen encoder with several protocols (DESIGN.md section 5).

    Features of the balanced train set and of the test set are extracted once (eval transform
    from the encoder's config); each protocol fits on the train features (few-shot: on the rows
    of `balanced_subset(train_dataset, N, settings.seed)`) and is scored on the test set with
    `long_tailed_accuracy`, grouped by `class_counts`.

    Args:
        model: A `GHModel` (or `GHForPreTraining`), already on its device, or a
            `PixelEncoder` (the raw-pixel floor).
        train_dataset: Balanced labelled train split, columns `image` and `label`.
        test_dataset: Balanced test split, columns `image` and `label`.
        class_counts: Images per class in the long-tailed pretraining split (length C).
        protocols: Names, see `parse_protocols`.
        grouping: "thirds" or "thresholds".
        settings: Probe hyper-parameters (defaults: the paper's).
        batch_size: Images per forward pass during feature extraction.
        num_workers: DataLoader workers.
        accelerator: Optional `accelerate.Accelerator` sharding feature extraction.
        cache_dir: Optional feature cache folder (see `extract_features`).
        device: Where probes run (default: the accelerator's device, else CUDA if available).

    Returns:
        {protocol: the metric dict of `long_tailed_accuracy`}.
    """
    names = parse_protocols(protocols)
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {list(GROUPINGS)}, got {grouping!r}")
    train, test = encoder_features(
        model, train_dataset, test_dataset, batch_size, num_workers, accelerator, cache_dir
    )
    return evaluate_features(
        train,
        test,
        train_dataset,
        class_counts,
        names,
        grouping,
        settings,
        device or (accelerator.device if accelerator is not None else None),
    )


def encoder_features(
    model: nn.Module,
    train_dataset: Dataset,
    test_dataset: Dataset,
    batch_size: int = 256,
    num_workers: int = 0,
    accelerator: Any | None = None,
    cache_dir: str | None = None,
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """((train features, labels), (test features, labels)) under the encoder's eval transform.

    The arguments are `evaluate_encoder`'s; with `cache_dir` the features are cached per model,
    data and transform, so the probes and `class_geometry` of one encoder extract them once.
    """
    from gh_hf.data import with_eval_transform

    transform, transform_settings = eval_transform_for(model)
    extract = {"batch_size": batch_size, "num_workers": num_workers, "accelerator": accelerator}
    key = json.dumps(transform_settings, sort_keys=True)
    return tuple(  # type: ignore[return-value]
        extract_features(
            model, with_eval_transform(data, transform), **extract, cache_dir=cache_dir, cache_key=key
        )
        for data in (train_dataset, test_dataset)
    )


def evaluate_features(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    train_dataset: Dataset,
    class_counts: Sequence[int],
    protocols: str | Sequence[str] = ("linear", "knn"),
    grouping: str = "thirds",
    settings: ProtocolSettings | None = None,
    device: str | torch.device | None = None,
) -> dict[str, dict[str, Any]]:
    """`evaluate_encoder` on features already extracted (`encoder_features`); `train_dataset`
    gives the few-shot subsets' rows."""
    names = parse_protocols(protocols)
    settings = settings or ProtocolSettings()
    test_features, test_labels = test
    results = {}
    for name in names:
        shots = few_shot_count(name)
        rows = few_shot_rows(train_dataset, shots, settings.seed) if shots else None
        predictions = run_protocol(name, train, test_features, len(class_counts), settings, rows, device)
        results[name] = long_tailed_accuracy(predictions.numpy(), test_labels.numpy(), class_counts, grouping)
    return results
