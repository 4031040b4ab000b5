"""The anchor prior: bank momentum rule, known-prior option, refresh diagnostics, the investigation."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gh_hf.training import ScoreBank, parse_pretrain_args
from gh_hf.training import trainer as trainer_module
from gh_hf.training.prior import (
    BankMomenta,
    anchor_class_counts,
    anchor_purity,
    auto_bank_momentum,
    match_prior_to_anchors,
    plot_prior_history,
    prior_diagnostics,
    read_refreshes,
    refreshed_prior,
    resolve_bank_momenta,
    resolve_class_prior,
    total_variation,
)
from tests.conftest import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]
# Subprocesses import this checkout's gh_hf, whatever an installed copy says.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def preset_momenta(preset: str, *extra: str) -> tuple[BankMomenta, int]:
    _, _, args = parse_pretrain_args(["--preset", preset, *extra])
    momenta = resolve_bank_momenta(
        args.bank_momentum_warmup, args.bank_momentum, args.gh_warmup_epochs, args.num_epochs
    )
    return momenta, args.gh_warmup_epochs


# ---- bank momentum -------------------------------------------------------------------------------
def test_auto_momentum_is_exactly_the_papers_on_the_paper_schedule():
    for preset in ("cifar100_lt", "cifar10_lt"):
        momenta, _ = preset_momenta(preset)
        assert momenta == BankMomenta(warmup=0.9, gh=0.999), preset


def epoch_weights_at_gh_start(momenta: BankMomenta, warmup_epochs: int) -> torch.Tensor:
    """Simulates the bank of one sample seen once per warm-up epoch, epoch e scoring the one-hot e_e."""
    bank = ScoreBank(1, warmup_epochs)
    for epoch in range(warmup_epochs):
        bank.update(
            torch.tensor([0]), torch.eye(warmup_epochs)[epoch : epoch + 1], momenta.at(epoch, warmup_epochs)
        )
    return bank.scores[0]  # weight of each epoch's scores in the bank at the first GH epoch


def test_auto_momentum_forgets_epoch_zero_by_the_gh_start_on_fashion_mnist_lt():
    momenta, warmup_epochs = preset_momenta("fashion_mnist_lt")
    weights = epoch_weights_at_gh_start(momenta, warmup_epochs)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[0] < 0.01
    # The paper's fixed 0.9 keeps 0.9^(W-1) of epoch 0 (first sighting copies): 73% on the old
    # 4-epoch warm-up (the stale prior of issue 12), 1.6% on today's 40 epochs.
    fixed = epoch_weights_at_gh_start(BankMomenta(0.9, 0.999), warmup_epochs)
    assert fixed[0] == pytest.approx(0.9 ** (warmup_epochs - 1), rel=1e-5) and fixed[0] > 10 * weights[0]
    assert epoch_weights_at_gh_start(BankMomenta(0.9, 0.999), 4)[0] == pytest.approx(0.729)


def test_auto_momentum_keeps_the_papers_memory_over_the_same_share_of_a_stage():
    # What is left of a score after 10% of the stage is what the paper keeps after 50 of its 500 epochs.
    for stage in (4, 50, 100, 1000):
        kept = auto_bank_momentum(0.9, 500, stage) ** (0.1 * stage)
        assert kept == pytest.approx(0.9**50, rel=1e-9), stage


def test_auto_momentum_of_a_stage_without_epochs_is_zero():
    assert auto_bank_momentum(0.9, 500, 0) == 0.0
    assert resolve_bank_momenta("auto", "auto", gh_warmup_epochs=0, num_epochs=10).warmup == 0.0
    assert resolve_bank_momenta("auto", "auto", gh_warmup_epochs=10, num_epochs=10).gh == 0.0
    assert resolve_bank_momenta("auto", "auto", gh_warmup_epochs=20, num_epochs=10).gh == 0.0
    with pytest.raises(ValueError, match="stage_epochs=-1"):
        auto_bank_momentum(0.9, 500, -1)


def test_explicit_momenta_are_kept_and_bad_ones_name_the_argument(tmp_path):
    momenta, _ = preset_momenta("fashion_mnist_lt", "--bank_momentum_warmup", "0.5", "--bank_momentum", "0")
    assert momenta == BankMomenta(warmup=0.5, gh=0.0)
    config = tmp_path / "run.yaml"
    config.write_text("bank_momentum: 0.99\n")  # YAML gives a float
    assert parse_pretrain_args(["--config", str(config)])[2].bank_momentum == 0.99
    for value in ("1.0", "-0.1", "nan", "fast"):
        with pytest.raises(
            ValueError, match=rf"--bank_momentum={value!r} is invalid.*'auto' or a float in \[0, 1\)"
        ):
            parse_pretrain_args(["--bank_momentum", value])


# ---- the known prior ---------------------------------------------------------------------------
def test_known_masses_go_to_anchors_by_occupancy_rank():
    masses = torch.tensor([0.1, 0.6, 0.3])
    prior = match_prior_to_anchors(masses, torch.tensor([5, 1, 9]))
    torch.testing.assert_close(prior, torch.tensor([0.3, 0.1, 0.6]))
    tied = match_prior_to_anchors(torch.tensor([0.2, 0.5, 0.3]), torch.tensor([3, 3, 1]))
    torch.testing.assert_close(tied, torch.tensor([0.5, 0.3, 0.2]))  # a tie goes to the lower anchor id


def test_matching_equals_a_reference_loop():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        masses = torch.rand(12, generator=generator)
        occupancy = torch.randint(0, 4, (12,), generator=generator)  # many ties
        order = sorted(range(12), key=lambda k: (-int(occupancy[k]), k))
        expected = torch.empty(12)
        for rank, anchor in enumerate(order):
            expected[anchor] = sorted(masses.tolist(), reverse=True)[rank]
        torch.testing.assert_close(match_prior_to_anchors(masses, occupancy), expected)


def test_class_prior_file_is_normalised_and_sorted(tmp_path):
    path = tmp_path / "prior.json"
    path.write_text("[1, 3, 2, 4]")
    torch.testing.assert_close(resolve_class_prior(str(path), 4), torch.tensor([0.4, 0.3, 0.2, 0.1]))
    assert (
        resolve_class_prior("estimated", 4) == "estimated" and resolve_class_prior("uniform", 4) == "uniform"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("[1, 2,", "not JSON"),
        ('{"a": 1}', "not a JSON list of numbers"),
        ('[1, "2", 3]', "not a JSON list of numbers"),
        ("[1, true, 3]", "not a JSON list of numbers"),
        ("[1, 2]", "holds 2 frequencies"),
        ("[1, 0, 3]", "holds 0"),
        ("[1, -2, 3]", "holds -2"),
        ("[1, NaN, 3]", "holds nan"),
        ("[1, Infinity, 3]", "holds inf"),
    ],
)
def test_bad_class_prior_file_names_the_argument_and_what_is_allowed(tmp_path, content, message):
    path = tmp_path / "prior.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(
        ValueError, match=rf"--class_prior='.*prior.json'.*{message}.*allowed: 'estimated', 'uniform'.*3"
    ):
        resolve_class_prior(str(path), 3)


def test_bad_class_prior_fails_before_data_is_loaded(monkeypatch, tmp_path):
    def no_data(*args, **kwargs):
        raise AssertionError("data was loaded")

    monkeypatch.setattr(trainer_module, "load_long_tailed_train", no_data)
    args = parse_pretrain_args(["--class_prior", "estimate", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="--class_prior='estimate' is invalid: no such file"):
        trainer_module.Pretrainer(*args)


def test_pretrain_script_turns_a_bad_class_prior_into_one_line_and_exit_code_2(tmp_path):
    prior = tmp_path / "prior.json"
    prior.write_text("[0.5, 0.5]")  # the demo preset has 10 anchors
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "pretrain.py"),
            "--class_prior",
            str(prior),
            "--output_dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: --class_prior=") and "holds 2 frequencies" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_refreshed_prior_follows_the_class_prior_option():
    bank = ScoreBank(6, 3)
    bank.update(torch.arange(5), torch.eye(3)[[2, 2, 2, 0, 0]], momentum=0.0)  # occupancy (2, 0, 3)
    torch.testing.assert_close(refreshed_prior(bank, "estimated"), torch.tensor([0.4, 0.0, 0.6]))
    torch.testing.assert_close(refreshed_prior(bank, "estimated", floor=1.0), torch.tensor([3, 1, 4]) / 8.0)
    torch.testing.assert_close(refreshed_prior(bank, "uniform"), torch.full((3,), 1 / 3))
    known = torch.tensor([0.7, 0.2, 0.1])
    torch.testing.assert_close(refreshed_prior(bank, known), torch.tensor([0.2, 0.1, 0.7]))


# ---- diagnostics -------------------------------------------------------------------------------
def test_total_variation_pads_the_shorter_distribution():
    assert total_variation(torch.tensor([0.5, 0.5]), torch.tensor([1.0])) == pytest.approx(0.5)
    assert total_variation(torch.tensor([0.2, 0.8]), torch.tensor([0.2, 0.8])) == 0


def test_anchor_purity_matches_a_reference_loop():
    generator = torch.Generator().manual_seed(0)
    assignments = torch.randint(0, 5, (300,), generator=generator)
    labels = torch.randint(0, 4, (300,), generator=generator)
    per_anchor, mean = anchor_purity(assignments, labels, num_anchors=6)  # anchor 5 is empty
    majority_total = 0
    for anchor in range(6):
        members = [int(y) for a, y in zip(assignments, labels, strict=True) if a == anchor]
        if not members:
            assert per_anchor[anchor] is None
            continue
        majority = max(members.count(c) for c in set(members))
        majority_total += majority
        assert per_anchor[anchor] == pytest.approx(majority / len(members), abs=1e-4)
    assert mean == pytest.approx(majority_total / 300)


def test_prior_diagnostics_of_a_planted_assignment():
    assignments = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    labels = torch.tensor([5, 5, 5, 1, 1, 1, 3, 1])  # class frequencies 4/8, 3/8, 1/8
    prior = torch.tensor([0.5, 0.25, 0.25])
    counts = anchor_class_counts(assignments, labels, 3)
    assert counts.shape == (3, 6) and counts[0, 5] == 3 and counts.sum() == 8
    values = prior_diagnostics(prior, torch.full((3,), 1 / 3), counts.sum(1), counts)
    assert values["prior_sorted"] == [0.5, 0.25, 0.25] and values["anchor_occupancy"] == [4, 2, 2]
    assert values["prior_entropy"] == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)))
    assert values["prior_drift"] == pytest.approx(1 / 6)
    assert values["class_frequencies_sorted"] == [0.5, 0.375, 0.125]
    assert values["prior_tv_to_classes"] == pytest.approx(0.125)
    assert values["anchor_purity"] == [0.75, 1.0, 0.5] and values["anchor_purity_mean"] == pytest.approx(
        6 / 8
    )
    assert "anchor_purity" not in prior_diagnostics(prior, prior, counts.sum(1), None)


def test_prior_figure_from_the_log_keeps_the_last_record_of_an_epoch(tmp_path):
    log = tmp_path / "log.jsonl"
    records = [
        {"loss": 1.0, "epoch": 0.5, "step": 1},
        {"epoch": 1, "anchor_occupancy": [3, 1, 0], "class_frequencies_sorted": [0.6, 0.3, 0.1], "step": 2},
        {"epoch": 2, "anchor_occupancy": [2, 2, 0], "step": 4},
        {"epoch": 2, "anchor_occupancy": [2, 1, 1], "step": 4},  # a resumed run's repeat
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    refreshes = read_refreshes(log)
    assert [r["epoch"] for r in refreshes] == [1, 2] and refreshes[1]["anchor_occupancy"] == [2, 1, 1]
    plot_prior_history(refreshes, tmp_path / "prior.png")
    assert (tmp_path / "prior.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_import_gh_hf_does_not_load_matplotlib():
    code = (
        "import sys, gh_hf, gh_hf.training, gh_hf.training.investigation; print('matplotlib' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=ENV)
    assert result.stdout.strip() == "False"


# ---- a short run, and the investigation of its model --------------------------------------------
TINY = [*TINY_RUN, "--num_epochs", "3", "--logging_steps", "5", "--checkpoint_every_epochs", "0"]


@pytest.fixture(scope="module")
def known_prior_run(tmp_path_factory):
    from accelerate.state import AcceleratorState

    from gh_hf.training import Pretrainer

    out = tmp_path_factory.mktemp("known_prior")
    (out / "prior.json").write_text(json.dumps([10, 1, 2, 3, 4, 5, 6, 7, 8, 9]))
    trainer = Pretrainer(
        *parse_pretrain_args([*TINY, "--output_dir", str(out), "--class_prior", str(out / "prior.json")])
    )
    try:
        trainer.train()
    finally:
        AcceleratorState._reset_state(True)
    return trainer, out


@pytest.mark.slow
def test_a_run_logs_its_resolved_momenta_and_records_them_as_its_args(known_prior_run):
    trainer, out = known_prior_run
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    expected = resolve_bank_momenta("auto", "auto", gh_warmup_epochs=1, num_epochs=3)
    assert {"bank_momentum_warmup": expected.warmup, "bank_momentum": expected.gh, "step": 0} in logs
    saved = json.loads((out / "training_args.json").read_text())["training"]
    assert (saved["bank_momentum_warmup"], saved["bank_momentum"]) == (expected.warmup, expected.gh)
    exported = json.loads((out / "encoder" / "training_args.json").read_text())["training"]
    assert exported["bank_momentum"] == expected.gh


@pytest.mark.slow
def test_every_refresh_logs_the_diagnostics_and_the_known_prior_follows_occupancy(known_prior_run):
    trainer, out = known_prior_run
    refreshes = read_refreshes(out / "log.jsonl")
    assert [r["epoch"] for r in refreshes] == [1, 2]
    known = torch.tensor([10.0, 1, 2, 3, 4, 5, 6, 7, 8, 9]) / 55
    for refresh in refreshes:
        expected = match_prior_to_anchors(known, torch.tensor(refresh["anchor_occupancy"]))
        torch.testing.assert_close(torch.tensor(refresh["prior"]), expected, atol=1e-6, rtol=0)
        assert 0 < sum(refresh["anchor_occupancy"]) <= len(trainer.train_dataset)  # samples seen so far
        assert 0 <= refresh["prior_tv_to_classes"] <= 1 and 0 < refresh["anchor_purity_mean"] <= 1
    assert refreshes[0]["prior_drift"] == pytest.approx(
        total_variation(torch.tensor(refreshes[0]["prior"]), torch.full((10,), 0.1)), abs=1e-5
    )
    torch.testing.assert_close(
        trainer.unwrapped().class_prior.cpu(), torch.tensor(refreshes[-1]["prior"]), atol=1e-6, rtol=0
    )
    assert (out / "prior.png").stat().st_size > 0


def test_anchor_ownership_names_each_anchors_majority_class_and_counts_owners_per_group():
    from gh_hf.training.investigation import anchor_ownership

    # 6 classes (counts 50, 40, 30, 20, 10, 5 -> Many {0, 1}, Medium {2, 3}, Few {4, 5}), 5 anchors
    table = torch.tensor(
        [
            [30, 20, 0, 0, 0],  # class 0 owns anchors 0 and 1
            [10, 10, 20, 0, 0],  # class 1 owns anchor 2
            [0, 10, 10, 10, 0],  # class 2: second everywhere it lands, no anchor
            [0, 0, 0, 20, 0],  # class 3 owns anchor 3
            [0, 5, 0, 0, 5],  # a tie on anchor 4 goes to the lower class id (4)
            [0, 0, 0, 0, 5],
        ]
    )
    table = torch.cat([table, torch.zeros(6, 1, dtype=torch.long)], dim=1)  # anchor 5 is empty
    report = anchor_ownership(table)
    assert report["majority_class_of_anchor"] == [0, 0, 1, 3, 4, None]
    assert report["classes_owning_an_anchor"] == [0, 1, 3, 4]
    assert report["anchors_owned_by_group"] == {"many": 3, "medium": 1, "few": 1}
    assert report["classes_owning_by_group"] == {"many": "2/2", "medium": "1/2", "few": "1/2"}


@pytest.mark.slow
def test_investigation_scores_the_split_with_the_current_model(known_prior_run):
    from gh_hf.data import build_eval_transform
    from gh_hf.training.investigation import anchor_assignments, investigate_anchors

    trainer, _ = known_prior_run
    model, dataset = trainer.unwrapped(), trainer.train_dataset
    model.train()
    anchors, labels = anchor_assignments(model, dataset, batch_size=100)
    assert model.training  # the mode is restored
    config = model.config
    transform = build_eval_transform(config.image_size, config.in_chans, config.image_mean, config.image_std)
    model.eval()
    with torch.no_grad():
        pixels = torch.stack([transform(image) for image in dataset["image"]])
        expected = model.anchor_scores(model.projector(model.encoder(pixels).pooler_output)).argmax(1)
    model.train()
    assert torch.equal(anchors, expected) and torch.equal(labels, torch.tensor(dataset["label"]))
    report = investigate_anchors(model, dataset)
    assert report["anchor_occupancy"] == torch.bincount(expected, minlength=10).tolist()
    table = torch.tensor(report["images_per_class_and_anchor"])
    assert table.sum(0).tolist() == report["anchor_occupancy"]
    assert table.sum(1).tolist() == torch.bincount(labels).tolist() == report["class_counts"]
    assert report["anchor_purity_mean"] == pytest.approx(anchor_purity(expected, labels, 10)[1], abs=1e-4)


@pytest.mark.slow
def test_load_run_loads_the_checkpoint_it_is_named_and_names_those_there_are(known_prior_run, tmp_path):
    from safetensors.torch import save_file

    from gh_hf.training.investigation import load_run, split_features

    trainer, out = known_prior_run
    (tmp_path / "training_args.json").write_text((out / "training_args.json").read_text())
    state = {name: tensor.detach().clone() for name, tensor in trainer.unwrapped().state_dict().items()}
    for name, shift in (("warmup", 1.0), ("step_00000002", 2.0), ("step_00000010", 3.0)):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
        shifted = {**state, "projector.layers.0.weight": state["projector.layers.0.weight"] + shift}
        save_file(shifted, str(tmp_path / "checkpoints" / name / "model.safetensors"))
    for checkpoint, shift in ((None, 3.0), ("warmup", 1.0), ("step_00000002", 2.0)):
        model, dataset = load_run(tmp_path, checkpoint)  # None: the latest step_N
        torch.testing.assert_close(
            model.projector.layers[0].weight, state["projector.layers.0.weight"] + shift
        )
    assert dataset["label"] == trainer.train_dataset["label"]  # the run's split, rebuilt from its arguments
    features, projections, labels = split_features(model, dataset, batch_size=100)
    assert model.training  # the mode is restored
    with torch.no_grad():
        torch.testing.assert_close(projections, model.eval().projector(features))
    assert torch.equal(labels, torch.tensor(dataset["label"]))
    with pytest.raises(
        ValueError, match=r"checkpoint='step_5' .* it has \['step_00000002', 'step_00000010', 'warmup'\]"
    ):
        load_run(tmp_path, "step_5")


def test_cluster_purity_finds_classes_that_are_there_and_not_those_that_are_not():
    from gh_hf.training.investigation import cluster_purity

    generator = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(4, 16, generator=generator), dim=1)
    labels = torch.tensor([0] * 200 + [1] * 100 + [2] * 60 + [3] * 40)
    vectors = 5 * centres[labels] + 0.3 * torch.randn(len(labels), 16, generator=generator)
    assert cluster_purity(vectors, labels, 4) == pytest.approx(1.0)
    # The same points with labels that ignore them: no partition does better than about the head's share.
    blind = labels[torch.randperm(len(labels), generator=generator)]
    assert cluster_purity(vectors, blind, 4) < 0.6
