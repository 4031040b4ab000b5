"""Frozen-backbone feature extraction, sharded with Accelerate and cached on disk.

`PixelEncoder` is the raw-pixel floor: an encoder whose features are the flattened normalised
eval images, so the probes score pixels exactly as they score a pretrained backbone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from gh_hf.files import write_atomically

logger = logging.getLogger(__name__)

PIXELS = "pixels"


@dataclass(frozen=True)
class PixelConfig:
    """The eval transform of `PixelEncoder` (the fields `eval_transform_for` reads from a config).

    Attributes:
        image_size: Height and width of the eval view.
        in_chans: 1 or 3.
        image_mean: Per-channel mean of images scaled to [0, 1].
        image_std: Per-channel std of images scaled to [0, 1].
    """

    image_size: int
    in_chans: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]

    def to_json_string(self, use_diff: bool = False) -> str:
        """JSON of the fields, as `PretrainedConfig.to_json_string` (`model_fingerprint` hashes it)."""
        del use_diff  # no defaults to leave out
        return json.dumps({"model_type": PIXELS, **asdict(self)}, sort_keys=True)


class PixelEncoder(nn.Module):
    """The raw-pixel floor: features are the flattened normalised eval images (C*H*W of them).

    It has no weights; its `config` carries the eval transform (size, channels, mean, std), so
    `evaluate_encoder` feeds it the same views it feeds a backbone with that config and the
    feature cache keys it by those settings.

    Args:
        image_size: Height and width of the eval view.
        in_chans: 1 or 3.
        image_mean: Per-channel mean (length `in_chans`).
        image_std: Per-channel std (length `in_chans`).
    """

    def __init__(
        self, image_size: int, in_chans: int, image_mean: Sequence[float], image_std: Sequence[float]
    ) -> None:
        super().__init__()
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self.config = PixelConfig(image_size, in_chans, tuple(image_mean), tuple(image_std))

    @property
    def num_features(self) -> int:
        """C * H * W."""
        return self.config.in_chans * self.config.image_size**2

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values.flatten(1)  # (B, C, H, W) -> (B, C*H*W)


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


def _model_device(model: nn.Module, default: torch.device) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else default


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
    tensors = {"features": features.contiguous(), "labels": labels.contiguous()}
    write_atomically(path, lambda staging: save_file(tensors, str(staging)))


@torch.no_grad()
def _extract(
    model: nn.Module, loader: DataLoader, accelerator: Any | None, show_progress: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    # A model without weights (PixelEncoder) runs where the accelerator puts the batches, so
    # that gather_for_metrics sees tensors on the backend's device.
    device = _model_device(model, accelerator.device if accelerator is not None else torch.device("cpu"))
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

    The model runs in eval mode under `torch.no_grad()` on the device of its parameters (a
    model without parameters, e.g. `PixelEncoder`, on the accelerator's device, else the CPU);
    its train/eval mode is restored afterwards. With an `accelerate.Accelerator` the data loader
    is sharded across processes and the features are gathered with `gather_for_metrics`, so
    every process returns all N rows exactly once.

    Args:
        model: A `GHModel` (or a `GHForPreTraining`, whose encoder is used), a `PixelEncoder`,
            or any module called as `model(pixel_values=...)` returning `.pooler_output` or a
            tensor.
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
