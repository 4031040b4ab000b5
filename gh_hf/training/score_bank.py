"""Per-sample moving averages of anchor scores, sharded over processes, and the prior estimated from them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from gh_hf.training.moving_average import PerSampleMovingAverage, shard_rows

if TYPE_CHECKING:
    from accelerate import Accelerator

BANK_SHARDINGS = ("sharded", "replicated")
BANK_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ScoreBank(PerSampleMovingAverage):
    """Holds B (N_train, K): per training sample, a moving average of its view-1 anchor scores.

    The first sighting of a sample copies its score; later ones do B_i <- beta B_i + (1-beta) s_i.
    Updates take the whole global batch. With `num_shards` W > 1 (one shard per process) each
    process holds the rows of the samples i with i % W == its shard, and what is read from the
    bank (occupancy, the prior) is summed over the shards with an all-reduce, so every process
    gets what one whole bank gives, exactly; these reads are collective calls then.

    Args:
        num_samples: N_train, the size of the training split (samples are addressed by `index`).
        num_anchors: K.
        device: where the bank lives (the training device avoids a host copy per step).
        dtype: storage dtype of B (float32, bfloat16 or float16); updates compute in float32.
        num_shards: W, the number of processes the bank is split over (1: this process holds it all).
        shard: this process's shard, in [0, W).
    """

    value_key = "scores"
    description = "score bank"
    file_stem = "score_bank"

    def __init__(
        self,
        num_samples: int,
        num_anchors: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        num_shards: int = 1,
        shard: int = 0,
    ):
        super().__init__(
            num_samples, (num_anchors,), device=device, dtype=dtype, num_shards=num_shards, shard=shard
        )

    @property
    def scores(self) -> torch.Tensor:
        """(rows, K) this shard of the bank B (rows of samples not seen yet are 0); all of B when W = 1."""
        return self.values

    @torch.no_grad()
    def assignments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices (N_seen,), anchors (N_seen,)): this shard's samples seen so far and their argmax_k B_i."""
        anchors = self.scores.argmax(dim=1)  # (rows,): no copy of the bank
        return self.sample_indices()[self.seen], anchors[self.seen]

    @torch.no_grad()
    def sum_over_shards(self, counts: torch.Tensor) -> torch.Tensor:
        """`counts` summed over all shards (an all-reduce when W > 1: every process must call it)."""
        if self.num_shards > 1:
            dist.all_reduce(counts)
        return counts

    @torch.no_grad()
    def local_occupancy(self) -> torch.Tensor:
        """(K,) how many samples of this shard seen so far have their bank argmax on each anchor."""
        return torch.bincount(self.assignments()[1], minlength=self.scores.shape[1])

    @torch.no_grad()
    def occupancy(self) -> torch.Tensor:
        """(K,) how many samples seen so far (all shards) have their bank argmax on each anchor."""
        return self.sum_over_shards(self.local_occupancy())

    @torch.no_grad()
    def estimate_prior(self, floor: float = 0.0) -> torch.Tensor:
        """pi = normalise(histogram of argmax_k B_i over the samples seen + floor), shape (K,).

        Uniform when no sample has been seen and `floor` is 0.
        """
        num_anchors = self.scores.shape[1]
        counts = self.occupancy().float() + floor
        if counts.sum() <= 0:
            return torch.full((num_anchors,), 1.0 / num_anchors, device=counts.device)
        return counts / counts.sum()


def bank_bytes(num_samples: int, num_anchors: int, num_shards: int, dtype: str) -> int:
    """Bytes of the largest shard of a bank: ceil(N / W) rows of K scores in `dtype` and a seen flag."""
    rows = shard_rows(num_samples, num_shards, 0)  # shard 0 is never smaller than the others
    return rows * (num_anchors * BANK_DTYPES[dtype].itemsize + 1)


def build_score_bank(
    accelerator: Accelerator,
    num_samples: int,
    num_anchors: int,
    sharding: str = "sharded",
    dtype: str = "float32",
) -> ScoreBank:
    """The run's score bank on `accelerator.device`, checkpointed with `accelerator.save_state`.

    "sharded": process r of W holds the samples i with i % W == r; "replicated": every process
    holds all of them. Through Accelerate's save/load pre-hooks every process writes its shard
    (a replicated bank: the main process, once) beside the checkpoint's other files, and
    `load_state` reads it back, re-sharding when the checkpoint was written by another number
    of processes (`PerSampleMovingAverage.load_shards`).

    Raises:
        ValueError: naming `--bank_sharding` or `--bank_dtype`, the value and what is allowed.
    """
    if sharding not in BANK_SHARDINGS:
        raise ValueError(f"--bank_sharding={sharding!r} is invalid: must be one of {BANK_SHARDINGS}.")
    if dtype not in BANK_DTYPES:
        raise ValueError(f"--bank_dtype={dtype!r} is invalid: must be one of {tuple(BANK_DTYPES)}.")
    num_shards, shard = (
        (accelerator.num_processes, accelerator.process_index) if sharding == "sharded" else (1, 0)
    )
    bank = ScoreBank(num_samples, num_anchors, accelerator.device, BANK_DTYPES[dtype], num_shards, shard)
    writes = accelerator.process_index < num_shards

    def save(models, weights, output_dir: str) -> None:
        if writes:
            bank.save_shard(output_dir)

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(lambda models, input_dir: bank.load_shards(input_dir))
    return bank
