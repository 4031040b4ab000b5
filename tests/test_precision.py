"""Mixed precision: what "auto" resolves to, and one bf16 training step on the CPU."""

from __future__ import annotations

import pytest
import torch

from gh_hf import GHConfig
from gh_hf import dist as gh_dist
from gh_hf.modeling_gh_pretraining import GHForPreTraining
from gh_hf.training.arguments import PretrainingArguments
from tests.conftest import TINY_BACKBONE


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "no")])
def test_auto_mixed_precision_is_bf16_only_where_native(monkeypatch, native, expected):
    monkeypatch.setattr(gh_dist, "bf16_is_native", lambda: native)
    assert gh_dist.resolve_mixed_precision("auto") == expected
    for explicit in ("no", "fp16", "bf16"):
        assert gh_dist.resolve_mixed_precision(explicit) == explicit


def test_mixed_precision_rejects_unknown_values():
    assert PretrainingArguments().mixed_precision == "auto"
    with pytest.raises(ValueError, match="--mixed_precision='fp8' is invalid"):
        PretrainingArguments(mixed_precision="fp8")


def test_one_bf16_step_on_cpu_stays_close_to_float32():
    config = GHConfig(**TINY_BACKBONE, in_chans=1, image_size=12, projection_dim=16, num_anchors=10)
    model = GHForPreTraining(config).train()
    views = torch.randn(16, 2, 1, 12, 12)
    reference = model(views, gh_weight=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(views, gh_weight=1.0)
    assert out.projections.dtype == torch.bfloat16  # the backbone and projector ran in bf16
    assert out.gh_loss.dtype == torch.float32 and out.loss.dtype == torch.float32  # losses in float32
    torch.testing.assert_close(out.ssl_loss, reference.ssl_loss, rtol=0.03, atol=0)
    torch.testing.assert_close(out.gh_loss, reference.gh_loss, rtol=0.05, atol=0)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_the_trainer_records_the_resolved_precision(tmp_path, monkeypatch):
    from accelerate.state import AcceleratorState

    from gh_hf.training import Pretrainer, parse_pretrain_args

    monkeypatch.setattr(gh_dist, "bf16_is_native", lambda: False)
    AcceleratorState._reset_state()  # accelerate keeps one precision per process
    try:
        trainer = Pretrainer(*parse_pretrain_args(["--preset", "demo", "--output_dir", str(tmp_path)]))
        assert trainer.args.mixed_precision == "no"
        assert trainer.all_args()["training"]["mixed_precision"] == "no"
        assert trainer.accelerator.mixed_precision == "no"
    finally:  # later tests in this process build trainers with the real "auto"
        AcceleratorState._reset_state()
