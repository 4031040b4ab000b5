"""The score bank, sharded: row ownership, exactness against the replicated bank, dtypes, shard files."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gh_hf.training import ScoreBank, parse_pretrain_args
from gh_hf.training.prior import anchor_class_counts, prior_diagnostics
from gh_hf.training.score_bank import bank_bytes
from tests.conftest import accelerate_command

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": str(ROOT)}  # fmt: skip


def shards(num_samples: int, num_anchors: int, world: int, **kwargs) -> list[ScoreBank]:
    return [ScoreBank(num_samples, num_anchors, num_shards=world, shard=r, **kwargs) for r in range(world)]


def peaked_batches(num_samples: int, num_anchors: int, steps: int, batch: int, seed: int = 0):
    """(indices, scores) global batches: L2-normalised scores peaked on a per-sample anchor, duplicates
    allowed with identical values (as a padded last batch gathers them)."""
    generator = torch.Generator().manual_seed(seed)
    anchor_of = torch.randint(0, num_anchors, (num_samples,), generator=generator)
    for _ in range(steps):
        indices = torch.randperm(num_samples, generator=generator)[:batch]
        indices = torch.cat([indices, indices[:2]])  # two duplicates
        scores = torch.nn.functional.one_hot(anchor_of[indices], num_anchors) + 0.8 * torch.rand(
            len(indices), num_anchors, generator=generator
        )
        scores[-2:] = scores[:2]
        yield indices, torch.nn.functional.normalize(scores.float(), dim=1)


# ---- ownership --------------------------------------------------------------------------------
@pytest.mark.parametrize("num_samples", [1, 7, 10, 64])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_partition_the_samples_by_index_modulo_world(num_samples, world):
    banks = shards(num_samples, 3, world)
    owned = [bank.sample_indices() for bank in banks]
    assert torch.equal(torch.cat(owned).sort().values, torch.arange(num_samples))
    for rank, indices in enumerate(owned):
        assert (indices % world == rank).all()
    sizes = [len(indices) for indices in owned]
    assert max(sizes) - min(sizes) <= 1


def test_bad_shard_layout_and_dtype_name_the_field():
    with pytest.raises(ValueError, match="num_shards=0"):
        ScoreBank(10, 3, num_shards=0)
    with pytest.raises(ValueError, match="shard=2 .*num_shards=2"):
        ScoreBank(10, 3, num_shards=2, shard=2)
    with pytest.raises(ValueError, match="dtype=torch.int64"):
        ScoreBank(10, 3, dtype=torch.int64)


@pytest.mark.parametrize(
    ("argv", "field"),
    [(["--bank_dtype", "float64"], "bank_dtype"), (["--bank_sharding", "split"], "bank_sharding")],
)
def test_bad_bank_arguments_name_the_argument_and_what_is_allowed(argv, field):
    with pytest.raises(ValueError, match=rf"--{field}='{argv[1]}' is invalid.*must be one of"):
        parse_pretrain_args(argv)


def test_bank_arguments_default_to_a_sharded_float32_bank():
    args = parse_pretrain_args([])[2]
    assert (args.bank_sharding, args.bank_dtype) == ("sharded", "float32")


# ---- exactness against the replicated bank ----------------------------------------------------
@pytest.mark.parametrize("world", [2, 3])
def test_sharded_banks_hold_the_replicated_rows_bitwise(world):
    replicated, banks = ScoreBank(50, 6), shards(50, 6, world)
    for step, (indices, scores) in enumerate(peaked_batches(50, 6, steps=12, batch=16)):
        momentum = 0.5 if step < 6 else 0.99
        replicated.update(indices, scores, momentum)
        for bank in banks:
            bank.update(indices, scores, momentum)
    for bank in banks:
        rows = bank.sample_indices()
        assert torch.equal(bank.scores, replicated.scores[rows]) and torch.equal(
            bank.seen, replicated.seen[rows]
        )
    assert torch.equal(sum(bank.local_occupancy() for bank in banks), replicated.occupancy())
    indices, anchors = (
        torch.cat(parts) for parts in zip(*(bank.assignments() for bank in banks), strict=True)
    )
    order = indices.argsort()
    assert torch.equal(indices[order], replicated.assignments()[0])
    assert torch.equal(anchors[order], replicated.assignments()[1])


def test_a_shard_holds_its_share_of_the_bank_and_bank_bytes_says_so():
    for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16"), (torch.float16, "float16")):
        replicated = ScoreBank(1001, 100, dtype=dtype)
        replicated_bytes = replicated.scores.nbytes + replicated.seen.nbytes
        assert replicated_bytes == bank_bytes(1001, 100, 1, name) == 1001 * (100 * dtype.itemsize + 1)
        banks = shards(1001, 100, 4, dtype=dtype)
        assert [bank.scores.shape[0] for bank in banks] == [251, 250, 250, 250]
        held = [bank.scores.nbytes + bank.seen.nbytes for bank in banks]
        assert max(held) == bank_bytes(1001, 100, 4, name)  # the largest shard
        assert max(held) <= replicated_bytes / 4 + (100 * dtype.itemsize + 1)  # 1/W, up to one row


def test_a_shard_ignores_the_rows_it_does_not_own():
    bank = ScoreBank(6, 2, num_shards=2, shard=1)  # owns samples 1, 3, 5
    bank.update(torch.tensor([0, 1, 2, 5]), torch.tensor([[1.0, 0], [0, 1], [1, 0], [0.5, 0.5]]), 0.9)
    assert bank.seen.tolist() == [True, False, True]
    torch.testing.assert_close(bank.scores, torch.tensor([[0.0, 1], [0, 0], [0.5, 0.5]]))


# ---- storage dtype --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_bank_rounds_the_float32_average_once_per_update(dtype):
    bank = ScoreBank(20, 5, dtype=dtype)
    reference, seen = torch.zeros(20, 5), torch.zeros(20, dtype=torch.bool)
    for indices, scores in peaked_batches(20, 5, steps=8, batch=8):
        bank.update(indices, scores, momentum=0.7)
        unique = torch.unique(indices)
        position = {int(i): p for p, i in enumerate(indices.tolist())}
        for i in unique.tolist():
            s = scores[position[i]]
            reference[i] = (0.7 * reference[i] + 0.3 * s if seen[i] else s).to(dtype).float()
            seen[i] = True
    assert bank.scores.dtype == dtype
    assert torch.equal(bank.scores.float(), reference)


# ---- diagnostics from counts ------------------------------------------------------------------
def test_diagnostics_from_summed_shard_counts_equal_the_replicated_ones():
    labels = torch.randint(0, 4, (40,), generator=torch.Generator().manual_seed(1))
    replicated, banks = ScoreBank(40, 5), shards(40, 5, 3)
    for indices, scores in peaked_batches(40, 5, steps=6, batch=20):
        for bank in [replicated, *banks]:
            bank.update(indices, scores, 0.9)

    def counts_of(bank):
        indices, anchors = bank.assignments()
        return anchor_class_counts(anchors, labels[indices], 5, num_classes=4)

    summed = sum(counts_of(bank) for bank in banks)
    assert torch.equal(summed, counts_of(replicated))
    prior, previous = replicated.estimate_prior(), torch.full((5,), 0.2)
    assert prior_diagnostics(prior, previous, summed.sum(1), summed) == prior_diagnostics(
        prior, previous, replicated.occupancy(), counts_of(replicated)
    )


# ---- shard files ------------------------------------------------------------------------------
def filled(world: int, dtype: torch.dtype = torch.float32) -> tuple[ScoreBank, list[ScoreBank]]:
    replicated, banks = ScoreBank(37, 4, dtype=dtype), shards(37, 4, world, dtype=dtype)
    for indices, scores in peaked_batches(37, 4, steps=3, batch=10):  # some samples never seen
        for bank in [replicated, *banks]:
            bank.update(indices, scores, 0.9)
    return replicated, banks


def test_shards_round_trip_bitwise_on_the_same_world_size(tmp_path):
    _, banks = filled(3, torch.bfloat16)
    for bank in banks:
        bank.save_shard(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"score_bank-shard{r:05d}-of-00003.safetensors" for r in range(3)
    ]
    for bank in banks:
        fresh = ScoreBank(37, 4, num_shards=3, shard=bank.shard, dtype=torch.bfloat16)
        fresh.load_shards(tmp_path)
        assert torch.equal(fresh.scores, bank.scores) and torch.equal(fresh.seen, bank.seen)


@pytest.mark.parametrize(("saved", "resumed"), [(3, 2), (2, 3), (3, 1), (1, 4), (2, 2)])
def test_resuming_onto_another_world_size_reshards_exactly(tmp_path, saved, resumed):
    replicated, banks = filled(saved)
    for bank in banks:
        bank.save_shard(tmp_path)
    for rank in range(resumed):
        fresh = ScoreBank(37, 4, num_shards=resumed, shard=rank)
        fresh.reshard_chunk_rows = 4  # several chunks per saved shard
        fresh.load_shards(tmp_path)
        rows = fresh.sample_indices()
        assert torch.equal(fresh.scores, replicated.scores[rows]) and torch.equal(
            fresh.seen, replicated.seen[rows]
        )


def test_a_float32_checkpoint_resumes_into_a_bfloat16_bank_rounded(tmp_path):
    replicated, _ = filled(1)
    replicated.save_shard(tmp_path)
    low = ScoreBank(37, 4, dtype=torch.bfloat16)
    low.load_shards(tmp_path)
    assert torch.equal(low.scores, replicated.scores.bfloat16())


def test_missing_or_foreign_shards_fail_naming_what_is_wrong(tmp_path):
    _, banks = filled(3)
    banks[0].save_shard(tmp_path)
    banks[2].save_shard(tmp_path)
    with pytest.raises(ValueError, match=r"written by 3 processes.*resumed on 2.*shard00001-of-00003"):
        ScoreBank(37, 4, num_shards=2, shard=0).load_shards(tmp_path)
    with pytest.raises(ValueError, match=r"holds 37 samples x \(4,\), expected 40 x \(4,\)"):
        banks[1].save_shard(tmp_path)
        ScoreBank(40, 4, num_shards=3, shard=0).load_shards(tmp_path)
    renamed = tmp_path / "renamed"  # shards of 3 passed off as shards of 2
    for rank in range(2):
        banks[rank].save_shard(renamed).rename(renamed / f"score_bank-shard{rank:05d}-of-00002.safetensors")
    with pytest.raises(
        ValueError, match=r"shard00000-of-00002.safetensors holds 13 rows, but shard 0 of 2 .* 19"
    ):
        ScoreBank(37, 4, num_shards=2, shard=0).load_shards(renamed)
    with pytest.raises(ValueError, match="holds no score bank shards"):
        ScoreBank(37, 4).load_shards(tmp_path / "empty")


# ---- two gloo processes -----------------------------------------------------------------------
def test_sharded_bank_equals_the_replicated_one_on_two_processes(tmp_path):
    result_path = tmp_path / "result.json"
    script = ROOT / "tests" / "scripts" / "sharded_bank.py"
    command = accelerate_command(script, str(result_path), str(tmp_path), processes=2)
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    checks = json.loads(result_path.read_text())
    assert checks.pop("world") == 2
    assert checks.pop("shard_rows") == [501, 500] and checks.pop("replicated_rows") == 1001
    failed = [name for name, ok in checks.items() if not ok]
    assert not failed, failed


# ---- pretraining on two gloo processes ----------------------------------------------------------
@pytest.mark.slow
def test_sharded_bank_trains_bitwise_like_the_replicated_one_and_resumes_on_any_world_size(tmp_path):
    from safetensors import safe_open

    from gh_hf.training.prior import read_refreshes
    from tests.test_pretrain_e2e import TINY, check, launch

    # 16 steps of 64 images: the prior is refreshed (and GH trains on it) from the end of epoch 1.
    common = [*TINY, "--max_steps", "16", "--per_device_batch_size", "32", "--checkpoint_every_epochs", "0"]
    replicated, sharded, resumed = tmp_path / "replicated", tmp_path / "sharded", tmp_path / "resumed"
    check(launch([*common, "--bank_sharding", "replicated", "--output_dir", str(replicated)], processes=2))
    check(launch([*common, "--checkpoint_every", "8", "--output_dir", str(sharded)], processes=2))
    expected, weights = (
        load_file(replicated / "encoder" / "model.safetensors"),
        load_file(sharded / "encoder" / "model.safetensors"),
    )
    assert expected.keys() == weights.keys() and all(torch.equal(expected[k], weights[k]) for k in expected)
    refreshes = read_refreshes(sharded / "log.jsonl")
    assert refreshes and refreshes == read_refreshes(replicated / "log.jsonl")
    assert "anchor_purity_mean" in refreshes[0]

    checkpoint = sharded / "checkpoints" / "step_00000008"
    for rank in range(2):  # each process wrote its half of the bank
        with safe_open(str(checkpoint / f"score_bank-shard{rank:05d}-of-00002.safetensors"), "pt") as handle:
            num_samples = int(handle.metadata()["num_samples"])
            assert handle.get_slice("scores").get_shape() == [(num_samples - rank + 1) // 2, 10]
    check(
        launch(
            [*common, "--output_dir", str(resumed), "--resume_from_checkpoint", str(checkpoint)], processes=2
        )
    )
    again = load_file(resumed / "encoder" / "model.safetensors")
    assert all(torch.equal(expected[k], again[k]) for k in expected)
    # One process reads both shards (re-sharding); the run goes on from step 8.
    result = check(launch([*common, "--max_steps", "9", "--output_dir", str(tmp_path / "one"),
                           "--resume_from_checkpoint", str(checkpoint)]))  # fmt: skip
    assert "Resumed from" in result.stdout
