"""Speed options keep the model's maths and names; the throughput benchmark runs both pipelines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gh_hf import GHConfig, GHForPreTraining
from gh_hf.training.throughput import MODEL_ONLY, compare_pipelines
from gh_hf.training.trainer import apply_speed_options
from tests.conftest import TINY_BACKBONE


@pytest.mark.slow
def test_compiled_model_keeps_gradients_and_weight_names(tmp_path):
    # SDCLR: view 1 runs the compiled modules densely, view 2 through torch.func.functional_call
    # with the pruned weights, so both ways into a compiled module are covered.
    config = GHConfig(**TINY_BACKBONE, in_chans=1, image_size=12, projection_dim=16, num_anchors=10,
                      ssl_method="sdclr")  # fmt: skip
    eager = GHForPreTraining(config).train()
    compiled = GHForPreTraining(config).train()
    compiled.load_state_dict(eager.state_dict())
    compiled = apply_speed_options(compiled, compile=True, channels_last=True)
    for model in (eager, compiled):
        model.refresh_pruning_masks()
    views = torch.randn(6, 2, 1, 12, 12)
    losses = [model(views, gh_weight=1.0).loss for model in (eager, compiled)]
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(losses[1], losses[0], atol=1e-4, rtol=1e-5)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-4, rtol=1e-3, msg=name)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    compiled.encoder.save_pretrained(tmp_path)
    assert not any("_orig_mod" in key for key in load_file(tmp_path / "model.safetensors"))


@pytest.mark.slow
def test_throughput_benchmark_times_both_pipelines_and_the_step_alone():
    common = ["--dataset", "digits", "--imbalance_ratio", "10", "--image_size", "12",
              "--projection_dim", "16", "--backbone_kwargs", '{"channels": [8, 16, 32, 64]}',
              "--per_device_batch_size", "32"]  # fmt: skip
    arms = {
        "per_image": [*common, "--view_pipeline", "per_image", "--dataloader_num_workers", "0"],
        "batched": [*common, "--view_pipeline", "batched"],
    }
    report = compare_pipelines("demo", arms, turns=1, steps_per_turn=2)
    assert set(report["results"]) == {"per_image", "batched"}
    assert set(report["turn_seconds"]) == {
        "per_image",
        "batched",
        f"per_image/{MODEL_ONLY}",
        f"batched/{MODEL_ONLY}",
    }
    for name, row in report["results"].items():
        assert row["images_per_s"] == pytest.approx(32 / row["step_s"])
        assert row["model_only_images_per_s"] == pytest.approx(32 / row["model_only_step_s"])
        assert row["data_share"] == pytest.approx(max(0.0, 1 - row["model_only_step_s"] / row["step_s"]))
        assert len(report["turn_seconds"][name]) == 1
    assert report["batched_over_per_image"] == pytest.approx(
        report["results"]["per_image"]["step_s"] / report["results"]["batched"]["step_s"]
    )


@pytest.mark.slow
def test_throughput_script_runs_only_the_given_arms_without_the_defaults(tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_throughput.py"
    common = ("--dataset digits --imbalance_ratio 10 --image_size 12 --projection_dim 16 "
              "--backbone_kwargs '{\"channels\": [8, 16, 32, 64]}' --per_device_batch_size 32")  # fmt: skip
    output = tmp_path / "report.json"
    without_arms = [sys.executable, str(script), "--preset", "demo", "--turns", "1", "--steps_per_turn", "1",
                    "--common", common, "--default_arms", "false", "--output", str(output)]  # fmt: skip
    subprocess.run(
        [*without_arms, "--arm", "bcl=--ssl_method bcl"], check=True, capture_output=True, text=True
    )
    assert set(json.loads(output.read_text())["results"]) == {"bcl"}
    refused = subprocess.run(without_arms, capture_output=True, text=True)
    assert refused.returncode == 2 and "--default_arms false needs at least one --arm" in refused.stderr


def test_bcl_arms_are_timed_with_their_randaugment_boost_on(tmp_path):
    from gh_hf.training.throughput import build_trainer

    common = ["--dataset", "digits", "--imbalance_ratio", "10", "--image_size", "12",
              "--projection_dim", "16", "--backbone_kwargs", '{"channels": [8, 16, 32, 64]}',
              "--ssl_method", "bcl"]  # fmt: skip
    for pipeline in ("batched", "per_image"):
        trainer = build_trainer("demo", [*common, "--view_pipeline", pipeline], str(tmp_path / pipeline))
        strengths = trainer.two_views.strengths
        assert strengths.min() == 0 and strengths.max() == 1
        assert (strengths > 0).float().mean() > 0.99  # all but the easiest sample are boosted
