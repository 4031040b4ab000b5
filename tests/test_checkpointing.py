"""gh_hf.training.checkpointing: a checkpoint folder that lacks part of a run's state fails up front.

The real checkpoints of every resume and fork in tests/test_pretrain_e2e.py and
tests/test_streaming_e2e.py pass the same check (SimCLR and BCL, with and without GH, streamed).
"""

from __future__ import annotations

import pytest

from gh_hf.training import trainer as trainer_module
from gh_hf.training.arguments import parse_pretrain_args
from gh_hf.training.checkpointing import missing_checkpoint_files, require_complete_checkpoint
from gh_hf.training.score_bank import ScoreBank

BANK = ScoreBank.file_stem
SHARDS = ScoreBank.shard_glob()
COMPLETE = ["model.safetensors", "optimizer.bin", "custom_checkpoint_0.pkl", "random_states_0.pkl",
            f"{BANK}-shard00000-of-00001.safetensors"]  # fmt: skip


def _folder(tmp_path, names):
    folder = tmp_path / "checkpoints" / "step_00000010"
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def test_a_whole_checkpoint_lacks_nothing(tmp_path):
    folder = _folder(tmp_path, COMPLETE)
    assert missing_checkpoint_files(folder, custom_objects=1, bank_shards=SHARDS) == []
    assert missing_checkpoint_files(folder, custom_objects=1, bank_shards=None) == []
    require_complete_checkpoint(folder, custom_objects=1, bank_shards=SHARDS)


def test_a_folder_cut_down_to_its_weights_names_everything_it_lacks(tmp_path):
    folder = _folder(tmp_path, ["model.safetensors"])
    assert missing_checkpoint_files(folder, custom_objects=2, bank_shards=SHARDS) == [
        "optimizer.bin", "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", SHARDS,
    ]  # fmt: skip
    with pytest.raises(ValueError) as error:
        require_complete_checkpoint(folder, custom_objects=1, bank_shards=None)
    message = str(error.value)
    assert f"--resume_from_checkpoint='{folder}' is not a complete checkpoint" in message
    assert "it lacks optimizer.bin, custom_checkpoint_0.pkl (it holds model.safetensors)" in message
    assert "--init_from" in message


def test_what_is_needed_follows_the_run(tmp_path):
    folder = _folder(tmp_path, ["pytorch_model.bin", "optimizer.bin", "custom_checkpoint_0.pkl"])
    assert missing_checkpoint_files(folder, custom_objects=1, bank_shards=None) == []  # the .bin weights
    assert missing_checkpoint_files(folder, custom_objects=2, bank_shards=None) == ["custom_checkpoint_1.pkl"]
    assert missing_checkpoint_files(folder, custom_objects=1, bank_shards=SHARDS) == [SHARDS]
    # FSDP and DeepSpeed save the model and optimizer in folders of their own: not checked
    assert missing_checkpoint_files(tmp_path, custom_objects=1, bank_shards=None, single_files=False) == [
        "custom_checkpoint_0.pkl"
    ]


def test_the_trainer_refuses_an_incomplete_checkpoint_before_loading_data(monkeypatch, tmp_path):
    def no_data(*args, **kwargs):
        raise AssertionError("data was loaded")

    monkeypatch.setattr(trainer_module, "load_long_tailed_train", no_data)
    own = _folder(tmp_path / "run", ["model.safetensors"])
    args = parse_pretrain_args(["--output_dir", str(tmp_path / "run"), "--resume_from_checkpoint", "latest"])
    with pytest.raises(ValueError, match="it lacks optimizer.bin, custom_checkpoint_0.pkl, score_bank-shard"):
        trainer_module.Pretrainer(*args)
    bcl = parse_pretrain_args(
        ["--ssl_method", "bcl", "--use_gh", "false", "--output_dir", str(tmp_path / "run"),
         "--resume_from_checkpoint", str(own)]
    )  # fmt: skip
    lacks = "it lacks optimizer.bin, custom_checkpoint_0.pkl, custom_checkpoint_1.pkl "
    with pytest.raises(ValueError, match=lacks):
        trainer_module.Pretrainer(*bcl)
