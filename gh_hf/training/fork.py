"""Forks: a run that starts from another run's checkpoint (`--resume_from_checkpoint OTHER/checkpoints/X`).

The GH term adds nothing before `--gh_warmup_epochs`, so the SSL warm-up of a run with GH is the
warm-up of the same run without it, and of the same run with another prior or other GH settings.
A run whose warm-up checkpoint is kept (`--save_warmup_checkpoint`) can therefore start the
second stage of its siblings: `scripts/experiment.py` trains each seed's warm-up once per base.
A fork is checked against its source's `training_args.json` before any state is loaded: every
setting that acts during the warm-up must be the same (FORK_MAY_DIFFER lists those that need not).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from gh_hf.training.arguments import DataArguments, ModelArguments, PretrainingArguments, setting_differences
from gh_hf.training.schedules import resolve_lr_schedule

logger = logging.getLogger(__name__)

# Settings a fork may change: they act only after the GH warm-up (the GH term, its prior and bank
# momentum, the anchors' alignment at the GH start, the length of the second stage), or not on the
# weights at all (outputs, logging, the kNN monitor, checkpoints, the data loader's worker count:
# views depend on seed, epoch and index).
# The LR schedule is compared as resolved (check_fork).
FORK_MAY_DIFFER = {
    "dataloader_num_workers",
    "use_gh", "gh_temperature", "sinkhorn_epsilon", "sinkhorn_iterations", "sinkhorn_tolerance", "gh_weight",
    "output_dir", "resume_from_checkpoint", "save_warmup_checkpoint", "num_epochs", "max_steps",
    "gh_ramp_epochs", "prior_every_epochs", "prior_floor", "bank_momentum", "class_prior", "checkpoint_every",
    "checkpoint_every_epochs", "save_total_limit", "report_to", "logging_steps", "knn_every_epochs",
    "knn_at_end", "knn_max_train_samples", "knn_grouping", "push_to_hub", "hub_model_id", "hub_private_repo",
    "lr_schedule", "anchor_alignment",
}  # fmt: skip


def fork_source(checkpoint: Path, output_dir: Path) -> Path | None:
    """The run folder `checkpoint` belongs to when it is another run's (a fork), else None."""
    source = checkpoint.parent.parent
    return None if source.resolve() == output_dir.resolve() else source


def check_fork(
    source: Path,
    checkpoint: Path,
    current: tuple[DataArguments, ModelArguments, PretrainingArguments],
) -> None:
    """Fails, naming the settings, when this run's warm-up would not have been the source's.

    Args:
        source: the source run's folder (its `training_args.json` is read).
        checkpoint: the checkpoint this run starts from (for the message).
        current: this run's data, model and training arguments (resolved values).

    Raises:
        ValueError: a setting of the warm-up differs, or the fork has GH and its source did not (the
            source's checkpoint then holds no score bank for GH's prior).
    """
    saved_path = source / "training_args.json"
    if not saved_path.is_file():
        logger.warning("%s has no training_args.json: the fork from %s is not checked.", source, checkpoint)
        return
    saved = json.loads(saved_path.read_text())
    differences = [
        f"{key}: {there!r} there, {here!r} here"
        for key, there, here in setting_differences(saved, current, FORK_MAY_DIFFER)
    ]
    _, model, training = current
    schedules = [
        resolve_lr_schedule(saved["training"]["lr_schedule"], saved["model"]["use_gh"],
                            saved["training"]["gh_warmup_epochs"]),
        resolve_lr_schedule(training.lr_schedule, model.use_gh, training.gh_warmup_epochs),
    ]  # fmt: skip
    if schedules[0] != schedules[1]:
        differences.append(f"lr_schedule resolves to {schedules[0]!r} there, {schedules[1]!r} here")
    if model.use_gh and not saved["model"]["use_gh"]:
        differences.append("use_gh: False there, True here (the checkpoint holds no score bank for GH)")
    if differences:
        raise ValueError(
            f"--resume_from_checkpoint={str(checkpoint)!r} is another run's checkpoint whose warm-up was "
            f"made with other settings ({'; '.join(differences)}); a fork may change only the settings "
            "that act after the GH warm-up (gh_hf.training.fork.FORK_MAY_DIFFER)"
        )
