"""Pretraining with Accelerate: arguments, schedules, score bank and prior, the loop."""

from gh_hf.training.arguments import (
    DataArguments,
    ModelArguments,
    PretrainingArguments,
    available_presets,
    parse_pretrain_args,
)
from gh_hf.training.prior import prior_entropy
from gh_hf.training.schedules import gh_weight_at, two_stage_cosine_lr, warmup_cosine_lr
from gh_hf.training.score_bank import ScoreBank
from gh_hf.training.trainer import NonFiniteLossError, Pretrainer, TrainerState, build_config, pretrain

__all__ = [
    "DataArguments",
    "ModelArguments",
    "NonFiniteLossError",
    "Pretrainer",
    "PretrainingArguments",
    "ScoreBank",
    "TrainerState",
    "available_presets",
    "build_config",
    "gh_weight_at",
    "parse_pretrain_args",
    "pretrain",
    "prior_entropy",
    "two_stage_cosine_lr",
    "warmup_cosine_lr",
]
