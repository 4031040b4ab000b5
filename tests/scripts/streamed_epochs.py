"""Each process's streamed training batches, as the trainer makes them, gathered to rank 0.

Run with `accelerate launch --multi_gpu --num_processes 2 tests/scripts/streamed_epochs.py OUT ARGS...`
(ARGS: scripts/pretrain.py arguments of a --streaming run). Rank 0 writes OUT (JSON): N, and for
epochs 0 and 1 every process's sample indices in batch order; "resumed": epoch 1 from batch 2 on.
"""

from __future__ import annotations

import json
import sys

import torch
from accelerate import Accelerator

from gh_hf.dist import default_accelerator_kwargs, ends_process_group
from gh_hf.training import parse_pretrain_args
from gh_hf.training.data import build_train_loader, load_long_tailed_train
from gh_hf.training.trainer import build_config


def indices_of(loader, accelerator: Accelerator, epoch: int, start: int = 0) -> list[list[int]]:
    """Every process's indices of one epoch (from batch `start`), batch order, as rank 0 gathers them."""
    local = torch.cat([batch["index"] for batch in loader.epoch(epoch, start)])  # (batches * B,)
    assert all(batch["pixel_values"].shape[1] == 2 for batch in loader.epoch(epoch, len(loader) - 1))
    gathered = accelerator.gather(local[None])  # (W, batches * B)
    return gathered.tolist()


@ends_process_group
def main(out_path: str, argv: list[str]) -> None:
    accelerator = Accelerator(**default_accelerator_kwargs())
    data_args, model_args, args = parse_pretrain_args(argv)
    config = build_config(data_args, model_args, args.seed)
    split = load_long_tailed_train(data_args, args.seed)
    loader, _ = build_train_loader(split, data_args, config, args)
    result = {
        "world": accelerator.num_processes,
        "num_samples": len(split),
        "batches_per_epoch": len(loader),
        "epochs": [indices_of(loader, accelerator, epoch) for epoch in (0, 1)],
        "resumed": indices_of(loader, accelerator, 1, start=2),
    }
    if accelerator.is_main_process:
        with open(out_path, "w") as handle:
            json.dump(result, handle)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
