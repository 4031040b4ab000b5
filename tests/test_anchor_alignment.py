"""`--anchor_alignment kmeans`: the ETF is rotated onto the projections' K-means centroids at the GH start."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from gh_hf.geometry import simplex_etf
from gh_hf.training import Pretrainer, parse_pretrain_args
from gh_hf.training.anchor_alignment import aligned_anchors, procrustes_rotation
from gh_hf.training.prior import anchor_purity, read_refreshes
from tests.conftest import TINY_RUN


def _random_rotation(dim: int, seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(
        torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    )
    return q * torch.sign(torch.diagonal(r))


def test_procrustes_reaches_a_rotated_and_permuted_etf_exactly_whatever_the_matching():
    etf = simplex_etf(5, 8, 0).double()
    target = (etf @ _random_rotation(8, 1))[torch.tensor([3, 0, 4, 1, 2])]  # another orientation, shuffled
    rotation = procrustes_rotation(etf, target)
    torch.testing.assert_close(rotation @ rotation.T, torch.eye(8, dtype=torch.float64))
    # Anchor k is sent to row k of the target although the rows were shuffled: a simplex's vertices
    # can be permuted by an orthogonal map, so the matching costs nothing.
    torch.testing.assert_close(etf @ rotation, target, atol=1e-6, rtol=0)


def test_aligned_anchors_follow_clusters_that_the_fixed_frame_cuts_across():
    generator = torch.Generator().manual_seed(0)
    anchors = simplex_etf(4, 16, 0)
    centres = torch.nn.functional.normalize(torch.randn(4, 16, generator=generator), dim=1)
    labels = torch.tensor([0] * 300 + [1] * 150 + [2] * 40 + [3] * 10)
    projections = 3 * centres[labels] + 0.2 * torch.randn(len(labels), 16, generator=generator)
    rotated, clusters = aligned_anchors(anchors, projections, seed=0)
    torch.testing.assert_close(rotated @ rotated.T, anchors @ anchors.T, atol=1e-5, rtol=0)  # still the ETF
    assert rotated.dtype == anchors.dtype and not torch.allclose(rotated, anchors)
    assert anchor_purity(clusters, labels, 4)[1] == pytest.approx(1.0)
    after = (projections @ rotated.T).argmax(1)
    assert anchor_purity(after, labels, 4)[1] == pytest.approx(1.0)
    assert len(after.unique()) == 4  # every cluster on its own anchor, the 10-sample one included


def test_a_bad_anchor_alignment_is_named():
    with pytest.raises(
        ValueError, match=r"--anchor_alignment='procrustes' is invalid .*\('none', 'kmeans'\)"
    ):
        parse_pretrain_args([*TINY_RUN, "--anchor_alignment", "procrustes"])


def _train(argv: list[str]) -> Pretrainer:
    from accelerate.state import AcceleratorState

    trainer = Pretrainer(*parse_pretrain_args(argv))
    try:
        trainer.train()
    finally:
        AcceleratorState._reset_state(True)
    return trainer


@pytest.mark.slow
def test_a_fork_aligns_its_anchors_once_at_the_gh_start_and_its_bank_restarts_in_the_new_frame(tmp_path):
    tiny = [*TINY_RUN, "--num_epochs", "3", "--mixed_precision", "no", "--checkpoint_every_epochs", "1"]
    _train([*tiny, "--save_warmup_checkpoint", "true", "--output_dir", str(tmp_path / "source")])
    warmup = tmp_path / "source" / "checkpoints" / "warmup"
    trainer = _train(
        [*tiny, "--anchor_alignment", "kmeans", "--resume_from_checkpoint", str(warmup), "--output_dir",
         str(tmp_path / "aligned")]
    )  # fmt: skip
    log = [json.loads(line) for line in (tmp_path / "aligned" / "log.jsonl").read_text().splitlines()]
    (record,) = [entry for entry in log if "anchor_alignment" in entry]  # once, at the first GH epoch
    assert record["epoch"] == 1 and record["anchor_alignment"] == "kmeans"
    assert {"alignment_purity_before", "alignment_purity_after", "alignment_purity_kmeans"} <= set(record)
    # The first refresh reads the bank written by the alignment's pass, in the new frame.
    first_refresh = read_refreshes(tmp_path / "aligned" / "log.jsonl")[0]
    assert first_refresh["epoch"] == 1
    assert first_refresh["anchor_occupancy"] == record["anchor_occupancy_aligned"]
    initial = load_file(str(warmup / "model.safetensors"))["anchors"]
    final = trainer.unwrapped().anchors.cpu()
    assert not torch.allclose(final, initial)
    torch.testing.assert_close(final @ final.T, initial @ initial.T, atol=1e-5, rtol=0)  # a rotated ETF
    # Resumed at the last checkpoint (inside the GH stage), a run keeps its anchors: no second alignment.
    steps = sorted((tmp_path / "aligned" / "checkpoints").glob("step_*"))
    torch.testing.assert_close(load_file(str(steps[-1] / "model.safetensors"))["anchors"], final)
