"""`--init_from`: a run's backbone starts from a saved encoder; a wrong encoder fails fast, naming why."""

from __future__ import annotations

import json

import pytest
import torch

from gh_hf import GHModel
from gh_hf.training import Pretrainer, build_config, parse_pretrain_args
from tests.conftest import TINY_RUN


def _saved_encoder(folder, argv: list[str], seed: int = 123) -> GHModel:
    """An encoder of the run's architecture with weights of its own (another seed, BN statistics set)."""
    data_args, model_args, args = parse_pretrain_args(argv)
    torch.manual_seed(seed)
    encoder = GHModel(build_config(data_args, model_args, args.seed))
    with torch.no_grad():
        for name, buffer in encoder.named_buffers():
            if "running" in name:
                buffer.uniform_(0.5, 1.5)
    encoder.save_pretrained(folder)
    return encoder


def _trainer(tmp_path, argv: list[str]) -> Pretrainer:
    return Pretrainer(*parse_pretrain_args([*argv, "--output_dir", str(tmp_path / "run")]))


@pytest.mark.parametrize("ssl_method", ["simclr", "sdclr"])
def test_the_backbone_starts_from_the_encoder_and_the_head_from_its_initialisation(tmp_path, ssl_method):
    argv = [*TINY_RUN, "--ssl_method", ssl_method, "--mixed_precision", "no"]
    source = _saved_encoder(tmp_path / "encoder", argv)
    fresh = _trainer(tmp_path, argv)
    fresh.setup()
    trainer = _trainer(tmp_path, [*argv, "--init_from", str(tmp_path / "encoder")])
    trainer.setup()
    model = trainer.unwrapped()
    loaded = model.encoder.state_dict()
    for name, tensor in source.state_dict().items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0, msg=name)
    assert not torch.equal(  # without --init_from the backbone is the run's own initialisation
        fresh.unwrapped().encoder.state_dict()["backbone.conv1.weight"], loaded["backbone.conv1.weight"]
    )
    for name, tensor in fresh.unwrapped().projector.state_dict().items():  # same seed, same fresh head
        torch.testing.assert_close(model.projector.state_dict()[name], tensor, rtol=0, atol=0)
    if ssl_method == "sdclr":  # the pruned branch is rebuilt from the loaded dense BatchNorms
        pruned = model.pruned
        assert pruned is not None
        for name, tensor in source.backbone.bn1.state_dict().items():  # the stem's BatchNorm, copied
            torch.testing.assert_close(pruned.norms["encoder__backbone__bn1"].state_dict()[name], tensor,
                                       rtol=0, atol=0)  # fmt: skip
        assert all(bool((pruned.mask(name) == 1).all()) for name in pruned.weight_names)  # masks of ones
    assert json.loads((tmp_path / "run" / "training_args.json").read_text())["training"]["init_from"] == str(
        tmp_path / "encoder"
    )


def test_an_encoder_of_another_backbone_fails_before_any_data_is_loaded(tmp_path):
    wider = [*TINY_RUN, "--backbone_kwargs", '{"channels": [8, 16, 32, 32]}']
    _saved_encoder(tmp_path / "encoder", wider)
    with pytest.raises(ValueError) as failure:
        _trainer(tmp_path, [*TINY_RUN, "--init_from", str(tmp_path / "encoder")])
    message = str(failure.value)
    assert message.startswith(f"--init_from={str(tmp_path / 'encoder')!r} is invalid (training)")
    expected = "backbone_kwargs: {'channels': [8, 16, 32, 32]} there, {'channels': [8, 16, 32, 64]} here"
    assert expected in message
    assert not (tmp_path / "run").exists()


def test_a_folder_without_an_encoder_fails_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"--init_from=.*empty.* is invalid \(training\): no encoder could"):
        _trainer(tmp_path, [*TINY_RUN, "--init_from", str(tmp_path / "empty")])


def test_a_config_of_another_model_type_fails_naming_it(tmp_path):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match=r"its config.json is of model_type 'bert', not a gh_hf encoder"):
        _trainer(tmp_path, [*TINY_RUN, "--init_from", str(tmp_path / "bert")])
