"""BCL: the loss memory, and augmentation strength that grows with the remembered loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gh_hf.data import MemoryBoostedTwoViewTransform, build_pretrain_transform
from gh_hf.training.bcl import LossMemory


def test_loss_memory_moving_average_matches_loop():
    memory, reference, seen = LossMemory(20, momentum=0.97), torch.zeros(20), [False] * 20
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        indices = torch.randperm(20, generator=generator)[:8]
        losses = torch.rand(8, generator=generator) * 5
        memory.update(indices, losses)
        for i, value in zip(indices.tolist(), losses, strict=True):
            reference[i] = 0.97 * reference[i] + 0.03 * value if seen[i] else value
            seen[i] = True
    torch.testing.assert_close(memory.losses, reference)


def test_strength_is_monotone_in_remembered_loss():
    memory = LossMemory(6)
    memory.update(torch.arange(5), torch.tensor([1.0, 4.0, 2.0, 3.0, 5.0]))
    strengths = memory.strengths()
    assert strengths.tolist() == pytest.approx([0.0, 0.75, 0.25, 0.5, 1.0, 0.0])  # index 5 never seen
    order = memory.losses[:5].argsort()
    assert torch.all(strengths[:5][order].diff() >= 0)


def test_loss_memory_state_round_trip():
    memory = LossMemory(4)
    memory.update(torch.tensor([1, 2]), torch.tensor([0.5, 1.5]))
    memory.next_epoch_strengths()
    # The keys checkpoints have always held, so runs saved before the shared moving average resume.
    assert set(memory.state_dict()) == {"losses", "seen", "current_strengths"}
    restored = LossMemory(4)
    restored.load_state_dict(memory.state_dict())
    assert torch.equal(restored.losses, memory.losses) and torch.equal(restored.seen, memory.seen)
    assert torch.equal(restored.current_strengths, torch.tensor([0.0, 0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="BCL loss memory has shape"):
        LossMemory(5).load_state_dict(memory.state_dict())


def _image() -> Image.Image:
    rng = np.random.RandomState(0)
    return Image.fromarray(rng.randint(0, 255, size=(28, 28), dtype=np.uint8), mode="L")


def test_high_loss_sample_gets_stronger_augmentation():
    identity = build_pretrain_transform(28, 1, (0.5,), (0.5,))
    transform = MemoryBoostedTwoViewTransform(
        lambda image: torch.from_numpy(np.asarray(image, dtype=np.float32)), 2, seed=0
    )
    transform.set_strengths(torch.tensor([0.0, 1.0]))
    assert transform.magnitude(0) == 0 and transform.magnitude(1) == 30
    image = _image()
    base = torch.from_numpy(np.asarray(image, dtype=np.float32))
    weak = transform(image, index=0)
    strong = transform(image, index=1)
    assert torch.equal(weak[0], base)  # strength 0: no RandAugment at all
    # Distortion grows with strength between two boosted samples (strength 0 is 0 by construction),
    # measured over several epochs' draws.
    transform.set_strengths(torch.tensor([0.2, 1.0]))
    distortion = []
    for index in (0, 1):
        diffs = [(transform(image, index, epoch) - base).abs().mean().item() for epoch in range(16)]
        distortion.append(np.mean(diffs))
    assert 0 < distortion[0] < distortion[1]
    assert strong.shape == (2, 28, 28)
    # With the real SSL view the output keeps its shape and dtype.
    real = MemoryBoostedTwoViewTransform(identity, 2, seed=0)
    real.set_strengths(torch.tensor([0.2, 1.0]))
    views = real(image, index=1)
    assert views.shape == (2, 1, 28, 28) and views.dtype == torch.float32
    assert torch.equal(views, real(image, index=1))  # deterministic per (seed, epoch, index)
