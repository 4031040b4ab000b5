"""What GH costs: interleaved step timings of SimCLR vs SimCLR+GH, and GH's components alone."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from gh_hf.configuration_gh import GHConfig
from gh_hf.losses import sinkhorn
from gh_hf.modeling_gh_pretraining import GHForPreTraining
from gh_hf.training.score_bank import ScoreBank


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _step_fn(
    model: GHForPreTraining,
    batch: torch.Tensor,
    gh_weight: float,
    bank: ScoreBank | None,
    dtype: torch.dtype | None,
):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    indices = torch.arange(batch.shape[0], device=batch.device)

    def step() -> None:
        with torch.autocast(batch.device.type, dtype=dtype, enabled=dtype is not None):
            out = model(batch, gh_weight=gh_weight)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if bank is not None:
            bank.update(indices, out.anchor_scores[:, 0], momentum=0.999)

    return step


def compare_steps(
    config: GHConfig,
    batch_size: int,
    device: torch.device,
    repeats: int = 20,
    warmup: int = 3,
    dtype: torch.dtype | None = None,
    num_train_samples: int = 50_000,
) -> dict[str, float]:
    """Median seconds per training step of SimCLR and SimCLR+GH, timed alternately after warm-up.

    Both arms share the backbone, batch and views; the GH arm adds the anchor scores' Sinkhorn
    allocations (two views), the swapped cross-entropy and the score-bank update.
    """
    torch.manual_seed(0)
    batch = torch.randn(batch_size, 2, config.in_chans, config.image_size, config.image_size, device=device)
    arms = {}
    for name, use_gh in (("simclr", False), ("simclr_gh", True)):
        arm_config = GHConfig(**{**config.to_diff_dict(), "use_gh": use_gh})
        model = GHForPreTraining(arm_config).to(device).train()
        bank = ScoreBank(num_train_samples, config.num_anchors, device=device) if use_gh else None
        arms[name] = _step_fn(model, batch, 1.0, bank, dtype)
    times: dict[str, list[float]] = {name: [] for name in arms}
    for repeat in range(warmup + repeats):
        for name, step in arms.items():
            elapsed = _timed(step, device)
            if repeat >= warmup:
                times[name].append(elapsed)
    simclr, gh = statistics.median(times["simclr"]), statistics.median(times["simclr_gh"])
    return {
        "batch_size": batch_size,
        "simclr_step_s": simclr,
        "simclr_gh_step_s": gh,
        "gh_over_simclr": gh / simclr,
        "simclr_images_per_s": batch_size / simclr,
        "simclr_gh_images_per_s": batch_size / gh,
    }


def time_sinkhorn(
    batch_size: int, num_anchors: int, device: torch.device, iters: int = 300, repeats: int = 5
) -> float:
    """Median seconds of one Sinkhorn allocation (batch x K scores, `iters` iterations)."""
    scores = torch.nn.functional.normalize(torch.randn(batch_size, num_anchors, device=device), dim=-1)
    prior = torch.full((num_anchors,), 1.0 / num_anchors, device=device)
    sinkhorn(scores, prior, 0.05, iters)  # warm-up
    return statistics.median(
        _timed(lambda: sinkhorn(scores, prior, 0.05, iters), device) for _ in range(repeats)
    )


def time_bank_update(
    batch_size: int, num_anchors: int, num_samples: int, device: torch.device, repeats: int = 5
) -> float:
    """Median seconds of one vectorised bank update of a global batch."""
    bank = ScoreBank(num_samples, num_anchors, device=device)
    scores = torch.randn(batch_size, num_anchors, device=device)
    generator = torch.Generator().manual_seed(0)
    batches = [
        torch.randperm(num_samples, generator=generator)[:batch_size].to(device) for _ in range(repeats + 1)
    ]
    bank.update(batches[-1], scores, 0.999)  # warm-up (first sightings)
    return statistics.median(
        _timed(lambda indices=indices: bank.update(indices, scores, 0.999), device)
        for indices in batches[:-1]
    )
