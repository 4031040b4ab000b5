"""The encoder folder: what training writes to `output_dir/encoder/` and what goes to the Hub.

An encoder folder holds
- `config.json` and `model.safetensors`: the `GHModel` (backbone only: no projector, no anchors);
- `preprocessor_config.json`: its `GHImageProcessor` (training resolution, normalisation, channels);
- the code files named by the `auto_map` entries of those two JSON files (`configuration_gh.py`,
  `modeling_gh.py`, `image_processing_gh.py`: self-contained, they import no gh_hf module), so
  that `trust_remote_code=True` loads it where gh_hf is not installed or not importable;
- `README.md`, the model card (see `gh_hf.hub.card`);
- records of the run the card is rendered from, kept locally and not uploaded:
  `training_args.json`, `long_tailed_split.json` and, when the trainer wrote it, `run_info.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gh_hf.configuration_gh import GHConfig
from gh_hf.image_processing_gh import GHImageProcessor
from gh_hf.modeling_gh import GHModel

if TYPE_CHECKING:
    from datasets import Dataset

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PROCESSOR_FILE = "preprocessor_config.json"
CARD_FILE = "README.md"
TRAINING_ARGS_FILE = "training_args.json"
SPLIT_FILE = "long_tailed_split.json"
RUN_INFO_FILE = "run_info.json"


def image_processor_for(config: GHConfig, crop_pct: float = 1.0) -> GHImageProcessor:
    """The processor equivalent to `gh_hf.data.build_eval_transform` for an encoder's config.

    Args:
        config: The encoder's config (`image_size`, `in_chans`, `image_mean`, `image_std`).
        crop_pct: Fraction of the resized image kept by the centre crop, in (0, 1]; 1.0 (the
            evaluation default) resizes the shorter side straight to `image_size`.

    Returns:
        A `GHImageProcessor`.
    """
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct={crop_pct!r} is invalid: must be in (0, 1].")
    return GHImageProcessor(
        num_channels=config.in_chans,
        size={"shortest_edge": int(round(config.image_size / crop_pct))},
        crop_size={"height": config.image_size, "width": config.image_size},
        image_mean=list(config.image_mean),
        image_std=list(config.image_std),
    )


def save_encoder_folder(
    encoder: GHModel, directory: str | Path, image_processor: GHImageProcessor | None = None
) -> Path:
    """Writes config, weights, processor config and code files of `encoder` to `directory`.

    Args:
        encoder: The encoder (`GHForPreTraining.encoder` after training).
        directory: The folder, created if needed.
        image_processor: Defaults to `image_processor_for(encoder.config)`.

    Returns:
        `directory` as a `Path`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(directory)  # GHConfig/GHModel are registered for auto classes: code files too
    (image_processor or image_processor_for(encoder.config)).save_pretrained(directory)
    return directory


def split_summary(dataset_name: str, train_dataset: Dataset, seed: int | None = None) -> dict[str, Any]:
    """What `long_tailed_split.json` records about the pretraining split.

    Args:
        dataset_name: The `--dataset` of the run.
        train_dataset: The long-tailed split it trained on (see `make_long_tailed`).
        seed: The run's seed, recorded when the split does not record its own.

    Returns:
        {"dataset", "num_images", "class_counts", "class_names", "imbalance_ratio", "profile",
        "seed", ...}: the split's recorded metadata, or, for a source used as it is, the counts.
    """
    from datasets import ClassLabel

    from gh_hf.data import get_class_counts, get_split_metadata

    label = train_dataset.features.get("label")
    summary: dict[str, Any] = {
        "dataset": dataset_name,
        "imbalance_ratio": None,
        "profile": None,
        "seed": seed,
    }
    summary.update(get_split_metadata(train_dataset))
    summary.pop("num_rows", None)
    summary["num_images"] = len(train_dataset)
    summary["class_counts"] = get_class_counts(train_dataset)
    summary["class_names"] = list(label.names) if isinstance(label, ClassLabel) else None
    return summary


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when the file does not exist."""
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
