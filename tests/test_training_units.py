"""Training pieces that need no data: arguments, schedules, the score bank and the prior."""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch

from gh_hf.hub import card as card_module
from gh_hf.training import (
    ScoreBank,
    available_presets,
    gh_weight_at,
    parse_pretrain_args,
    prior_entropy,
    two_stage_cosine_lr,
    warmup_cosine_lr,
)
from gh_hf.training import trainer as trainer_module
from gh_hf.training.schedules import resolve_lr_schedule


def test_presets_exist_and_parse():
    assert {"demo", "fashion_mnist_lt", "cifar10_lt", "cifar100_lt", "imagenet_lt", "places_lt"} <= set(
        available_presets()
    )
    for preset in available_presets():
        data, model, training = parse_pretrain_args(["--preset", preset])
        assert training.num_epochs > 0 and data.imbalance_ratio >= 1, preset


def test_no_arguments_is_the_demo_preset():
    data, model, training = parse_pretrain_args([])
    assert data.dataset == "fashion_mnist" and model.use_gh and model.ssl_method == "simclr"
    assert training.output_dir == "outputs/demo"


def test_command_line_overrides_config_file_overrides_preset(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("num_epochs: 7\nlearning_rate: 0.1\nbackbone_kwargs: {channels: [8, 16, 32, 64]}\n")
    data, model, training = parse_pretrain_args(
        ["--preset", "cifar100_lt", "--config", str(config), "--learning_rate", "0.2"]
    )
    assert data.dataset == "cifar100"  # from the preset
    assert training.num_epochs == 7  # from the file
    assert training.learning_rate == 0.2  # from the command line
    assert model.config_kwargs()["backbone_kwargs"] == {"channels": [8, 16, 32, 64]}


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--imbalance_ratio", "0.5"], "imbalance_ratio"),
        (["--lr_schedule", "step"], "lr_schedule"),
        (["--per_device_batch_size", "0"], "per_device_batch_size"),
        (["--backbone_kwargs", "{bad json"], "backbone_kwargs"),
        (["--preset", "nope"], "preset"),
    ],
)
def test_bad_arguments_name_the_argument(argv, field):
    with pytest.raises(ValueError, match=f"--{field}="):
        parse_pretrain_args(argv)


def test_unknown_key_in_config_file(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("num_epoch: 7\n")
    with pytest.raises(ValueError, match="unknown arguments \\['num_epoch'\\]"):
        parse_pretrain_args(["--config", str(config)])


def test_bad_model_value_fails_before_data_is_loaded(monkeypatch, tmp_path):
    def no_data(*args, **kwargs):
        raise AssertionError("data was loaded")

    monkeypatch.setattr(trainer_module, "load_long_tailed_train", no_data)
    args = parse_pretrain_args(["--num_anchors", "500", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="GHConfig.num_anchors=500"):
        trainer_module.Pretrainer(*args)
    args = parse_pretrain_args(["--backbone", "resnet_does_not_exist", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="GHConfig.backbone="):
        trainer_module.Pretrainer(*args)
    args = parse_pretrain_args(
        ["--resume_from_checkpoint", str(tmp_path / "missing"), "--output_dir", str(tmp_path)]
    )
    with pytest.raises(ValueError, match="--resume_from_checkpoint="):
        trainer_module.Pretrainer(*args)
    split = ["--preset", "imagenet_lt", "--split_file", "train.txt", "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match="needs --test_split_file"):  # monitor on, no test images
        trainer_module.Pretrainer(*parse_pretrain_args([*split, "--knn_at_end", "true"]))
    with pytest.raises(ValueError, match="--test_split_file='test.txt' is invalid.*needs --split_file"):
        parse_pretrain_args(["--test_split_file", "test.txt"])


def test_load_source_reads_the_split_files(monkeypatch):
    from gh_hf.training import data as data_module

    calls = []
    monkeypatch.setattr(
        data_module, "load_image_dataset", lambda *args, **kwargs: calls.append((args, kwargs))
    )
    data, _, _ = parse_pretrain_args(
        ["--preset", "imagenet_lt", "--split_file", "a.txt", "--test_split_file", "b.txt"]
    )
    data_module.load_source(data, "train")
    data_module.load_source(data, "test")
    assert [kwargs["split_file"] for _, kwargs in calls] == ["a.txt", "b.txt"]
    data.test_split_file = None
    with pytest.raises(ValueError, match="split='test' of a --split_file dataset needs --test_split_file"):
        data_module.load_source(data, "test")


def test_config_normalisation_follows_the_dataset():
    from gh_hf.training import build_config

    for preset, mean in (
        ("demo", [0.2860]),
        ("imagenet_lt", [0.485, 0.456, 0.406]),
        ("cifar100_lt", [0.5071, 0.4865, 0.4409]),
    ):
        data, model, training = parse_pretrain_args(["--preset", preset])
        config = build_config(data, model, training.seed)
        assert config.image_mean == pytest.approx(mean), preset
    data, model, training = parse_pretrain_args(["--dataset", "/data/my_images", "--in_chans", "3"])
    assert build_config(data, model, 0).image_std == pytest.approx([0.229, 0.224, 0.225])


def test_warmup_cosine_lr():
    assert warmup_cosine_lr(0, 100, 0.5, 10, 1e-6) == 0
    assert warmup_cosine_lr(5, 100, 0.5, 10, 1e-6) == pytest.approx(0.25)
    assert warmup_cosine_lr(10, 100, 0.5, 10, 1e-6) == pytest.approx(0.5)
    assert warmup_cosine_lr(55, 100, 0.5, 10, 1e-6) == pytest.approx((0.5 + 1e-6) / 2)
    assert warmup_cosine_lr(100, 100, 0.5, 10, 1e-6) == pytest.approx(1e-6)


@pytest.mark.parametrize(
    ("lr_schedule", "use_gh", "gh_warmup_epochs", "expected"),
    [
        ("auto", True, 500, "two_stage"),  # the paper's GH runs
        ("auto", True, 0, "cosine"),  # GH from the start: no stage boundary
        ("auto", False, 500, "cosine"),  # baselines
        ("cosine", True, 500, "cosine"),
        ("two_stage", False, 500, "two_stage"),
    ],
)
def test_auto_lr_rule_in_the_trainer_and_the_model_card(lr_schedule, use_gh, gh_warmup_epochs, expected):
    assert resolve_lr_schedule(lr_schedule, use_gh, gh_warmup_epochs) == expected
    args = parse_pretrain_args(
        ["--lr_schedule", lr_schedule, "--gh_warmup_epochs", str(gh_warmup_epochs), "--num_epochs", "1000",
         "--learning_rate", "0.5", "--gh_stage_learning_rate", "0.3", "--lr_warmup_epochs", "10"]
    )[2]  # fmt: skip
    # Epoch 0: the two-stage schedule starts at the base LR, the baseline at 0 (linear warm-up).
    assert trainer_module.learning_rate_at(0, args, use_gh) == (0.5 if expected == "two_stage" else 0.0)
    card_text = card_module._schedule(asdict(args), use_gh)
    assert card_text.startswith("two-stage cosine" if expected == "two_stage" else "cosine to")
    with pytest.raises(ValueError, match="lr_schedule='step'"):
        resolve_lr_schedule("step", True, 500)


def test_two_stage_cosine_lr():
    assert two_stage_cosine_lr(0, 1000, 0.5, 0.3, 500, 1e-6) == pytest.approx(0.5)
    assert two_stage_cosine_lr(250, 1000, 0.5, 0.3, 500, 1e-6) == pytest.approx(0.4)
    assert two_stage_cosine_lr(500, 1000, 0.5, 0.3, 500, 1e-6) == pytest.approx(0.3)
    assert two_stage_cosine_lr(750, 1000, 0.5, 0.3, 500, 1e-6) == pytest.approx((0.3 + 1e-6) / 2)
    assert two_stage_cosine_lr(1000, 1000, 0.5, 0.3, 500, 1e-6) == pytest.approx(1e-6)


def test_gh_weight_ramp():
    assert gh_weight_at(499.9, 500, 10, 1.0) == 0
    assert gh_weight_at(500, 500, 10, 1.0) == 0
    assert gh_weight_at(505, 500, 10, 1.0) == pytest.approx(0.5)
    assert gh_weight_at(600, 500, 10, 1.0) == 1.0
    assert gh_weight_at(0, 0, 0, 0.7) == 0.7


def test_bank_first_sighting_copies_then_moving_average():
    bank = ScoreBank(5, 3)
    first = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    bank.update(torch.tensor([1, 3]), first, momentum=0.9)
    torch.testing.assert_close(bank.scores[[1, 3]], first)
    assert bank.seen.tolist() == [False, True, False, True, False]
    second = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    bank.update(torch.tensor([1, 4]), second, momentum=0.9)
    torch.testing.assert_close(bank.scores[1], torch.tensor([0.9, 0.0, 0.1]))
    torch.testing.assert_close(bank.scores[4], torch.tensor([0.0, 0.0, 1.0]))


def test_bank_update_matches_per_sample_loop():
    generator = torch.Generator().manual_seed(0)
    bank, reference, seen = ScoreBank(50, 4), torch.zeros(50, 4), [False] * 50
    for _ in range(20):
        indices = torch.randperm(50, generator=generator)[:16]
        scores = torch.randn(16, 4, generator=generator)
        bank.update(indices, scores, momentum=0.99)
        for i, s in zip(indices.tolist(), scores, strict=True):
            reference[i] = 0.99 * reference[i] + 0.01 * s if seen[i] else s
            seen[i] = True
    torch.testing.assert_close(bank.scores, reference)


def test_prior_recovers_planted_long_tailed_assignment():
    counts = [400, 200, 100, 50, 25, 0]
    generator = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.full((n,), k) for k, n in enumerate(counts)])
    noisy = torch.nn.functional.one_hot(labels, 6).float() + 0.3 * torch.rand(
        len(labels), 6, generator=generator
    )
    bank = ScoreBank(len(labels) + 10, 6)  # 10 samples never seen: they must not count
    bank.update(torch.arange(len(labels)), noisy, momentum=0.9)
    expected = torch.tensor(counts, dtype=torch.float32) / sum(counts)
    torch.testing.assert_close(bank.estimate_prior(), expected)
    with_floor = bank.estimate_prior(floor=10)
    torch.testing.assert_close(with_floor, (torch.tensor(counts) + 10) / (sum(counts) + 60.0))


def test_prior_of_empty_bank_is_uniform():
    torch.testing.assert_close(ScoreBank(4, 5).estimate_prior(), torch.full((5,), 0.2))
    assert prior_entropy(torch.full((5,), 0.2)) == pytest.approx(math.log(5))


def test_bank_state_round_trip_checks_shape():
    bank = ScoreBank(6, 3)
    bank.update(torch.tensor([0, 2]), torch.ones(2, 3), 0.9)
    other = ScoreBank(6, 3)
    other.load_state_dict(bank.state_dict())
    assert torch.equal(other.scores, bank.scores) and torch.equal(other.seen, bank.seen)
    with pytest.raises(ValueError, match="shape"):
        ScoreBank(7, 3).load_state_dict(bank.state_dict())


def test_prior_refresh_epochs_and_the_momentum_switch():
    from gh_hf.training.arguments import PretrainingArguments
    from gh_hf.training.prior import BankMomenta
    from gh_hf.training.trainer import is_prior_refresh_epoch

    args = PretrainingArguments(num_epochs=40, gh_warmup_epochs=20, prior_every_epochs=3)
    refreshes = [epoch for epoch in range(40) if is_prior_refresh_epoch(epoch, args)]
    assert refreshes == [20, 23, 26, 29, 32, 35, 38]  # at the warm-up boundary, then every 3 epochs
    momenta = BankMomenta(warmup=0.1, gh=0.9)
    # The switch is at the boundary, also within an epoch's fractional steps.
    assert [momenta.at(epoch, 20) for epoch in (0, 19.99, 20, 20.5, 39)] == [0.1, 0.1, 0.9, 0.9, 0.9]
    no_warmup = PretrainingArguments(num_epochs=5, gh_warmup_epochs=0, prior_every_epochs=1)
    assert all(is_prior_refresh_epoch(epoch, no_warmup) for epoch in range(5))
