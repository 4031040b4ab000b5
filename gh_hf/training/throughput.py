"""End-to-end training throughput: the real loop (data + step) of several pipelines, interleaved.

Each arm is a full `Pretrainer` (its own loader, views, model and optimizer) built from one preset
plus a few overrides. The arms run in turns of `steps_per_turn` training steps, so that whatever
else the machine does weighs on all of them alike; a "model_only" arm replays one batch of
ready-made views through each arm's training step, which measures the step without its data, and
from that rate each arm's data share of the step time follows.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from functools import partial
from itertools import islice
from typing import Any

import torch
from accelerate.state import AcceleratorState

from gh_hf.training.arguments import parse_pretrain_args
from gh_hf.training.trainer import Pretrainer

# name -> command-line overrides on top of the preset: the previous defaults (per-image views in 2
# workers, float32) against the current ones (batched views, --mixed_precision auto).
DEFAULT_ARMS: dict[str, list[str]] = {
    "per_image": ["--view_pipeline", "per_image", "--dataloader_num_workers", "2", "--mixed_precision", "no"],
    "batched": ["--view_pipeline", "batched"],
}
MODEL_ONLY = "model_only"


def build_trainer(preset: str, overrides: list[str], output_dir: str) -> Pretrainer:
    """A set-up `Pretrainer` in its GH stage (GH at full weight), writing to `output_dir`."""
    argv = ["--preset", preset, *overrides, "--output_dir", output_dir, "--knn_at_end", "false"]
    # Accelerate keeps one process-wide state and refuses a second mixed precision in it; each
    # arm's precision is fixed in its model's forward at `prepare`, so the next arm may reset it.
    AcceleratorState._reset_state()
    trainer = Pretrainer(*parse_pretrain_args(argv))
    trainer.setup()
    args = trainer.args
    trainer.state.epoch = args.gh_warmup_epochs + args.gh_ramp_epochs  # GH on, at full weight
    if trainer.loss_memory is not None:
        # BCL past its first epoch: every sample remembered, so every sample but the easiest gets
        # its RandAugment boost (strengths are min-max normalised losses, spread over [0, 1]); a
        # fresh run's zero strengths would skip the boost and time views BCL never trains on.
        losses = torch.rand(len(trainer.loss_memory.losses), generator=torch.Generator().manual_seed(0))
        indices = torch.arange(len(losses), device=trainer.loss_memory.losses.device)
        trainer.loss_memory.update(indices, losses.to(indices.device))
        trainer.two_views.set_strengths(trainer.loss_memory.next_epoch_strengths())
    trainer.two_views.set_epoch(trainer.state.epoch)
    trainer.loader.set_epoch(trainer.state.epoch)
    trainer.model.train()
    return trainer


def time_turn(trainer: Pretrainer, steps: int) -> float:
    """Seconds for `steps` training steps through the trainer's own loader, at steady state.

    A fresh iterator per turn starts the loader's workers anew; the first steps, untimed, drain
    the batches the workers prefetched while starting (prefetch_factor x workers), so the timed
    steps see the pipeline's steady rate. Deleting the iterator stops the workers, so no arm's
    workers run during another arm's turn.
    """
    loader = trainer.loader
    workers = loader.num_workers
    untimed = 1 + (workers * (loader.prefetch_factor or 2) if workers else 0)
    batches = iter(loader)
    for batch in islice(batches, untimed):
        trainer.training_step(batch)
    start = time.perf_counter()
    for batch in islice(batches, steps):
        trainer.training_step(batch)
    elapsed = time.perf_counter() - start
    del batches
    return elapsed


def time_model_only(trainer: Pretrainer, steps: int) -> float:
    """Seconds for `steps` training steps on one batch of views made beforehand (no data work)."""
    batch = next(iter(trainer.loader))
    ready = {"pixel_values": trainer.views_of(batch), "index": batch["index"], "label": batch["label"]}
    trainer.training_step(ready)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.training_step(ready)
    return time.perf_counter() - start


def compare_pipelines(
    preset: str = "fashion_mnist_lt",
    arms: dict[str, list[str]] | None = None,
    turns: int = 5,
    steps_per_turn: int = 8,
    common: list[str] | None = None,
) -> dict[str, Any]:
    """Images/s of each arm's real training loop, and of the same arm's step alone.

    Every turn runs each arm's loop and each arm's step on ready views ("<arm>/model_only"), in
    an order that rotates from turn to turn; an arm's data share is the part of its loop's step
    time that its step alone does not take.

    Args:
        preset: The pretraining preset every arm starts from.
        arms: name -> extra arguments (default: `DEFAULT_ARMS`).
        turns: Rounds of interleaved turns (the median turn is reported).
        steps_per_turn: Training steps per turn.
        common: Arguments for every arm (before the arm's own), e.g. a backbone or a batch size.

    Returns:
        {"results": {arm: {"images_per_s", "step_s", "model_only_images_per_s",
        "model_only_step_s", "data_share"}}, "turn_seconds", "batch_size", ...}.
    """
    arms = dict(DEFAULT_ARMS if arms is None else arms)
    with tempfile.TemporaryDirectory() as root:
        trainers = {
            name: build_trainer(preset, [*(common or []), *extra], f"{root}/{name}")
            for name, extra in arms.items()
        }
        timers = {}
        for name, trainer in trainers.items():
            timers[name] = partial(time_turn, trainer, steps_per_turn)
            timers[f"{name}/{MODEL_ONLY}"] = partial(time_model_only, trainer, steps_per_turn)
        seconds: dict[str, list[float]] = {name: [] for name in timers}
        order = list(timers)
        for turn in range(turns):
            for name in order[turn % len(order) :] + order[: turn % len(order)]:  # rotate who goes first
                seconds[name].append(timers[name]())
        batch_size = next(iter(trainers.values())).args.per_device_batch_size
    step_s = {name: statistics.median(values) / steps_per_turn for name, values in seconds.items()}
    results = {}
    for name in trainers:
        loop, alone = step_s[name], step_s[f"{name}/{MODEL_ONLY}"]
        results[name] = {
            "images_per_s": batch_size / loop,
            "step_s": loop,
            "model_only_images_per_s": batch_size / alone,
            "model_only_step_s": alone,
            "data_share": max(0.0, 1 - alone / loop),
        }
    speed_up = None
    if {"per_image", "batched"} <= set(results):
        speed_up = results["per_image"]["step_s"] / results["batched"]["step_s"]
    return {
        "preset": preset,
        "batch_size": batch_size,
        "turns": turns,
        "steps_per_turn": steps_per_turn,
        "common": common or [],
        "arms": arms,
        "turn_seconds": seconds,
        "results": results,
        "batched_over_per_image": speed_up,
    }
