"""Frozen-backbone feature extraction, sharded with Accelerate and cached on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


def encoder_of(model: nn.Module) -> nn.Module:
    """The module whose output carries `pooler_output`: the model, or its `encoder`.

    A `GHForPreTraining` (or a DDP-wrapped model) is reduced to its `GHModel` encoder, so
    the online monitor can be handed the model being trained.
    """
    from gh_hf.modeling_gh_pretraining import GHForPreTraining

    model = getattr(model, "module", model)  # DistributedDataParallel
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return model.encoder if isinstance(model, GHForPreTraining) else model


def _pooled(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    output = model(pixel_values=pixel_values)
    pooled = output if isinstance(output, torch.Tensor) else output.pooler_output
    return pooled.flatten(1).float()  # (B, F)


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's config (if any) and of every tensor of its state dict."""
    hasher = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_json_string"):
        hasher.update(config.to_json_string(use_diff=False).encode())
    for name, tensor in model.state_dict().items():
        hasher.update(name.encode())
        hasher.update(str(tensor.dtype).encode())
        hasher.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def _cache_path(model: nn.Module, dataset: Any, cache_dir: str, cache_key: str | None) -> Path | None:
    fingerprint = getattr(dataset, "_fingerprint", None)
    if fingerprint is None and cache_key is None:
        raise ValueError(
            f"cache_dir={cache_dir!r} needs a dataset fingerprint: the dataset ({type(dataset).__name__}) "
            "has no `_fingerprint`, so pass cache_key naming the data and transform"
        )
    key = {"model": model_fingerprint(model), "dataset": fingerprint, "size": len(dataset), "key": cache_key}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return Path(cache_dir) / f"features-{digest}.safetensors"


def _forget_dataloader(accelerator: Any, loader: DataLoader) -> None:
    # `prepare` registers every loader for save_state / load_state; a monitor called every few
    # epochs would otherwise pile up loaders there (and sampler files in every checkpoint).
    registered = getattr(accelerator, "_dataloaders", None)
    if isinstance(registered, list) and loader in registered:
        registered.remove(loader)


def _save_atomically(path: Path, features: torch.Tensor, labels: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    save_file({"features": features.contiguous(), "labels": labels.contiguous()}, str(partial))
    os.replace(partial, path)


@torch.no_grad()
def _extract(
    model: nn.Module, loader: DataLoader, accelerator: Any | None, show_progress: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    device = _model_device(model)
    features, labels = [], []
    for batch in tqdm(loader, desc="features", disable=not show_progress, leave=False):
        pooled = _pooled(model, batch["pixel_values"].to(device, non_blocking=True))  # (B, F)
        label = torch.as_tensor(batch["label"]).to(pooled.device)
        if accelerator is not None:
            # Drops the samples the sampler repeated to even out the last batch across processes.
            pooled, label = accelerator.gather_for_metrics((pooled, label))
        features.append(pooled.cpu())
        labels.append(label.cpu())
    return torch.cat(features), torch.cat(labels).long()


def extract_features(
    model: nn.Module,
    dataset: Any,
    batch_size: int = 256,
    num_workers: int = 0,
    accelerator: Any | None = None,
    cache_dir: str | None = None,
    cache_key: str | None = None,
    show_progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled backbone features (`pooler_output`) of every image, in dataset order.

    The model runs in eval mode under `torch.no_grad()` on the device of its parameters; its
    train/eval mode is restored afterwards. With an `accelerate.Accelerator` the data loader
    is sharded across processes and the features are gathered with `gather_for_metrics`, so
    every process returns all N rows exactly once.

    Args:
        model: A `GHModel` (or a `GHForPreTraining`, whose encoder is used), or any module
            called as `model(pixel_values=...)` returning `.pooler_output` or a tensor.
        dataset: Yields dicts with `pixel_values` (C, H, W) and `label`, e.g. a `datasets.Dataset`
            after `gh_hf.data.with_eval_transform`.
        batch_size: Images per forward pass (per process).
        num_workers: DataLoader workers.
        accelerator: Optional `accelerate.Accelerator` to shard the work.
        cache_dir: If given, features are read from / written to a safetensors file in this
            folder, keyed by the model's weights and config, the dataset fingerprint and size,
            and `cache_key`.
        cache_key: Extra key (e.g. the transform's settings); required with `cache_dir` for
            datasets without a `_fingerprint`.
        show_progress: Show a tqdm bar (main process only).

    Returns:
        (features float32 (N, F), labels int64 (N,)), on the CPU.
    """
    encoder = encoder_of(accelerator.unwrap_model(model) if accelerator is not None else model)
    path = _cache_path(encoder, dataset, cache_dir, cache_key) if cache_dir is not None else None
    if path is not None and path.is_file():
        cached = load_file(str(path))
        logger.info("Loaded cached features from %s", path)
        return cached["features"], cached["labels"]
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    if accelerator is not None:
        loader = accelerator.prepare(loader)
    is_main = accelerator is None or accelerator.is_main_process
    was_training = encoder.training
    encoder.eval()
    try:
        features, labels = _extract(encoder, loader, accelerator, show_progress and is_main)
    finally:
        encoder.train(was_training)
        if accelerator is not None:
            _forget_dataloader(accelerator, loader)
    if path is not None and is_main:
        _save_atomically(path, features, labels)
    if path is not None and accelerator is not None:
        accelerator.wait_for_everyone()  # no process may miss a file another one is about to hit
    return features, labels
