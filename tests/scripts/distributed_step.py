"""One GH training step on W gloo processes vs one process on the concatenated batch.

Run with `accelerate launch --multi_gpu --num_processes 2 tests/scripts/distributed_step.py OUT [BASES]`
(BASES: comma-separated of simclr, the default, focal, sdclr and bcl; each is checked in turn). The
reference is written out by hand from the bases' definitions: NT-Xent (focal NT-Xent) over the global
batch; SDCLR's dense view 1 against the pruned view 2 and back, each side detached; BCL's per-sample
losses, which feed its loss memory. Rank 0 writes OUT (JSON: base -> the largest differences); the
pytest test asserts on them.
"""

from __future__ import annotations

import json
import sys

import torch
from accelerate import Accelerator

from gh_hf import GHConfig, GHForPreTraining
from gh_hf.dist import default_accelerator_kwargs, ends_process_group
from gh_hf.losses import GHLoss, focal_nt_xent, nt_xent, swapped_prediction
from gh_hf.training.bcl import LossMemory
from gh_hf.training.score_bank import ScoreBank
from gh_hf.training.trainer import update_bank_globally

PER_PROCESS = 6
GH_WEIGHT = 0.7


def ssl_reference(config: GHConfig, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """(B,) the base's per-image loss on this process's whole batch (no gather: it runs on every rank)."""
    temperature = config.contrastive_temperature
    if config.ssl_method == "focal":
        return focal_nt_xent(z1, z2, temperature, config.focal_gamma, reduction="per_sample")
    if config.ssl_method == "sdclr":  # dense vs detached pruned + pruned vs detached dense
        return nt_xent(z1, z2.detach(), config.contrastive_temperature, reduction="per_sample") + nt_xent(
            z2, z1.detach(), config.contrastive_temperature, reduction="per_sample"
        )
    return nt_xent(z1, z2, config.contrastive_temperature, reduction="per_sample")


def project(model: GHForPreTraining, part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Projections of one process-sized slice's two views; SDCLR's view 2 goes through the pruned branch."""
    if model.pruned is None:
        z = model.projector(model.encoder(torch.cat([part[:, 0], part[:, 1]])).pooler_output)
        return z[: len(part)], z[len(part) :]
    dense = model.projector(model.encoder(part[:, 0]).pooler_output)
    return dense, model.pruned(model.encoder, model.projector, part[:, 1])[1]


def reference(model: GHForPreTraining, pixel_values: torch.Tensor, prior: torch.Tensor):
    """Single process, global batch; BatchNorm statistics per process-sized slice (as per-process BN)."""
    z1, z2 = zip(*(project(model, part) for part in pixel_values.split(PER_PROCESS)), strict=True)
    z1, z2 = torch.cat(z1), torch.cat(z2)
    per_sample = ssl_reference(model.config, z1, z2)
    gh = GHLoss(model.config.sinkhorn_epsilon, model.config.sinkhorn_iterations, model.config.gh_temperature)
    scores_1, scores_2 = model.anchor_scores(z1), model.anchor_scores(z2)
    if model.pruned is None:
        gh_loss = gh(scores_1, scores_2, prior)
    else:  # each branch predicts the other's allocation, the other side detached
        allocation_1, allocation_2 = gh.allocate(torch.stack([scores_1, scores_2]), prior)
        gh_loss = swapped_prediction(
            scores_1, scores_2.detach(), allocation_1, allocation_2, gh.temperature
        ) + swapped_prediction(scores_2, scores_1.detach(), allocation_2, allocation_1, gh.temperature)
    return per_sample.mean() + GH_WEIGHT * gh_loss, scores_1, per_sample


def check_step(accelerator: Accelerator, ssl_method: str) -> dict | None:
    """One base's distributed step against its single-process reference; the result on rank 0."""
    world, rank = accelerator.num_processes, accelerator.process_index
    config = GHConfig(
        backbone="resnet18",
        backbone_kwargs={"channels": [8, 16, 32, 64]},
        in_chans=1,
        image_size=12,
        projection_dim=16,
        num_anchors=8,
        ssl_method=ssl_method,
    )
    torch.manual_seed(0)
    model = GHForPreTraining(config)
    model.refresh_pruning_masks()  # SDCLR: prune 90% now (the masks start as ones); no-op otherwise
    prior = torch.tensor([0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02])
    model.class_prior.copy_(prior)
    reference_model = GHForPreTraining(config)
    reference_model.load_state_dict(model.state_dict())
    pixel_values = torch.randn(world * PER_PROCESS, 2, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    indices = torch.arange(world * PER_PROCESS) * 3

    ddp_model = accelerator.prepare(model)
    local = slice(rank * PER_PROCESS, (rank + 1) * PER_PROCESS)
    out = ddp_model(pixel_values[local], gh_weight=GH_WEIGHT)
    accelerator.backward(out.loss)
    mean_loss = accelerator.gather(out.loss.detach()[None]).mean()

    expected_loss, expected_scores, expected_per_sample = reference(reference_model, pixel_values, prior)
    expected_loss.backward()
    grad_diff = max(
        (p.grad - q.grad).abs().max().item()
        for p, q in zip(
            accelerator.unwrap_model(ddp_model).parameters(), reference_model.parameters(), strict=True
        )
    )
    grad_scale = max(q.grad.abs().max().item() for q in reference_model.parameters())

    bank = ScoreBank(3 * world * PER_PROCESS, config.num_anchors)
    update_bank_globally(accelerator, bank, indices[local], out.anchor_scores[:, 0], momentum=0.9)
    memory = LossMemory(3 * world * PER_PROCESS)  # BCL's: fed the gathered per-sample losses
    memory.update(*accelerator.gather((indices[local], out.ssl_loss_per_sample.detach())))
    all_memories = accelerator.gather(memory.losses[None])
    all_banks = accelerator.gather(bank.scores[None])
    all_priors = accelerator.gather(bank.estimate_prior()[None])
    if not accelerator.is_main_process:
        return None
    return {
        "world": world,
        "loss": mean_loss.item(),
        "expected_loss": expected_loss.item(),
        "max_grad_diff": grad_diff,
        "max_grad": grad_scale,
        "bank_vs_reference": (bank.scores[indices] - expected_scores.detach()).abs().max().item(),
        "banks_identical": bool((all_banks == all_banks[0]).all()),
        "priors_identical": bool((all_priors == all_priors[0]).all()),
        "seen": int(bank.seen.sum()),
        "memory_vs_reference": (memory.losses[indices] - expected_per_sample.detach()).abs().max().item(),
        "memories_identical": bool((all_memories == all_memories[0]).all()),
        "memory_seen": int(memory.seen.sum()),
    }


@ends_process_group
def main(out_path: str, ssl_methods: str = "simclr") -> None:
    accelerator = Accelerator(**default_accelerator_kwargs())
    results = {method: check_step(accelerator, method) for method in ssl_methods.split(",")}
    if accelerator.is_main_process:
        with open(out_path, "w") as handle:
            json.dump(results, handle)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(*sys.argv[1:])
