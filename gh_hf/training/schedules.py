"""Learning-rate and GH-weight schedules, as functions of the (fractional) epoch."""

from __future__ import annotations

import math

LR_SCHEDULES = ("auto", "cosine", "two_stage")


def resolve_lr_schedule(lr_schedule: str, use_gh: bool, gh_warmup_epochs: float) -> str:
    """The schedule "auto" stands for: "two_stage" for GH runs with an SSL warm-up, else "cosine".

    The paper's GH runs step the learning rate down at the GH warm-up boundary; runs without GH
    (or with GH from epoch 0) follow the baseline's warm-up + cosine.

    Args:
        lr_schedule: "auto", "cosine" or "two_stage" (`--lr_schedule`).
        use_gh: whether the run adds the GH term.
        gh_warmup_epochs: the SSL warm-up before GH starts (`--gh_warmup_epochs`).

    Returns:
        "cosine" or "two_stage".
    """
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule={lr_schedule!r} is invalid: use one of {', '.join(LR_SCHEDULES)}.")
    if lr_schedule != "auto":
        return lr_schedule
    return "two_stage" if use_gh and gh_warmup_epochs > 0 else "cosine"


def _cosine(progress: float, start: float, end: float) -> float:
    progress = min(max(progress, 0.0), 1.0)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))


def warmup_cosine_lr(
    epoch: float, total_epochs: float, base_lr: float, warmup_epochs: float, min_lr: float
) -> float:
    """Baseline schedule: linear warm-up over `warmup_epochs`, then cosine from base_lr to min_lr."""
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return base_lr * epoch / warmup_epochs
    return _cosine((epoch - warmup_epochs) / max(total_epochs - warmup_epochs, 1e-12), base_lr, min_lr)


def two_stage_cosine_lr(
    epoch: float, total_epochs: float, base_lr: float, stage_lr: float, boundary_epochs: float, min_lr: float
) -> float:
    """GH schedule: cosine base_lr -> stage_lr until the GH warm-up boundary, then stage_lr -> min_lr."""
    if boundary_epochs > 0 and epoch < boundary_epochs:
        return _cosine(epoch / boundary_epochs, base_lr, stage_lr)
    return _cosine((epoch - boundary_epochs) / max(total_epochs - boundary_epochs, 1e-12), stage_lr, min_lr)


def gh_weight_at(epoch: float, warmup_epochs: float, ramp_epochs: float, gh_weight: float) -> float:
    """w(t): 0 during the SSL warm-up, then linear up to `gh_weight` over `ramp_epochs`."""
    if epoch < warmup_epochs:
        return 0.0
    if ramp_epochs <= 0:
        return gh_weight
    return gh_weight * min(1.0, (epoch - warmup_epochs) / ramp_epochs)
