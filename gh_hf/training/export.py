"""What a run leaves for users: output_dir/encoder/, the folder `AutoModel` loads and the Hub receives.

See gh_hf.hub.encoder_folder for its files: config, safetensors weights, processor config, the
remote-code files, the model card, and the run's records the card is rendered from.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from datasets import Dataset

from gh_hf.hub.card import write_model_card
from gh_hf.hub.encoder_folder import (
    RUN_INFO_FILE,
    SPLIT_FILE,
    TRAINING_ARGS_FILE,
    save_encoder_folder,
    split_summary,
    write_json,
)
from gh_hf.modeling_gh_pretraining import GHForPreTraining

logger = logging.getLogger(__name__)


def export_encoder(
    model: GHForPreTraining,
    encoder_dir: str | Path,
    all_args: dict[str, Any],
    train_dataset: Dataset,
    run_info: dict[str, Any] | None = None,
) -> Path:
    """Saves the encoder part of `model` (no projector, anchors or optimizer state) with its card.

    Args:
        model: The trained model (unwrapped).
        encoder_dir: The folder to write (output_dir/encoder).
        all_args: {"data", "model", "training"} arguments of the run, saved as training_args.json.
        train_dataset: The long-tailed pretraining split, summarised in long_tailed_split.json.
        run_info: Measured facts of the run (see `gh_hf.hub.collect_run_info`), saved as
            run_info.json when given.

    Returns:
        `encoder_dir` as a `Path`.
    """
    encoder_dir = save_encoder_folder(model.encoder, encoder_dir)
    write_json(all_args, encoder_dir / TRAINING_ARGS_FILE)
    split = split_summary(all_args["data"]["dataset"], train_dataset, seed=all_args["training"]["seed"])
    write_json(split, encoder_dir / SPLIT_FILE)
    if run_info is not None:
        write_json(run_info, encoder_dir / RUN_INFO_FILE)
    try:
        write_model_card(encoder_dir, encoder=model.encoder)
    except FileNotFoundError as error:  # an install without the card template: keep the weights, say so
        logger.warning("Encoder saved without README.md: %s", error)
    return encoder_dir
