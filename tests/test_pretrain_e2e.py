"""End-to-end pretraining through `accelerate launch`: outputs, resume, 2 processes, failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

import gh_hf  # noqa: F401  (registers the Auto classes)
from gh_hf.geometry import simplex_etf
from tests.conftest import TINY_RUN, accelerate_command, interrupt_at_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = TINY_RUN
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.slow


def launch(args: list[str], processes: int = 1, **kwargs) -> subprocess.CompletedProcess:
    command = accelerate_command(ROOT / "scripts" / "pretrain.py", *args, processes=processes)
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600, **kwargs)


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


LOAD_SCRIPT = """
import sys, torch, gh_hf
from transformers import AutoModel
encoder = AutoModel.from_pretrained(sys.argv[1]).eval()
size = encoder.config.image_size
pixels = torch.zeros(2, encoder.config.in_chans, size, size)
print(type(encoder).__name__, tuple(encoder(pixels).pooler_output.shape))
"""


def test_short_run_leaves_an_encoder_that_auto_model_loads(tmp_path):
    out = tmp_path / "run"
    result = check(launch([*TINY, "--output_dir", str(out), "--knn_at_end", "true", "--max_steps", "16"]))
    assert "Encoder saved to" in result.stdout
    encoder = out / "encoder"
    assert {"config.json", "model.safetensors", "README.md", "training_args.json"} <= {
        p.name for p in encoder.iterdir()
    }
    assert not any(
        key.startswith(("projector", "anchors")) for key in load_file(encoder / "model.safetensors")
    )
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(encoder)], env=ENV, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "GHModel (2, 64)"
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [entry for entry in logs if "loss" in entry]
    assert {"loss", "ssl_loss", "gh_loss", "lr", "images_per_s", "gh_weight"} <= set(steps[0])
    assert steps[-1]["step"] == 16 and steps[-1]["gh_weight"] > 0 and steps[-1]["gh_loss"] > 0
    assert any("prior_entropy" in entry for entry in logs)
    run_info = json.loads((encoder / "run_info.json").read_text())
    assert run_info["global_steps"] == 16 and run_info["epochs"] == 2  # the last epoch is counted as done
    knn = json.loads((out / "knn_metrics.json").read_text())
    assert 0 <= knn["knn_accuracy"] <= 1 and "knn_few" in knn


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _losses(rows: list[dict]) -> list[tuple[int, float]]:
    return [(row["step"], row["loss"]) for row in rows if "loss" in row]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "encoder" / "model.safetensors")


@pytest.mark.parametrize(
    ("ssl_method", "view_pipeline"),
    [
        ("simclr", "batched"),
        ("simclr", "per_image"),
        ("sdclr", "auto"),
        ("bcl", "auto"),
        ("bcl", "per_image"),
    ],
)
def test_kill_and_resume_gives_bitwise_identical_weights(tmp_path, ssl_method, view_pipeline):
    # Mid-epoch resume: SDCLR's masks and pruned BatchNorm sets, BCL's loss memory and strengths,
    # the score bank and the prior must all come back, or the weights drift apart.
    common = [*TINY, "--max_steps", "14", "--checkpoint_every_epochs", "0", "--ssl_method", ssl_method,
              "--view_pipeline", view_pipeline]  # fmt: skip
    (tmp_path / "straight").mkdir()  # the log of an earlier start, killed before any checkpoint
    (tmp_path / "straight" / "log.jsonl").write_text(json.dumps({"loss": -1.0, "step": 1}) + "\n")
    check(launch([*common, "--output_dir", str(tmp_path / "straight")]))
    assert json.loads((tmp_path / "straight" / "log.1.jsonl").read_text()) == {"loss": -1.0, "step": 1}

    interrupted = tmp_path / "interrupted"
    command = accelerate_command(
        ROOT / "scripts" / "pretrain.py", *common, "--output_dir", str(interrupted), "--checkpoint_every", "6"
    )
    interrupt_at_checkpoint(command, ENV, interrupted / "checkpoints" / "step_00000006")
    with open(interrupted / "log.jsonl", "a") as handle:  # as a crash after the checkpoint leaves it
        handle.write(json.dumps({"loss": -1.0, "step": 7}) + "\n")

    # Resume with another worker count: views depend on (seed, epoch, index) only.
    check(
        launch(
            [
                *common,
                "--output_dir",
                str(interrupted),
                "--resume_from_checkpoint",
                "latest",
                "--dataloader_num_workers",
                "2",
            ]
        )
    )
    straight, resumed = _weights(tmp_path / "straight"), _weights(interrupted)
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    # The log tells one history: what was logged after the checkpoint is redone, not repeated.
    rows, straight_rows = _rows(interrupted), _rows(tmp_path / "straight")
    assert _losses(rows) == _losses(straight_rows)
    checkpoint = str(interrupted / "checkpoints" / "step_00000006")
    assert [row for row in rows if "resumed_from" in row] == [{"resumed_from": checkpoint, "step": 6}]


@pytest.mark.parametrize("ssl_method", ["simclr", "bcl"])  # bcl: its loss memory crosses the fork too
def test_a_fork_from_the_gh_warmup_is_the_run_trained_in_full(tmp_path, ssl_method):
    # GH adds nothing before its warm-up ends, so the arms of a seed may start their second stage
    # from one GH arm's warm-up checkpoint (scripts/experiment.py): it must give the same weights.
    common = [
        *TINY,
        "--ssl_method",
        ssl_method,
        "--lr_schedule",
        "two_stage",
        "--checkpoint_every_epochs",
        "0",
    ]
    check(launch([*common, "--use_gh", "true", "--save_warmup_checkpoint", "true",
                  "--output_dir", str(tmp_path / "gh")]))  # fmt: skip
    warmup = tmp_path / "gh" / "checkpoints" / "warmup"
    assert (warmup / "score_bank-shard00000-of-00001.safetensors").exists()  # GH forks need the bank
    prior = tmp_path / "prior.json"
    prior.write_text(json.dumps([40, 25, 15, 8, 5, 3, 2, 1, 0.6, 0.4]))
    arms = {"without_gh": ["--use_gh", "false"]}
    if ssl_method == "simclr":
        arms["known_prior"] = ["--use_gh", "true", "--class_prior", str(prior)]
    for name, arm in arms.items():
        full, fork = tmp_path / f"{name}_full", tmp_path / f"{name}_fork"
        check(launch([*common, *arm, "--output_dir", str(full)]))
        check(launch([*common, *arm, "--output_dir", str(fork), "--resume_from_checkpoint", str(warmup)]))
        trained, forked = _weights(full), _weights(fork)
        assert trained.keys() == forked.keys()
        for key in trained:
            assert torch.equal(trained[key], forked[key]), (name, key)
        # The fork's log tells its whole history: the source's rows up to its warm-up checkpoint
        # (not the source's own GH-stage rows of the same step, its prior refresh), then a row naming it.
        rows, source_rows = _rows(fork), _rows(tmp_path / "gh")
        (marker,) = [row for row in rows if "forked_from" in row]
        assert marker == {"forked_from": str(warmup), "step": 8}  # 8 steps per epoch, 1 warm-up epoch
        before = rows[: rows.index(marker)]
        assert before == source_rows[: len(before)]
        assert "anchor_occupancy" in source_rows[len(before)] and source_rows[len(before)]["step"] == 8
        assert _losses(rows) == _losses(_rows(full))


def test_a_fork_whose_warmup_differs_fails_naming_the_setting(tmp_path):
    check(launch([*TINY, "--max_steps", "8", "--save_warmup_checkpoint", "true", "--output_dir",
                  str(tmp_path / "gh")]))  # fmt: skip
    warmup = tmp_path / "gh" / "checkpoints" / "warmup"
    result = launch([*TINY, "--learning_rate", "0.1", "--output_dir", str(tmp_path / "fork"),
                     "--resume_from_checkpoint", str(warmup)])  # fmt: skip
    assert result.returncode != 0
    assert "learning_rate: 0.5 there, 0.1 here" in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "fork" / "encoder").exists()


def test_two_processes_train_and_checkpoint(tmp_path):
    out = tmp_path / "ddp"
    check(
        launch(
            [
                *TINY,
                "--output_dir",
                str(out),
                "--max_steps",
                "6",
                "--per_device_batch_size",
                "32",
                "--checkpoint_every",
                "3",
            ],
            processes=2,
        )
    )
    assert (out / "encoder" / "model.safetensors").exists()
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["step_00000003", "step_00000006"]  # no half-written temporaries left


def test_anchor_alignment_on_two_processes_gives_one_frame_and_the_whole_banks_partition(tmp_path):
    out = tmp_path / "aligned"
    args = [*TINY, "--anchor_alignment", "kmeans", "--per_device_batch_size", "32",
            "--checkpoint_every_epochs", "1", "--output_dir", str(out)]  # fmt: skip
    check(launch(args, processes=2))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    (record,) = [entry for entry in log if "anchor_alignment" in entry]
    (first_refresh,) = [entry for entry in log if "anchor_occupancy" in entry]
    # The refresh sums the two shards of the bank the alignment rewrote: every image, in the new frame.
    assert first_refresh["anchor_occupancy"] == record["anchor_occupancy_aligned"]
    split = json.loads((out / "encoder" / "long_tailed_split.json").read_text())
    assert sum(record["anchor_occupancy_aligned"]) == split["num_images"]
    anchors = load_file(str(sorted((out / "checkpoints").glob("step_*"))[-1] / "model.safetensors"))[
        "anchors"
    ]
    config = json.loads((out / "encoder" / "config.json").read_text())
    etf = simplex_etf(config["num_anchors"], config["projection_dim"], config["anchors_seed"])
    assert not torch.allclose(anchors, etf)
    torch.testing.assert_close(anchors @ anchors.T, etf @ etf.T, atol=1e-5, rtol=0)


@pytest.mark.parametrize("use_gh", ["true", "false"])
@pytest.mark.parametrize("ssl_method", ["simclr", "focal", "sdclr", "bcl"])
def test_every_base_with_and_without_gh_trains_on_two_processes(tmp_path, ssl_method, use_gh):
    out = tmp_path / "run"
    args = [*TINY, "--ssl_method", ssl_method, "--use_gh", use_gh, "--max_steps", "2",
            "--per_device_batch_size", "32",
            "--checkpoint_every_epochs", "0", "--output_dir", str(out)]  # fmt: skip
    check(launch(args, processes=2))
    # In this process (a fresh one loads an encoder in test_short_run_leaves_an_encoder_...).
    encoder = AutoModel.from_pretrained(out / "encoder").eval()
    assert type(encoder).__name__ == "GHModel"
    assert encoder(torch.zeros(2, 1, 12, 12)).pooler_output.shape == (2, 64)
    assert json.loads((out / "encoder" / "run_info.json").read_text())["num_processes"] == 2


def test_distributed_step_equals_single_process_on_global_batch_for_every_base(tmp_path):
    # One 2-process launch checks the four bases in turn (one start-up instead of four).
    result_path = tmp_path / "result.json"
    script = ROOT / "tests" / "scripts" / "distributed_step.py"
    bases = ["simclr", "focal", "sdclr", "bcl"]
    command = accelerate_command(script, str(result_path), ",".join(bases), processes=2)
    check(subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600))
    results = json.loads(result_path.read_text())
    assert sorted(results) == sorted(bases)
    for base, result in results.items():
        assert result["world"] == 2, base
        assert result["loss"] == pytest.approx(result["expected_loss"], rel=1e-5), base
        # Without the summed backward of the gather, gradients would be off by a factor of 2 here.
        assert result["max_grad_diff"] <= 1e-5 * max(1.0, result["max_grad"]), base
        assert result["bank_vs_reference"] <= 1e-5, base
        assert result["banks_identical"] and result["priors_identical"] and result["seen"] == 12, base
        # BCL's loss memory: the gathered per-sample losses, the same on every rank
        assert result["memory_vs_reference"] <= 1e-5 * max(1.0, result["loss"]), base
        assert result["memories_identical"] and result["memory_seen"] == 12, base


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    from accelerate.state import AcceleratorState

    from gh_hf.modeling_gh_pretraining import GHForPreTraining
    from gh_hf.training import NonFiniteLossError, Pretrainer, parse_pretrain_args

    original_forward = GHForPreTraining.forward
    calls = {"n": 0}

    def forward_with_nan_at_step_4(self, *args, **kwargs):
        out = original_forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(GHForPreTraining, "forward", forward_with_nan_at_step_4)
    out = tmp_path / "nan"
    trainer = Pretrainer(*parse_pretrain_args([*TINY, "--output_dir", str(out), "--checkpoint_every", "2"]))
    try:
        with pytest.raises(
            NonFiniteLossError, match=r"step 4 .*loss=nan.*ssl_loss=.*gh_loss=.*step_00000002"
        ):
            trainer.train()
    finally:
        AcceleratorState._reset_state(True)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002"]
    assert not (out / "encoder").exists()


def test_bad_argument_fails_fast_naming_it(tmp_path):
    started = time.time()
    command = [sys.executable, str(ROOT / "scripts" / "pretrain.py"), "--num_anchors", "1000",
               "--output_dir", str(tmp_path)]  # fmt: skip
    result = subprocess.run(command,
                            env=ENV, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2
    assert "GHConfig.num_anchors=1000" in result.stderr and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir()) and time.time() - started < 60
