"""gh_hf.training.fork: which settings a run started from another run's warm-up may change."""

from __future__ import annotations

import json

import pytest

from gh_hf.training.arguments import ARGUMENT_PARTS, as_json, parse_pretrain_args
from gh_hf.training.fork import check_fork, fork_source


def _args(*argv: str) -> tuple:
    return parse_pretrain_args(["--preset", "demo", *argv])


def _source(tmp_path, *argv: str):
    (tmp_path / "source").mkdir()
    saved = dict(zip(ARGUMENT_PARTS, map(as_json, _args(*argv)), strict=True))
    (tmp_path / "source" / "training_args.json").write_text(json.dumps(saved))
    return tmp_path / "source"


def test_a_fork_may_change_what_acts_after_the_warmup(tmp_path):
    source = _source(
        tmp_path, "--use_gh", "true", "--lr_schedule", "two_stage", "--save_warmup_checkpoint", "true"
    )
    checkpoint = source / "checkpoints" / "warmup"
    for fork in (
        _args("--use_gh", "false", "--lr_schedule", "two_stage"),
        _args(
            "--class_prior", "uniform", "--gh_weight", "0.5", "--num_epochs", "8", "--bank_momentum", "0.9"
        ),
        _args(
            "--lr_schedule", "auto", "--output_dir", "elsewhere", "--knn_every_epochs", "0"
        ),  # auto: two_stage
    ):
        check_fork(source, checkpoint, fork)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (("--learning_rate", "0.1"), "learning_rate: 0.5 there, 0.1 here"),
        (("--gh_warmup_epochs", "3"), "gh_warmup_epochs"),
        (("--seed", "1"), "seed: 0 there, 1 here"),
        (("--imbalance_ratio", "10"), "imbalance_ratio"),
        (("--use_gh", "false"), "lr_schedule resolves to 'two_stage' there, 'cosine' here"),  # auto, no GH
    ],
)
def test_a_fork_whose_warmup_would_differ_fails_naming_the_setting(tmp_path, argv, named):
    source = _source(tmp_path, "--use_gh", "true")
    with pytest.raises(ValueError, match="another run's checkpoint") as error:
        check_fork(source, source / "checkpoints" / "warmup", _args(*argv))
    assert named in str(error.value)


def test_gh_cannot_start_from_a_run_without_gh(tmp_path):
    source = _source(tmp_path, "--use_gh", "false", "--lr_schedule", "two_stage")
    with pytest.raises(ValueError, match="holds no score bank"):
        check_fork(
            source, source / "checkpoints" / "warmup", _args("--use_gh", "true", "--lr_schedule", "two_stage")
        )


def test_own_checkpoints_are_no_fork(tmp_path):
    run = tmp_path / "run"
    assert fork_source(run / "checkpoints" / "step_00000010", run) is None
    assert fork_source(tmp_path / "source" / "checkpoints" / "warmup", run) == tmp_path / "source"


def test_save_warmup_checkpoint_needs_a_warmup():
    with pytest.raises(ValueError, match="save_warmup_checkpoint"):
        parse_pretrain_args(
            ["--preset", "demo", "--gh_warmup_epochs", "0", "--save_warmup_checkpoint", "true"]
        )
