"""Linear probe, weighted kNN and protocol parsing on small synthetic features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value

from gh_hf.evaluation import knn_predict, knn_scores, linear_probe, parse_protocols
from gh_hf.evaluation.linear_probe import probe_optimizer
from gh_hf.evaluation.protocols import ProtocolSettings, few_shot_rows


def _clusters(num_classes: int = 4, per_class: int = 100, dim: int = 16, seed: int = 0):
    # Gaussian blobs around well separated centres: linearly separable with margin.
    generator = torch.Generator().manual_seed(seed)
    centres = 6 * torch.eye(num_classes, dim)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    features = centres[labels] + torch.randn(len(labels), dim, generator=generator)
    return features, labels


def test_linear_probe_separates_separable_features():
    train_x, train_y = _clusters(seed=0)
    test_x, test_y = _clusters(per_class=50, seed=1)
    predictions, probe = linear_probe(train_x, train_y, test_x, 4, epochs=25, batch_size=50, device="cpu")
    assert predictions.dtype == torch.long and predictions.shape == test_y.shape
    assert (predictions == test_y).float().mean() > 0.95
    assert not probe.training


def test_linear_probe_is_seeded_and_standardisation_invariant():
    train_x, train_y = _clusters(seed=0)
    test_x, _ = _clusters(per_class=50, seed=1)
    kwargs = {"epochs": 3, "batch_size": 64, "device": "cpu", "seed": 3}
    first, probe = linear_probe(train_x, train_y, test_x, 4, **kwargs)
    again, probe_again = linear_probe(train_x, train_y, test_x, 4, **kwargs)
    torch.testing.assert_close(probe.linear.weight, probe_again.linear.weight, rtol=0, atol=0)
    # Standardised features: an affine rescaling of the raw features changes nothing.
    scaled, _ = linear_probe(1000 * train_x + 5, train_y, 1000 * test_x + 5, 4, **kwargs)
    assert torch.equal(first, again) and torch.equal(first, scaled)


def test_probe_schedule_reaches_final_lr():
    optimizer, scheduler = probe_optimizer([torch.nn.Parameter(torch.zeros(1))], 7, 1e-2, 1e-6, 5e-6)
    rates = []
    for _ in range(7):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == 1e-2
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-6, rel=1e-9)
    assert np.allclose(np.diff(np.log(rates)), math.log(1e-4) / 7)


def test_linear_probe_rejects_bad_arguments():
    features, labels = _clusters()
    with pytest.raises(ValueError, match="final_lr must be <= lr"):
        linear_probe(features, labels, features, 4, lr=1e-3, final_lr=1e-2, epochs=1)
    with pytest.raises(ValueError, match=r"train_labels must be in \[0, num_classes=3\)"):
        linear_probe(features, labels, features, 3, epochs=1)


def _unit(angle_degrees: float) -> list[float]:
    angle = math.radians(angle_degrees)
    return [math.cos(angle), math.sin(angle)]


def test_knn_weighted_vote_known_answer():
    # One class-0 sample on the query, two class-1 samples at 60 degrees (cosine 0.5); the
    # class-1 sample at 180 degrees is the farthest and drops out with k = 3.
    train = torch.tensor([_unit(0), _unit(60), _unit(-60), _unit(180)])
    labels = torch.tensor([0, 1, 1, 1])
    query = torch.tensor([_unit(0)]) * 7  # cosine similarity ignores the norm
    # T = 0.07: exp(1/0.07) ~ 1.6e6 beats 2 exp(0.5/0.07) ~ 2.5e3; T = 10: 1.105 < 2 x 1.051.
    assert knn_predict(train, labels, query, 2, k=3, temperature=0.07).tolist() == [0]
    assert knn_predict(train, labels, query, 2, k=3, temperature=10.0).tolist() == [1]
    scores = knn_scores(train, labels, query, 2, k=3, temperature=10.0)
    torch.testing.assert_close(scores, torch.tensor([[math.exp(0.1), 2 * math.exp(0.05)]]))


def test_knn_scores_match_slow_loop():
    generator = torch.Generator().manual_seed(0)
    train, test = torch.randn(30, 5, generator=generator), torch.randn(7, 5, generator=generator)
    labels = torch.randint(0, 3, (30,), generator=generator)
    scores = knn_scores(train, labels, test, 3, k=4, temperature=0.5, batch_size=3, device="cpu")
    for row, query in enumerate(test):
        similarity = [float(query @ x / (query.norm() * x.norm())) for x in train]
        expected = [0.0, 0.0, 0.0]
        for j in sorted(range(30), key=lambda j: -similarity[j])[:4]:
            expected[int(labels[j])] += math.exp(similarity[j] / 0.5)
        torch.testing.assert_close(scores[row], torch.tensor(expected), rtol=1e-5, atol=0)


def test_parse_protocols():
    assert parse_protocols("linear, knn,fewshot100") == ["linear", "knn", "fewshot100"]
    assert parse_protocols(["fewshot7"]) == ["fewshot7"]
    for bad in ("linear,svm", "fewshot0", ""):
        with pytest.raises(ValueError, match="protocol"):
            parse_protocols(bad)


def test_protocol_settings_record_what_each_protocol_uses():
    settings = ProtocolSettings(linear_epochs=3)
    assert settings.for_protocol("knn") == {"protocol": "knn", "k": 200, "temperature": 0.07}
    few = settings.for_protocol("fewshot50")
    assert few["shots_per_class"] == 50 and few["linear_epochs"] == 3 and "knn_k" not in few


def test_few_shot_rows_are_balanced_and_index_the_dataset():
    labels = [0, 1, 2] * 5 + [0] * 4
    features = Features({"label": ClassLabel(names=["a", "b", "c"]), "x": Value("int64")})
    dataset = Dataset.from_dict({"label": labels, "x": list(range(len(labels)))}, features=features)
    rows = few_shot_rows(dataset, 3, seed=0)
    assert np.bincount(np.asarray(labels)[rows]).tolist() == [3, 3, 3]
    assert len(set(rows.tolist())) == 9
    assert np.array_equal(rows, few_shot_rows(dataset, 3, seed=0))
