"""The bank's memory model, its measured point and the low-precision error measurement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gh_hf.training.bank_memory import (
    DATASETS,
    WORLD_SIZES,
    BankSchedule,
    dtype_error,
    long_tailed_anchors,
    memory_table,
    model_bytes,
)
from gh_hf.training.score_bank import bank_bytes

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_memory_table_holds_every_dataset_and_world_size_from_the_formula():
    rows = memory_table({"bytes": 123})
    assert len(rows) == len(DATASETS) * len(WORLD_SIZES)
    crawl = next(r for r in rows if r["dataset"] == "100M-image crawl" and r["num_processes"] == 64)
    assert crawl["bank_replicated_float32"] == 100_000_000 * (1000 * 4 + 1)
    assert crawl["bank_sharded_bfloat16"] == bank_bytes(100_000_000, 1000, 64, "bfloat16")
    assert crawl["bank_sharded_bfloat16"] == -(-100_000_000 // 64) * (1000 * 2 + 1)
    assert crawl["model_and_optimizer"] == 123


def test_model_bytes_count_weights_gradients_momentum_and_ddp_buckets(tiny_config):
    from gh_hf.modeling_gh_pretraining import GHForPreTraining

    model = GHForPreTraining(tiny_config)
    parameters = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    assert model_bytes(tiny_config, 1) == {"parameters": parameters, "buffers": buffers,
                                          "bytes": 4 * (3 * parameters + buffers)}  # fmt: skip
    assert model_bytes(tiny_config, 8)["bytes"] == 4 * (4 * parameters + buffers)


def test_long_tailed_anchors_follow_the_exp_profile():
    anchors = long_tailed_anchors(1000, 5, imbalance_ratio=10.0)
    counts = anchors.bincount().tolist()
    assert len(anchors) == 1000 and counts == sorted(counts, reverse=True)
    assert counts[-1] / counts[0] == pytest.approx(0.1, rel=0.05)


def test_a_float32_bank_against_float32_has_no_error_and_bfloat16_has_some():
    schedule = BankSchedule("test", 3, 0.5, 3, 0.99)
    (exact,) = dtype_error(schedule, 300, 20, dtypes=("float32",))
    assert (exact["prior_tv"], exact["argmax_agreement"], exact["max_abs_diff"]) == (0.0, 1.0, 0.0)
    assert exact["entries_moved_last_epoch"] == exact["float32_entries_moved_last_epoch"] > 0.99
    (low,) = dtype_error(schedule, 300, 20, dtypes=("bfloat16",))
    assert 0 < low["max_abs_diff"] < 0.05 and 0.9 < low["argmax_agreement"] <= 1


@pytest.mark.slow
def test_the_benchmark_measures_two_processes_replicated_then_sharded(tmp_path):
    output = tmp_path / "bank_memory.json"
    command = [sys.executable, str(ROOT / "scripts" / "bench_bank_memory.py"), "--parts", "rss",
               "--num_samples", "20000", "--num_anchors", "50", "--per_process_batch", "512",
               "--output", str(output)]  # fmt: skip
    result = subprocess.run(command, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    saved = json.loads(output.read_text())["rss"]
    assert all(
        run["command"].startswith("accelerate launch") and str(ROOT) not in run["command"] for run in saved
    )
    runs = {run["bank_sharding"]: run["processes"] for run in saved}
    assert runs.keys() == {"replicated", "sharded"}
    for sharding, world in (("replicated", 1), ("sharded", 2)):
        assert [p["rank"] for p in runs[sharding]] == [0, 1]
        for process in runs[sharding]:
            assert process["bank_bytes"] == bank_bytes(20000, 50, world, "float32")
            assert process["samples_seen"] == 20000 and process["prior_sum"] == pytest.approx(1.0)
            assert process["peak_rss"] >= process["rss_after_allocation"] > process["rss_before_bank"]
