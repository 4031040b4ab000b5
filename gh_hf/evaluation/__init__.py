"""Evaluation: the long-tailed accuracy metric, frozen-feature probes, kNN monitor and benchmark.

`METRIC_PATH` is the folder of the `evaluate` metric: `evaluate.load(METRIC_PATH)` loads it
offline; `LongTailedAccuracy()` is the same metric instantiated directly.
"""

from __future__ import annotations

from pathlib import Path

from gh_hf.evaluation.benchmark import BenchmarkArguments, pixel_encoder, run_benchmark, write_outputs
from gh_hf.evaluation.class_geometry import class_geometry, class_means
from gh_hf.evaluation.features import (
    PIXELS,
    PixelConfig,
    PixelEncoder,
    encoder_of,
    extract_features,
    model_fingerprint,
)
from gh_hf.evaluation.knn import knn_predict, knn_scores
from gh_hf.evaluation.linear_probe import FEATURE_NORMS, LinearProbe, linear_probe
from gh_hf.evaluation.long_tailed_accuracy.long_tailed_accuracy import (
    GROUPINGS,
    LongTailedAccuracy,
    class_groups,
    long_tailed_accuracy,
    per_class_accuracy,
)
from gh_hf.evaluation.monitor import KNNMonitor
from gh_hf.evaluation.protocols import (
    PROTOCOLS,
    ProtocolSettings,
    encoder_features,
    eval_transform_for,
    evaluate_encoder,
    evaluate_features,
    few_shot_rows,
    parse_protocols,
    run_protocol,
)
from gh_hf.evaluation.report import geometry_table, markdown_table, plot_per_class_accuracy

METRIC_PATH = str(Path(__file__).resolve().parent / "long_tailed_accuracy")

__all__ = [
    "FEATURE_NORMS",
    "GROUPINGS",
    "METRIC_PATH",
    "PIXELS",
    "PROTOCOLS",
    "BenchmarkArguments",
    "KNNMonitor",
    "LinearProbe",
    "LongTailedAccuracy",
    "PixelConfig",
    "PixelEncoder",
    "ProtocolSettings",
    "class_geometry",
    "class_groups",
    "class_means",
    "encoder_features",
    "encoder_of",
    "eval_transform_for",
    "evaluate_encoder",
    "evaluate_features",
    "extract_features",
    "few_shot_rows",
    "geometry_table",
    "knn_predict",
    "knn_scores",
    "linear_probe",
    "long_tailed_accuracy",
    "markdown_table",
    "model_fingerprint",
    "parse_protocols",
    "per_class_accuracy",
    "pixel_encoder",
    "plot_per_class_accuracy",
    "run_benchmark",
    "run_protocol",
    "write_outputs",
]
