"""evaluate_encoder, KNNMonitor, the pixel floor and scripts/benchmark.py on scikit-learn's digits."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gh_hf.evaluation import (
    BenchmarkArguments,
    KNNMonitor,
    ProtocolSettings,
    evaluate_encoder,
    markdown_table,
)
from gh_hf.evaluation.benchmark import pretraining_class_counts

REPO = Path(__file__).resolve().parents[1]
TINY = {"backbone": "resnet18", "backbone_kwargs": {"channels": [8, 16, 32, 64]}, "in_chans": 1}
METRIC_KEYS = {"accuracy", "many", "medium", "few", "per_class_std", "per_class_accuracy"}


def _tiny_encoder(seed: int):
    from gh_hf import GHConfig, GHModel

    torch.manual_seed(seed)
    return GHModel(GHConfig(**TINY, image_size=16, small_input_stem=True))


@pytest.fixture(scope="module")
def digits():
    from gh_hf.data import load_image_dataset

    return load_image_dataset("digits", split="train"), load_image_dataset("digits", split="test")


# Groups of the digits-LT counts the tests use ([140, 108, ..., 14], thirds).
GROUPS = {"many": [0, 1, 2, 3], "medium": [4, 5, 6], "few": [7, 8, 9]}


def _check_metrics(metrics: dict) -> None:
    """The metrics agree with their per-class accuracies (digits' test set has every class)."""
    assert set(metrics) == METRIC_KEYS and len(metrics["per_class_accuracy"]) == 10
    per_class = np.asarray(metrics["per_class_accuracy"])
    assert ((per_class >= 0) & (per_class <= 1)).all()
    for group, classes in GROUPS.items():
        assert metrics[group] == pytest.approx(per_class[classes].mean()), group
    assert metrics["per_class_std"] == pytest.approx(per_class.std())
    # Over samples, a mixture of the per-class accuracies (digits' test classes hold 35-37 images).
    assert per_class.min() - 1e-9 <= metrics["accuracy"] <= per_class.max() + 1e-9
    assert metrics["accuracy"] == pytest.approx(per_class.mean(), abs=0.02)


@pytest.mark.slow
def test_evaluate_encoder_reuses_cached_features(digits, tmp_path):
    train, test = digits
    counts = [140, 108, 83, 64, 50, 38, 30, 23, 18, 14]
    model = _tiny_encoder(0)
    kwargs = {"protocols": "knn,fewshot20", "cache_dir": str(tmp_path), "batch_size": 512}
    kwargs["settings"] = ProtocolSettings(linear_epochs=20)
    first = evaluate_encoder(model, train, test, counts, **kwargs)
    assert set(first) == {"knn", "fewshot20"}
    for metrics in first.values():
        _check_metrics(metrics)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2  # train and test features
    model.forward = None  # a second run must not touch the model
    assert evaluate_encoder(model, train, test, counts, **kwargs) == first


@pytest.mark.slow
def test_knn_monitor_on_pretraining_model_restores_train_mode(digits, tiny_config):
    from gh_hf import GHForPreTraining
    from gh_hf.data import build_eval_transform, with_eval_transform

    _, test = digits
    model = GHForPreTraining(tiny_config).train()
    transform = build_eval_transform(16, 1, tiny_config.image_mean, tiny_config.image_std)
    bank = with_eval_transform(test, transform)
    monitor = KNNMonitor(bank, bank, class_counts=[36] * 5 + [4] * 5, k=1, batch_size=512)
    result = monitor(model)
    assert set(result) == {"knn_accuracy", "knn_many", "knn_medium", "knn_few", "knn_std"}
    # k = 1 on the bank itself: every query finds itself (no two digits images are identical).
    assert result["knn_accuracy"] == 1.0 and result["knn_few"] == 1.0 and result["knn_std"] == 0.0
    assert model.training


def test_benchmark_arguments_validate():
    with pytest.raises(ValueError, match="grouping"):
        BenchmarkArguments(encoders=["x"], grouping="halves")
    with pytest.raises(ValueError, match="protocol"):
        BenchmarkArguments(encoders=["x"], protocols="linear,svm")
    with pytest.raises(ValueError, match="encoders"):
        BenchmarkArguments()
    args = BenchmarkArguments(encoders=["x"], class_counts="5,3,1")
    assert pretraining_class_counts(args, train=None) == [5, 3, 1]
    with pytest.raises(ValueError, match="needs --test_split_file"):
        BenchmarkArguments(encoders=["x"], dataset="split_file", train_split_file="a.txt", class_counts="1")
    with pytest.raises(ValueError, match="needs --class_counts"):
        BenchmarkArguments(encoders=["x"], dataset="split_file", train_split_file="a", test_split_file="b")
    with pytest.raises(ValueError, match="need dataset='split_file', got dataset='digits'"):
        BenchmarkArguments(encoders=["x"], dataset="digits", test_split_file="b.txt")
    with pytest.raises(ValueError, match="comma-separated integers.*got '5,x'"):
        pretraining_class_counts(BenchmarkArguments(encoders=["x"], class_counts="5,x"), train=None)
    with pytest.raises(ValueError, match="pixels_image_size must be >= 1.*got 0"):
        BenchmarkArguments(encoders=["pixels"], pixels_image_size=0)


def test_pixel_features_are_flattened_normalised_eval_images(digits):
    from gh_hf.data import DATASET_STATS, build_eval_transform, with_eval_transform
    from gh_hf.evaluation import extract_features, pixel_encoder

    _, test = digits
    encoder = pixel_encoder("digits", test)
    (mean,), (std,) = DATASET_STATS["digits"]
    assert (encoder.config.image_size, encoder.config.in_chans) == (8, 1) and encoder.num_features == 64
    assert encoder.config.image_mean == (mean,) and encoder.config.image_std == (std,)
    transform = build_eval_transform(8, 1, [mean], [std])
    features, labels = extract_features(encoder, with_eval_transform(test, transform), batch_size=100)
    # The reference from the formula: uint8 pixels / 255, minus the mean, over the std, row-major.
    images = np.stack([np.asarray(image, dtype=np.float32) for image in test["image"]])  # (N, 8, 8)
    expected = torch.from_numpy((images / 255.0 - mean) / std).reshape(len(test), 64)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)
    assert labels.tolist() == list(test["label"])
    assert pixel_encoder("digits", test, image_size=16).num_features == 256


def test_pixel_row_knn_beats_chance_and_reuses_the_cache(digits, tmp_path):
    """Pixel kNN on digits is a classic strong baseline (~97%, scikit-learn's docs): far above 10%."""
    from gh_hf.evaluation import pixel_encoder

    train, test = digits
    counts = [140, 108, 83, 64, 50, 38, 30, 23, 18, 14]
    encoder = pixel_encoder("digits", train)
    kwargs = {"protocols": "knn", "cache_dir": str(tmp_path), "batch_size": 512}
    first = evaluate_encoder(encoder, train, test, counts, **kwargs)
    _check_metrics(first["knn"])
    assert first["knn"]["accuracy"] > 0.9 and first["knn"]["few"] > 0.8
    assert len(list(tmp_path.glob("*.safetensors"))) == 2  # train and test features
    encoder.forward = None  # a second run must read the cache, not the images
    assert evaluate_encoder(encoder, train, test, counts, **kwargs) == first
    # Another eval size is another feature set, not a cache hit.
    resized = evaluate_encoder(pixel_encoder("digits", train, image_size=12), train, test, counts, **kwargs)
    assert len(list(tmp_path.glob("*.safetensors"))) == 4 and resized["knn"]["accuracy"] > 0.9


def test_benchmark_puts_the_pixel_row_in_table_and_figure(digits, tmp_path, monkeypatch):
    from gh_hf.evaluation import benchmark, run_benchmark

    drawn = {}
    monkeypatch.setattr(benchmark, "plot_per_class_accuracy", lambda per_class, *_: drawn.update(per_class))
    encoder = str(tmp_path / "run" / "encoder")
    _tiny_encoder(0).save_pretrained(encoder)
    args = BenchmarkArguments(
        encoders=[encoder, "pixels"],
        dataset="digits",
        imbalance_ratio=10,
        max_per_class=140,
        protocols="knn",
        output_dir=str(tmp_path / "bench"),
    )
    report = run_benchmark(args)
    assert list(report["results"]) == [encoder, "pixels"]
    pixels = report["results"]["pixels"]["knn"]
    assert pixels["settings"] == {"protocol": "knn", "k": 200, "temperature": 0.07}
    assert pixels["metrics"]["accuracy"] > 0.9
    rows = (tmp_path / "bench" / "results.md").read_text().splitlines()
    assert [row.split(" | ")[0] for row in rows[2:]] == ["| run", "| pixels"]
    assert set(drawn) == {"run", "pixels"} and drawn["pixels"] == pixels["metrics"]["per_class_accuracy"]


def test_benchmark_geometry_comes_from_the_probes_features(digits, tmp_path, monkeypatch):
    from gh_hf.evaluation import (
        benchmark,
        class_geometry,
        encoder_features,
        pixel_encoder,
        protocols,
        run_benchmark,
    )

    monkeypatch.setattr(benchmark, "plot_per_class_accuracy", lambda *_: None)
    train, test = digits
    counts = [140, 108, 83, 64, 50, 38, 30, 23, 18, 14]
    expected = class_geometry(*encoder_features(pixel_encoder("digits", train), train, test), counts)
    extracted = []
    real_extract = protocols.extract_features
    monkeypatch.setattr(
        protocols,
        "extract_features",
        lambda *args, **kwargs: extracted.append(1) or real_extract(*args, **kwargs),
    )
    args = BenchmarkArguments(encoders=["pixels"], dataset="digits", class_counts=",".join(map(str, counts)),
                              protocols="knn", geometry=True, output_dir=str(tmp_path / "bench"))  # fmt: skip
    report = run_benchmark(args)
    assert len(extracted) == 2  # train and test, once each, for the kNN and the geometry together
    geometry = report["geometry"]["pixels"]
    assert geometry == expected
    # Pixel digits: well-separated classes, so the nearest class mean is nearly always right.
    assert geometry["overall"]["centroid_accuracy"] > 0.85 and geometry["few"]["neighbour_cosine"] < 1
    saved = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert saved["geometry"]["pixels"] == geometry  # floats round-trip through JSON exactly
    rows = (tmp_path / "bench" / "results.md").read_text().splitlines()
    (row,) = [row for row in rows if row.startswith("| pixels |") and row.count("|") > 10]
    assert row.split(" | ")[1] == f"{100 * geometry['overall']['centroid_accuracy']:.2f}"
    without = run_benchmark(BenchmarkArguments(**{**vars(args), "geometry": False}))
    assert "geometry" not in without and without["results"] == report["results"]


def _write_split(root: Path, name: str, dataset, per_class: list[int]) -> Path:
    """A "path label" split file of the first per_class[c] images of each class, saved as PNGs."""
    lines, taken = [], [0] * len(per_class)
    for index, (image, label) in enumerate(zip(dataset["image"], dataset["label"], strict=True)):
        if taken[label] < per_class[label]:
            taken[label] += 1
            path = Path(name) / f"{label}" / f"{index}.png"
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            image.save(root / path)
            lines.append(f"{path} {label}")
    split_file = root / f"{name}.txt"
    split_file.write_text("\n".join(lines) + "\n")
    return split_file


@pytest.mark.slow
def test_benchmark_on_split_files_as_imagenet_lt(digits, tmp_path):
    """ImageNet-LT style: balanced train / test split files, class counts from the LT split file."""
    from gh_hf.evaluation import run_benchmark

    train, test = digits
    lt_counts = [60, 40, 25, 18, 12, 9, 7, 5, 4, 3]
    files = {
        "train": _write_split(tmp_path / "images", "train", train, [30] * 10),
        "test": _write_split(tmp_path / "images", "test", test, [15] * 10),
        "lt": _write_split(tmp_path / "images", "lt", train, lt_counts),
    }
    encoder = str(tmp_path / "encoder")
    _tiny_encoder(0).save_pretrained(encoder)
    args = BenchmarkArguments(
        encoders=[encoder],
        dataset="split_file",
        train_split_file=str(files["train"]),
        test_split_file=str(files["test"]),
        class_counts=str(files["lt"]),
        grouping="thresholds",
        protocols="knn,fewshot10",
        linear_epochs=2,
        output_dir=str(tmp_path / "bench"),
    )
    report = run_benchmark(args)
    assert report["dataset"]["class_counts"] == lt_counts
    assert report["dataset"]["num_train"] == 300 and report["dataset"]["num_test"] == 150
    # thresholds: Many > 100 (none here), Medium 20..100, Few < 20
    assert report["dataset"]["groups"] == {"many": [], "medium": [0, 1, 2], "few": [3, 4, 5, 6, 7, 8, 9]}
    for entry in report["results"][encoder].values():
        assert 0.0 <= entry["metrics"]["accuracy"] <= 1.0


def test_markdown_table_formats_percentages_and_nan():
    metrics = {"accuracy": 0.5, "many": 1.0, "medium": math.nan, "few": 0.123456, "per_class_std": 0.25}
    table = markdown_table({"enc": {"linear": {"metrics": metrics}}})
    assert table.splitlines()[2] == "| enc | linear | 50.00 | 100.00 | n/a | 12.35 | 25.00 |"


@pytest.mark.slow
def test_benchmark_script_end_to_end(tmp_path):
    encoders = []
    for seed in (0, 1):
        encoders.append(str(tmp_path / f"encoder{seed}"))
        _tiny_encoder(seed).save_pretrained(encoders[-1])
    encoders.append("pixels")
    output = tmp_path / "bench"
    command = [sys.executable, str(REPO / "scripts" / "benchmark.py"), "--encoders", *encoders]
    command += ["--dataset", "digits", "--imbalance_ratio", "10", "--max_per_class", "140"]
    command += ["--protocols", "linear,knn,fewshot50", "--linear_epochs", "3", "--output_dir", str(output)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # The script's own folder leads sys.path: name this checkout so it runs this gh_hf, not an install.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert completed.returncode == 0, completed.stderr[-4000:]

    report = json.loads((output / "results.json").read_text())
    assert report["dataset"]["class_counts"] == [140, 108, 83, 64, 50, 38, 30, 23, 18, 14]
    assert report["dataset"]["groups"] == {"many": [0, 1, 2, 3], "medium": [4, 5, 6], "few": [7, 8, 9]}
    assert set(report["results"]) == set(encoders)
    for protocols in report["results"].values():
        assert list(protocols) == ["linear", "knn", "fewshot50"]
        for entry in protocols.values():
            _check_metrics(entry["metrics"])
        assert protocols["fewshot50"]["settings"]["shots_per_class"] == 50
        assert protocols["linear"]["settings"]["linear_epochs"] == 3
    table = (output / "results.md").read_text()
    assert len(table.splitlines()) == 2 + 9 and table in completed.stdout
    assert sum(line.startswith("| pixels | ") for line in table.splitlines()) == 3
    png = (output / "per_class_accuracy.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_plot_with_many_encoders_puts_the_legend_beside_it(tmp_path):
    from gh_hf.evaluation.report import plot_per_class_accuracy

    counts = [100, 50, 20, 10]
    widths = {}
    for number in (2, 12):
        per_class = {f"run{index}": [0.9, 0.8, 0.7, 0.6 - 0.01 * index] for index in range(number)}
        path = tmp_path / f"{number}.png"
        plot_per_class_accuracy(per_class, counts, path, "t", {"many": [0], "medium": [1, 2], "few": [3]})
        widths[number] = int.from_bytes(path.read_bytes()[16:20], "big")  # PNG IHDR width
    assert widths[2] < widths[12]  # a wider canvas holds the legend outside the axes
