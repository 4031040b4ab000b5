"""Benchmark results of one encoder (from `scripts/benchmark.py`'s results.json) for its model card."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult

from gh_hf.data.sources import canonical_source_name, source_hub_id
from gh_hf.formatting import percent

FIGURE_FILE = "per_class_accuracy.png"
# Dataset name (as gh_hf.data names it) -> title; the Hub ids are the data layer's (`source_hub_id`).
DATASET_TITLES = {
    "fashion_mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "digits": "scikit-learn digits",
    "imagenet_lt": "ImageNet-LT",
    "places_lt": "Places-LT",
}
# results.json metric key -> (table column, model-index metric type, metric title).
METRICS = (
    ("accuracy", "Overall", "accuracy", "Top-1 accuracy"),
    ("many", "Many", "accuracy_many", "Many-shot top-1 accuracy"),
    ("medium", "Medium", "accuracy_medium", "Medium-shot top-1 accuracy"),
    ("few", "Few", "accuracy_few", "Few-shot top-1 accuracy"),
    ("per_class_std", "Std", "per_class_accuracy_std", "Std of per-class top-1 accuracy"),
)
FEATURE_NORM_TEXT = {
    "standardize": "standardised features",
    "l2": "L2-normalised features",
    "none": "raw features",
}
GROUPING_TEXT = {
    "thirds": "classes sorted by their count in the long-tailed pretraining split, split into thirds "
    "(Many = top third, Medium = middle third, Few = bottom third)",
    "thresholds": "classes grouped by their count in the long-tailed pretraining split "
    "(Many > 100 images, Medium 20-100, Few < 20)",
}


def dataset_title(name: str) -> str:
    """A dataset's display name ("Fashion-MNIST"), or `name` itself for other sources."""
    return DATASET_TITLES.get(canonical_source_name(name), name)


def dataset_hub_id(name: str) -> str | None:
    """The Hub id of a dataset gh_hf loads from the Hub (or mirrors), else None."""
    return source_hub_id(name)


@dataclass
class EncoderResults:
    """One encoder's entry of a results.json.

    Attributes:
        key: The entry's name in results.json (the encoder as given to the benchmark).
        dataset: results.json's "dataset" block (name, class_counts, grouping, num_test, ...).
        protocols: Protocol names, the main one first.
        entries: {protocol: {"metrics": {...}, "settings": {...}}}.
        figure: The benchmark's per-class accuracy plot, when it lies next to results.json.
    """

    key: str
    dataset: dict[str, Any]
    protocols: list[str]
    entries: dict[str, dict[str, Any]]
    figure: Path | None = None

    @property
    def main_protocol(self) -> str:
        return self.protocols[0]


def _same_folder(key: str, folder: Path, roots: list[Path]) -> bool:
    path = Path(key).expanduser()
    candidates = [path] if path.is_absolute() else [root / path for root in roots]
    return any(candidate.resolve() == folder for candidate in candidates)


def _entry_key(report: dict, path: Path, encoder_dir: Path, key: str | None, repo_id: str | None) -> str:
    keys = list(report["results"])
    if key is not None:
        if key not in keys:
            raise ValueError(f"results_key={key!r} is not an entry of {path}; its entries: {keys}.")
        return key
    roots = [Path.cwd(), path.parent, path.parent.parent]
    folder = encoder_dir.resolve()
    matches = [name for name in keys if name == repo_id or _same_folder(name, folder, roots)]
    if len(matches) != 1:
        raise ValueError(
            f"{path} has {'no' if not matches else 'more than one'} entry for the encoder {encoder_dir} "
            f"(its entries: {keys}); pass results_key (--results_key) naming the entry measured on it."
        )
    return matches[0]


def load_results(
    path: str | Path, encoder_dir: str | Path, results_key: str | None = None, repo_id: str | None = None
) -> EncoderResults:
    """The entry of `encoder_dir` in a results.json written by `scripts/benchmark.py`.

    The entry is `results_key` when given; else the one whose name is `repo_id` or a path to
    `encoder_dir` (relative to the working directory, to results.json's folder or its parent).

    Raises:
        ValueError: naming the entries when none (or several) match.
    """
    path = Path(path)
    report = json.loads(path.read_text())
    for field in ("dataset", "protocols", "results"):
        if field not in report:
            raise ValueError(
                f"{path} is not a benchmark results.json: it has no {field!r} (keys: {list(report)})."
            )
    key = _entry_key(report, path, Path(encoder_dir), results_key, repo_id)
    entries = report["results"][key]
    main = report.get("main_protocol", report["protocols"][0])
    protocols = [main] + [name for name in report["protocols"] if name != main and name in entries]
    figure = path.parent / FIGURE_FILE
    return EncoderResults(key, report["dataset"], protocols, entries, figure if figure.is_file() else None)


def protocol_description(name: str, settings: dict[str, Any]) -> str:
    """One sentence naming a protocol and its settings, from results.json's "settings"."""
    if name == "knn":
        return (
            f"weighted k-NN classifier on the frozen features (k = {settings.get('k')}, cosine similarity, "
            f"temperature {settings.get('temperature')})"
        )
    shots = settings.get("shots_per_class")
    subset = f"{shots} labelled images per class" if shots else "the labelled training images"
    norm = FEATURE_NORM_TEXT.get(settings.get("feature_norm"), f"{settings.get('feature_norm')} features")
    return (
        f"linear classifier on the frozen features of {subset}: Adam, learning rate "
        f"{settings.get('linear_lr')} decayed exponentially to {settings.get('linear_final_lr')} over "
        f"{settings.get('linear_epochs')} epochs, weight decay {settings.get('linear_weight_decay')}, "
        f"batch {settings.get('linear_batch_size')}, {norm}"
    )


def protocol_title(name: str) -> str:
    if name == "linear":
        return "Linear probe"
    if name == "knn":
        return "k-NN"
    return f"{name.removeprefix('fewshot')}-shot linear probe" if name.startswith("fewshot") else name


def table_rows(results: EncoderResults) -> list[dict[str, str]]:
    """One row per protocol: {"protocol", "Overall", "Many", "Medium", "Few", "Std"} in percent."""
    rows = []
    for name in results.protocols:
        metrics = results.entries[name]["metrics"]
        rows.append(
            {
                "protocol": protocol_title(name),
                **{column: percent(metrics.get(key)) for key, column, _, _ in METRICS},
            }
        )
    return rows


def eval_results(results: EncoderResults) -> list[EvalResult]:
    """The model-index entries: every finite metric of every protocol, in percent (two decimals).

    All protocols share one task and dataset, so each metric names its protocol in
    `metric_config` and `metric_name`.
    """
    name = results.dataset["name"]
    entries = []
    for protocol in results.protocols:
        metrics = results.entries[protocol]["metrics"]
        for key, _, metric_type, title in METRICS:
            value = metrics.get(key)
            if value is None or not math.isfinite(value):
                continue
            entries.append(
                EvalResult(
                    task_type="image-classification",
                    task_name="Image classification from frozen features",
                    dataset_type=dataset_hub_id(name) or name,
                    dataset_name=dataset_title(name),
                    dataset_split="test",
                    metric_type=metric_type,
                    metric_name=f"{title} (%), {protocol_title(protocol)}",
                    metric_config=protocol,
                    metric_value=round(100 * value, 2),
                )
            )
    return entries
