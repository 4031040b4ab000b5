"""Hub publishing: the encoder folder, its image processor, model card and upload.

- `GHImageProcessor`: gh_hf's evaluation transform as a transformers image processor.
- `save_encoder_folder`: config, weights, processor config and remote-code files of an encoder.
- `render_model_card` / `write_model_card`: the card, from `model_cards/gh_encoder_template.md`.
- `load_results`: an encoder's entry of a `scripts/benchmark.py` results.json.
- `push_encoder`: stage exactly the files to upload, then `create_repo` + `upload_folder`.
- `collect_run_info`: hardware and wall time of a run, for `run_info.json`.
"""

from __future__ import annotations

from gh_hf.hub.card import DEFAULT_LICENSE, default_template_path, render_model_card, write_model_card
from gh_hf.hub.encoder_folder import image_processor_for, save_encoder_folder, split_summary
from gh_hf.hub.publish import (
    HubPublishError,
    PushArguments,
    StagedEncoder,
    check_can_push,
    push_encoder,
    stage_encoder,
    upload_staged,
)
from gh_hf.hub.results import EncoderResults, eval_results, load_results
from gh_hf.hub.run_info import collect_run_info, describe_hardware
from gh_hf.image_processing_gh import GHImageProcessor

__all__ = [
    "DEFAULT_LICENSE",
    "EncoderResults",
    "GHImageProcessor",
    "HubPublishError",
    "PushArguments",
    "StagedEncoder",
    "check_can_push",
    "collect_run_info",
    "default_template_path",
    "describe_hardware",
    "eval_results",
    "image_processor_for",
    "load_results",
    "push_encoder",
    "render_model_card",
    "save_encoder_folder",
    "split_summary",
    "stage_encoder",
    "upload_staged",
    "write_model_card",
]
