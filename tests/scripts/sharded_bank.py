"""The sharded score bank against the replicated one on W gloo processes.

Run with `accelerate launch --multi_gpu --num_processes 2 tests/scripts/sharded_bank.py OUT TMP`.
Both banks see the same global batches (each process contributes its slice, as in training);
rank 0 writes OUT (JSON): one boolean per check, all processes together (the pytest test
asserts on them), and the rows each process holds. TMP receives checkpoints.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from gh_hf.dist import default_accelerator_kwargs, ends_process_group
from gh_hf.training.prior import bank_counts, prior_diagnostics, refreshed_prior
from gh_hf.training.score_bank import ScoreBank, build_score_bank
from gh_hf.training.trainer import update_bank_globally

NUM_SAMPLES, NUM_ANCHORS, NUM_CLASSES, PER_PROCESS, STEPS = 1001, 8, 5, 40, 30


def global_batches(world: int):
    """(indices, scores) of each step's global batch, the same on every process (seeded): epochs of
    a shuffled split, the last incomplete batch of each dropped."""
    generator = torch.Generator().manual_seed(0)
    anchor_of = torch.randint(0, NUM_ANCHORS, (NUM_SAMPLES,), generator=generator)
    batch = world * PER_PROCESS
    epochs = [
        torch.randperm(NUM_SAMPLES, generator=generator) for _ in range(STEPS * batch // NUM_SAMPLES + 1)
    ]
    for step in range(STEPS):
        epoch, start = divmod(step, NUM_SAMPLES // batch)
        indices = epochs[epoch][start * batch : (start + 1) * batch]
        noise = torch.rand(len(indices), NUM_ANCHORS, generator=generator)
        scores = torch.nn.functional.one_hot(anchor_of[indices], NUM_ANCHORS) + 0.9 * noise
        yield indices, torch.nn.functional.normalize(scores.float(), dim=1)


def same(a: ScoreBank, b: ScoreBank) -> bool:
    return torch.equal(a.scores, b.scores) and torch.equal(a.seen, b.seen)


def checkpoint_checks(accelerator: Accelerator, sharded: ScoreBank, replicated: ScoreBank, tmp: Path):
    """save_state writes a shard per process; load_state restores it; one process re-shards all of them."""
    folder = tmp / "checkpoint"
    accelerator.save_state(str(folder))
    accelerator.wait_for_everyone()
    world = accelerator.num_processes
    files = sorted(p.name for p in folder.glob("score_bank-*"))
    expected = [f"score_bank-shard{r:05d}-of-{world:05d}.safetensors" for r in range(world)]
    resumed = Accelerator(**default_accelerator_kwargs())  # the same state; a second set of hooks
    fresh = build_score_bank(resumed, NUM_SAMPLES, NUM_ANCHORS, "sharded")
    resumed.load_state(str(folder))
    whole = ScoreBank(NUM_SAMPLES, NUM_ANCHORS)
    whole.load_shards(folder)  # written by W processes, read by one
    return {
        "one_file_per_process": files == expected,
        "resume_same_world_bitwise": same(fresh, sharded),
        "reshard_to_one_process_bitwise": same(whole, replicated),
    }


@ends_process_group
def main(out_path: str, tmp: str) -> None:
    accelerator = Accelerator(**default_accelerator_kwargs())
    world, rank = accelerator.num_processes, accelerator.process_index
    sharded = build_score_bank(accelerator, NUM_SAMPLES, NUM_ANCHORS, "sharded")
    replicated = ScoreBank(NUM_SAMPLES, NUM_ANCHORS)  # what every process held before sharding
    for step, (indices, scores) in enumerate(global_batches(world)):
        local = slice(rank * PER_PROCESS, (rank + 1) * PER_PROCESS)
        momentum = 0.5 if step < STEPS // 2 else 0.99
        for bank in (sharded, replicated):
            update_bank_globally(accelerator, bank, indices[local], scores[local], momentum)
    labels = torch.randint(0, NUM_CLASSES, (NUM_SAMPLES,), generator=torch.Generator().manual_seed(1))
    masses = torch.tensor([8.0, 1, 2, 3, 4, 5, 6, 7])
    previous = torch.full((NUM_ANCHORS,), 1 / NUM_ANCHORS)
    prior = refreshed_prior(sharded, "estimated", 2.0)
    checks = {
        "rows_bitwise": torch.equal(sharded.scores, replicated.scores[sharded.sample_indices()]),
        "prior_bitwise": torch.equal(prior, refreshed_prior(replicated, "estimated", 2.0)),
        "occupancy_equal": torch.equal(sharded.occupancy(), replicated.occupancy()),
        "known_prior_bitwise": torch.equal(
            refreshed_prior(sharded, masses), refreshed_prior(replicated, masses)
        ),
        "diagnostics_equal": prior_diagnostics(prior, previous, *bank_counts(sharded, labels))
        == prior_diagnostics(prior, previous, *bank_counts(replicated, labels)),
        "seen_equal": int(sharded.sum_over_shards(sharded.seen.sum())) == int(replicated.seen.sum()) > 900,
        "memory_one_wth": sharded.scores.numel() * world <= replicated.scores.numel() + world * NUM_ANCHORS,
        **checkpoint_checks(accelerator, sharded, replicated, Path(tmp)),
    }
    passed = accelerator.gather(torch.tensor([list(checks.values())], dtype=torch.long)).min(dim=0).values
    rows = accelerator.gather(torch.tensor([len(sharded.seen)])).tolist()
    if accelerator.is_main_process:
        result = {name: bool(ok) for name, ok in zip(checks, passed.tolist(), strict=True)}
        result |= {"world": world, "shard_rows": rows, "replicated_rows": len(replicated.seen)}
        Path(out_path).write_text(json.dumps(result))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(*sys.argv[1:])
