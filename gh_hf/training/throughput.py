"""End-to-end training throughput: the real loop (data + step) of several pipelines, interleaved.

Each arm is a full `Pretrainer` (its own loader, views, model and optimizer) built from one preset
plus a few overrides. The arms run in turns of `steps_per_turn` training steps, so that whatever
else the machine does weighs on all of them alike; a "model_only" arm replays one batch of
ready-made views through the batched arm's training step, which measures the step without its
data, and from that rate each arm's data share of the step time follows.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from itertools import islice
from typing import Any

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
    trainer = Pretrainer(*parse_pretrain_args(argv))
    trainer.setup()
    args = trainer.args
    trainer.state.epoch = args.gh_warmup_epochs + args.gh_ramp_epochs  # GH on, at full weight
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
    """Images/s of each arm's real training loop, and of the batched arm's step alone.

    Args:
        preset: The pretraining preset every arm starts from.
        arms: name -> extra arguments; must include "batched" for the model-only rate.
        common: Arguments for every arm (before the arm's own), e.g. a backbone or a batch size.
        turns: Rounds of interleaved turns (the median turn is reported).
        steps_per_turn: Training steps per turn.

    Returns:
        {"arms": {name: {"images_per_s", "step_s", "data_share"}}, "batch_size", ...}.
    """
    arms = dict(DEFAULT_ARMS if arms is None else arms)
    if "batched" not in arms:
        raise ValueError(f"arms must include 'batched' (for the model-only rate), got {sorted(arms)}")
    with tempfile.TemporaryDirectory() as root:
        trainers = {
            name: build_trainer(preset, [*(common or []), *extra], f"{root}/{name}")
            for name, extra in arms.items()
        }
        batch_size = trainers["batched"].args.per_device_batch_size
        seconds: dict[str, list[float]] = {name: [] for name in [*trainers, MODEL_ONLY]}
        order = list(seconds)
        for turn in range(turns):
            for name in order[turn % len(order) :] + order[: turn % len(order)]:  # rotate who goes first
                if name == MODEL_ONLY:
                    seconds[name].append(time_model_only(trainers["batched"], steps_per_turn))
                else:
                    seconds[name].append(time_turn(trainers[name], steps_per_turn))
    step_s = {name: statistics.median(values) / steps_per_turn for name, values in seconds.items()}
    results = {
        name: {
            "images_per_s": batch_size / step,
            "step_s": step,
            "data_share": max(0.0, 1 - step_s[MODEL_ONLY] / step),
        }
        for name, step in step_s.items()
    }
    return {
        "preset": preset,
        "batch_size": batch_size,
        "turns": turns,
        "steps_per_turn": steps_per_turn,
        "common": common or [],
        "arms": arms,
        "turn_seconds": seconds,
        "results": results,
        "batched_over_per_image": results["per_image"]["step_s"] / results["batched"]["step_s"]
        if "per_image" in results
        else None,
    }
