"""Gradient accumulation: one optimizer step per N micro-batches, on the mean of their gradients.

A contrastive loss is not a sum over samples (each sample's negatives are its batch), so N
accumulated micro-batches of B are *not* one batch of N x B: the test pins down what
accumulation does mean here, the step of the averaged micro-batch losses.
"""

from __future__ import annotations

import copy

import torch

from gh_hf.training import Pretrainer, parse_pretrain_args
from tests.conftest import TINY_RUN


def test_accumulated_micro_batches_make_one_step_on_their_mean_gradient(
    tmp_path,
):  # accelerate state: conftest resets it
    argv = [*TINY_RUN, "--gradient_accumulation_steps", "2", "--mixed_precision", "no"]
    trainer = Pretrainer(*parse_pretrain_args([*argv, "--output_dir", str(tmp_path)]))
    trainer.setup()
    assert trainer.total_steps == 2 * (trainer.steps_per_epoch // 2)  # the schedule counts optimizer steps
    model = trainer.unwrapped()
    reference = copy.deepcopy(model)
    start = [p.detach().clone() for p in model.parameters()]
    trainer.two_views.set_epoch(0)
    batches = iter(trainer.loader)
    micro_batches = [next(batches), next(batches)]

    trainer.training_step(micro_batches[0])
    assert not trainer.accelerator.sync_gradients
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), start, strict=True))  # no step yet
    trainer.training_step(micro_batches[1])
    assert trainer.accelerator.sync_gradients

    # The same step by hand: mean of the two micro-batch gradients, one SGD step at the step's LR.
    group = trainer.optimizer.param_groups[0]
    assert trainer.args.gh_warmup_epochs >= 1  # epoch 0: the SSL warm-up, GH weight 0
    for batch in micro_batches:
        (reference(trainer.views_of(batch), gh_weight=0.0).loss / 2).backward()
    torch.optim.SGD(
        reference.parameters(), lr=group["lr"], momentum=group["momentum"], weight_decay=group["weight_decay"]
    ).step()
    moved = 0.0
    for p, q, p0 in zip(model.parameters(), reference.parameters(), start, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        moved = max(moved, (p - p0).abs().max().item())
    assert moved > 1e-4  # the step happened
