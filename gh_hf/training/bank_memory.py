"""The score bank's memory per process: the model of docs/memory.md, a measured point, and what a
low-precision bank costs the prior.

`scripts/bench_bank_memory.py` is the thin caller of the three pieces:

- `memory_table`: bytes per process of the bank (`score_bank.bank_bytes`) and of the model and its
  optimizer, for named datasets on 8 / 64 / 512 processes, replicated or sharded, float32 or bfloat16.
- `measure_bank_rss`: peak resident memory of one synthetic epoch of bank updates from gathered
  global batches, then the prior (run on every process under `accelerate launch`).
- `dtype_error`: a bfloat16 / float16 bank against a float32 one over a simulated schedule: the
  prior's total-variation distance and the share of samples whose argmax agrees.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from gh_hf.training.prior import total_variation
from gh_hf.training.score_bank import BANK_DTYPES, ScoreBank, bank_bytes, build_score_bank

if TYPE_CHECKING:
    from accelerate import Accelerator

    from gh_hf.configuration_gh import GHConfig

# (name, N_train, K): the sizes of docs/memory.md's table.
DATASETS = (
    ("ImageNet-LT", 115_846, 1000),
    ("ImageNet-1k", 1_281_167, 1000),
    ("ImageNet-21k", 14_197_122, 1000),
    ("ImageNet-21k, K = 21,841 classes", 14_197_122, 21_841),
    ("100M-image crawl", 100_000_000, 1000),
)
WORLD_SIZES = (8, 64, 512)


# ---- the memory model --------------------------------------------------------------------------
def model_bytes(config: GHConfig, num_processes: int) -> dict[str, int]:
    """Bytes per process of the model and SGD's state, float32 (independent of N).

    Weights and buffers (the anchors: K x d), gradients and the momentum buffer, one float each
    per parameter; with W > 1, DDP's gradient buckets hold one more copy of the gradients.
    """
    from gh_hf.modeling_gh_pretraining import GHForPreTraining  # builds a model: only when asked

    model = GHForPreTraining(config)
    parameters = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    copies = 3 + (num_processes > 1)  # weights, gradients, momentum (+ DDP buckets)
    return {"parameters": parameters, "buffers": buffers, "bytes": 4 * (copies * parameters + buffers)}


def memory_table(model: dict[str, int], datasets=DATASETS, world_sizes=WORLD_SIZES) -> list[dict[str, Any]]:
    """One row per dataset and number of processes: bank bytes per process, replicated vs sharded,
    float32 vs bfloat16, and the model + optimizer bytes (`model_bytes` on W > 1 processes)."""
    rows = []
    for name, num_samples, num_anchors in datasets:
        for world in world_sizes:
            row: dict[str, Any] = {"dataset": name, "num_samples": num_samples, "num_anchors": num_anchors}
            row["num_processes"] = world
            for sharding, shards in (("replicated", 1), ("sharded", world)):
                for dtype in ("float32", "bfloat16"):
                    row[f"bank_{sharding}_{dtype}"] = bank_bytes(num_samples, num_anchors, shards, dtype)
            row["model_and_optimizer"] = model["bytes"]
            rows.append(row)
    return rows


# ---- the measured point ------------------------------------------------------------------------
def current_rss_bytes() -> int:
    """Resident memory of this process now (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_bank_rss(
    accelerator: Accelerator,
    num_samples: int,
    num_anchors: int,
    sharding: str,
    dtype: str = "float32",
    per_process_batch: int = 4096,
    seed: int = 0,
) -> dict[str, Any]:
    """One epoch of bank updates from gathered global batches, then the prior; this process's memory.

    Every sample is seen once (a shuffled order, the same on every process; each process gives
    its slice of each global batch, with peaked synthetic scores), as in a training epoch.

    Returns:
        This process's resident memory before the bank, after allocating it and at its peak,
        the bank's bytes, the seconds of the epoch and the samples it saw (summed over shards).
    """
    from gh_hf.training.trainer import update_bank_globally  # the loop's own update; heavy import

    world, rank = accelerator.num_processes, accelerator.process_index
    before = current_rss_bytes()
    bank = build_score_bank(accelerator, num_samples, num_anchors, sharding, dtype)
    allocated = current_rss_bytes()
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(num_samples, generator=generator)
    global_batch = world * per_process_batch
    start = time.perf_counter()
    for step in range(-(-num_samples // global_batch)):
        positions = torch.arange(step * global_batch, (step + 1) * global_batch) % num_samples  # wraps once
        indices = order[positions][rank * per_process_batch : (rank + 1) * per_process_batch]
        local = torch.Generator().manual_seed(seed + 1 + step * world + rank)
        scores = torch.rand(per_process_batch, num_anchors, generator=local)
        scores[torch.arange(per_process_batch), indices % num_anchors] += 1.0  # peaked
        update_bank_globally(accelerator, bank, indices, torch.nn.functional.normalize(scores, dim=1), 0.9)
    prior = bank.estimate_prior()
    seconds = time.perf_counter() - start
    return {
        "rank": rank,
        "rss_before_bank": before,
        "rss_after_allocation": allocated,
        "peak_rss": peak_rss_bytes(),
        "bank_bytes": bank.scores.nbytes + bank.seen.nbytes,
        "epoch_s": seconds,
        "samples_seen": int(bank.sum_over_shards(bank.seen.sum())),
        "prior_sum": float(prior.sum()),
    }


# ---- a low-precision bank against float32 ------------------------------------------------------
@dataclass(frozen=True)
class BankSchedule:
    """A bank's two stages: epochs and momentum of the SSL warm-up, then of the GH stage."""

    name: str
    warmup_epochs: int
    warmup_momentum: float
    gh_epochs: int
    gh_momentum: float

    def momenta(self) -> Iterator[float]:
        yield from [self.warmup_momentum] * self.warmup_epochs + [self.gh_momentum] * self.gh_epochs


def long_tailed_anchors(num_samples: int, num_anchors: int, imbalance_ratio: float) -> torch.Tensor:
    """(N,) each sample's own anchor, anchor k drawn with weight ratio^(-k / (K - 1)) (the exp profile)."""
    weights = imbalance_ratio ** (-torch.arange(num_anchors) / max(num_anchors - 1, 1))
    counts = (weights / weights.sum() * num_samples).floor().long()
    counts[0] += num_samples - counts.sum()
    return torch.repeat_interleave(torch.arange(num_anchors), counts)


def simulated_scores(
    anchors: torch.Tensor, num_anchors: int, progress: float, noise: tuple[torch.Tensor, torch.Tensor],
    generator: torch.Generator, view_noise: float,
) -> torch.Tensor:  # fmt: skip
    """(N, K) one epoch's view-1 scores s = normalize(z M^T) of embeddings z = m_c + offset + view noise.

    M is a simplex ETF, so <m_c, m_k> is 1 on the sample's anchor and -1/(K-1) elsewhere, and
    isotropic noise in z gives scores with noise of covariance (K/(K-1))(I - 11^T/K); the
    per-sample offset moves from `noise[0]` to `noise[1]` as training progresses (0 -> 1).
    """
    num_samples = len(anchors)
    clean = torch.full((num_samples, num_anchors), -1.0 / (num_anchors - 1))
    clean[torch.arange(num_samples), anchors] = 1.0
    offset = (1 - progress) * noise[0] + progress * noise[1]
    fresh = view_noise * torch.randn(num_samples, num_anchors, generator=generator)
    raw = offset + fresh
    raw = (raw - raw.mean(dim=1, keepdim=True)) * (num_anchors / (num_anchors - 1)) ** 0.5
    return torch.nn.functional.normalize(clean + raw, dim=1)


def dtype_error(
    schedule: BankSchedule,
    num_samples: int,
    num_anchors: int,
    dtypes: tuple[str, ...] = ("bfloat16", "float16"),
    offset_noise: float = 0.35,
    view_noise: float = 0.25,
    imbalance_ratio: float = 100.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Banks in `dtypes` and in float32 fed the same simulated scores over `schedule`; at the end,
    each low-precision bank's prior (floor 0) against the float32 one.

    Returns:
        Per dtype: `prior_tv` (total variation between the priors), `argmax_agreement` (share of
        samples with the same bank argmax), `max_abs_diff` of the banks, and `entries_moved_last_epoch`
        (share of bank entries the last update changed; float32's: `float32_entries_moved_last_epoch`).
    """
    generator = torch.Generator().manual_seed(seed)
    anchors = long_tailed_anchors(num_samples, num_anchors, imbalance_ratio)
    offsets = (
        offset_noise * torch.randn(num_samples, num_anchors, generator=generator),
        offset_noise * torch.randn(num_samples, num_anchors, generator=generator),
    )
    banks = {
        name: ScoreBank(num_samples, num_anchors, dtype=BANK_DTYPES[name]) for name in ("float32", *dtypes)
    }
    indices, momenta = torch.arange(num_samples), list(schedule.momenta())
    for epoch, momentum in enumerate(momenta):
        scores = simulated_scores(
            anchors, num_anchors, epoch / max(len(momenta) - 1, 1), offsets, generator, view_noise
        )
        previous = (
            {name: bank.scores.clone() for name, bank in banks.items()} if epoch == len(momenta) - 1 else {}
        )
        for bank in banks.values():
            bank.update(indices, scores, momentum)
    moved = {name: float((bank.scores != previous[name]).float().mean()) for name, bank in banks.items()}
    reference = banks["float32"]
    rows = []
    for name in dtypes:
        bank = banks[name]
        rows.append(
            {
                "schedule": schedule.name,
                "num_samples": num_samples,
                "num_anchors": num_anchors,
                "dtype": name,
                "prior_tv": total_variation(bank.estimate_prior(), reference.estimate_prior()),
                "argmax_agreement": float(
                    (bank.scores.argmax(1) == reference.scores.argmax(1)).float().mean()
                ),
                "max_abs_diff": float((bank.scores.float() - reference.scores).abs().max()),
                "entries_moved_last_epoch": moved[name],
                "float32_entries_moved_last_epoch": moved["float32"],
            }
        )
    return rows
