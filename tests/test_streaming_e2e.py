"""Streamed pretraining on 2 gloo processes: every sample once per epoch, and a mid-epoch resume."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from gh_hf.data import load_streamed_split, write_index_file
from tests.conftest import TINY_RUN, accelerate_command, interrupt_at_checkpoint
from tests.test_pretrain_e2e import ENV, ROOT, _weights, check, launch

pytestmark = pytest.mark.slow

BATCH = 32  # per process: 2 x 32 = 64 a step


def streamed_run(folder, *extra: str) -> list[str]:
    return [*TINY_RUN, "--dataset", "parquet", "--streaming", "true", "--data_dir", str(folder),
            "--in_chans", "1", "--per_device_batch_size", str(BATCH), "--shuffle_buffer_size", "128",
            "--shuffle_buffer_shards", "1", *extra]  # fmt: skip


def test_two_processes_see_every_sample_of_the_split_once_per_epoch(fashion_mnist_shards, tmp_path):
    # The long-tailed split precomputed as an index file, cut to 640 = 10 steps of 2 x 32 samples.
    long_tailed = load_streamed_split(fashion_mnist_shards[1], imbalance_ratio=10, seed=0).source_ids
    index_file = write_index_file(tmp_path / "fashion_mnist_lt.txt", long_tailed[:640])
    out = tmp_path / "epochs.json"
    run = streamed_run(fashion_mnist_shards[1], "--index_file", str(index_file), "--imbalance_ratio", "1",
                       "--dataloader_num_workers", "2")  # fmt: skip
    command = accelerate_command(
        ROOT / "tests" / "scripts" / "streamed_epochs.py", str(out), *run, processes=2
    )
    check(subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600))
    result = json.loads(out.read_text())
    assert result["world"] == 2 and result["num_samples"] == 640 and result["batches_per_epoch"] == 10
    for per_process in result["epochs"]:
        assert [len(indices) for indices in per_process] == [10 * BATCH, 10 * BATCH]
        assert sorted(per_process[0] + per_process[1]) == list(range(640))  # each sample once
    assert result["epochs"][0] != result["epochs"][1]  # a new order every epoch
    assert result["resumed"] == [indices[2 * BATCH :] for indices in result["epochs"][1]]


def test_killed_streamed_run_resumes_mid_epoch_with_bitwise_identical_weights(fashion_mnist_shards, tmp_path):
    # 757 long-tailed samples: 11 steps an epoch on 2 processes; the kill comes in the first epoch.
    common = streamed_run(fashion_mnist_shards[1], "--max_steps", "14", "--checkpoint_every_epochs", "0",
                          "--dataloader_num_workers", "0")  # fmt: skip
    check(launch([*common, "--output_dir", str(tmp_path / "straight")], processes=2))

    interrupted = tmp_path / "interrupted"
    command = accelerate_command(
        ROOT / "scripts" / "pretrain.py",
        *common,
        "--output_dir",
        str(interrupted),
        "--checkpoint_every",
        "6",
        processes=2,
    )
    interrupt_at_checkpoint(command, ENV, interrupted / "checkpoints" / "step_00000006")

    # Resumed with DataLoader workers: the batches depend on (seed, epoch, processes), not on workers.
    resume = [*common, "--output_dir", str(interrupted), "--resume_from_checkpoint", "latest",
              "--dataloader_num_workers", "2"]  # fmt: skip
    check(launch(resume, processes=2))
    straight, resumed = _weights(tmp_path / "straight"), _weights(interrupted)
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    run_info = json.loads((interrupted / "encoder" / "run_info.json").read_text())
    assert run_info["global_steps"] == 14 and run_info["num_processes"] == 2


def test_resume_onto_another_process_count_is_refused(fashion_mnist_shards, tmp_path):
    common = streamed_run(fashion_mnist_shards[1], "--max_steps", "2", "--output_dir", str(tmp_path / "run"))
    check(launch(common, processes=2))
    result = launch([*common, "--max_steps", "3", "--resume_from_checkpoint", "latest"], processes=1)
    assert result.returncode != 0
    assert "num_processes 2 -> 1" in result.stderr and "resume with the checkpoint's values" in result.stderr
