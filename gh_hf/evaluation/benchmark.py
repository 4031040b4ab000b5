"""Benchmark pretrained encoders on a long-tailed setting (the logic of scripts/benchmark.py)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset
from torch import nn

from gh_hf.evaluation.class_geometry import class_geometry
from gh_hf.evaluation.features import PIXELS, PixelEncoder
from gh_hf.evaluation.long_tailed_accuracy.long_tailed_accuracy import GROUPINGS, class_groups
from gh_hf.evaluation.protocols import ProtocolSettings, encoder_features, evaluate_features, parse_protocols
from gh_hf.evaluation.report import (
    display_names,
    geometry_table,
    markdown_table,
    plot_per_class_accuracy,
    write_json,
)

logger = logging.getLogger(__name__)

_GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F")


@dataclass
class BenchmarkArguments:
    """Arguments of `python scripts/benchmark.py` (also usable under `accelerate launch`)."""

    encoders: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Encoder folders or Hub ids (AutoModel.from_pretrained); 'pixels' adds the raw-pixel "
            "floor (flattened normalised eval images)."
        },
    )
    output_dir: str = field(default="benchmark", metadata={"help": "Where results.json/.md and the plot go."})
    dataset: str = field(default="fashion_mnist", metadata={"help": "A gh_hf.data.load_image_dataset name."})
    data_dir: str | None = field(default=None, metadata={"help": "Local copy of the dataset, if any."})
    train_split_file: str | None = field(
        default=None,
        metadata={"help": "dataset=split_file: 'path label' file of the balanced labelled train images."},
    )
    test_split_file: str | None = field(
        default=None, metadata={"help": "dataset=split_file: 'path label' file of the test images."}
    )
    image_root: str | None = field(
        default=None, metadata={"help": "Root of the split files' paths (default: each file's folder)."}
    )
    imbalance_ratio: float = field(default=100, metadata={"help": "n_max / n_min of the pretraining split."})
    profile: str = field(default="exp", metadata={"help": "Long-tail profile: exp or step."})
    long_tailed_seed: int = field(default=0, metadata={"help": "Seed of make_long_tailed."})
    max_per_class: int | None = field(
        default=None,
        metadata={"help": "n_max of make_long_tailed (default: train size / C, as in pretraining)."},
    )
    class_counts: str | None = field(
        default=None,
        metadata={
            "help": "Pretraining class counts instead of make_long_tailed: a comma list, a JSON list, a file "
            "holding one, or the pretraining split file (e.g. ImageNet_LT_train.txt)."
        },
    )
    protocols: str = field(
        default="linear,knn,fewshot100", metadata={"help": "linear, knn, fewshot<N>, comma-separated."}
    )
    grouping: str = field(
        default="thirds", metadata={"help": "thirds (CIFAR-LT) or thresholds (ImageNet-LT)."}
    )
    linear_epochs: int = field(default=500, metadata={"help": "Linear / few-shot probe epochs."})
    linear_lr: float = field(default=1e-2, metadata={"help": "Probe initial learning rate."})
    linear_final_lr: float = field(default=1e-6, metadata={"help": "Probe final learning rate."})
    linear_weight_decay: float = field(default=5e-6, metadata={"help": "Probe weight decay."})
    linear_batch_size: int = field(default=1000, metadata={"help": "Probe mini-batch size."})
    feature_norm: str = field(default="standardize", metadata={"help": "standardize, l2 or none."})
    knn_k: int = field(default=200, metadata={"help": "kNN neighbours."})
    knn_temperature: float = field(default=0.07, metadata={"help": "kNN vote temperature."})
    seed: int = field(default=0, metadata={"help": "Seed of probes, few-shot subsets and subsampling."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Subsample the probe train set."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Subsample the test set."})
    batch_size: int = field(default=256, metadata={"help": "Images per forward pass (per process)."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers."})
    cache_dir: str | None = field(default=None, metadata={"help": "Feature cache folder."})
    geometry: bool = field(
        default=False,
        metadata={
            "help": "Also measure each encoder's class geometry (gh_hf.evaluation.class_geometry: "
            "nearest-class cosine, concentration and nearest-class-mean accuracy per Many / Medium / Few)."
        },
    )
    pixels_image_size: int | None = field(
        default=None,
        metadata={"help": "Eval image size of the 'pixels' row (default: the size of the dataset's images)."},
    )

    def __post_init__(self) -> None:
        if not self.encoders:
            raise ValueError("encoders must name at least one encoder folder or Hub id, got []")
        if self.grouping not in GROUPINGS:
            raise ValueError(f"grouping must be one of {list(GROUPINGS)}, got {self.grouping!r}")
        parse_protocols(self.protocols)
        split_files = {"train_split_file": self.train_split_file, "test_split_file": self.test_split_file}
        if self.dataset == "split_file":
            for name, value in split_files.items():
                if value is None:
                    raise ValueError(f"dataset='split_file' needs --{name} (a 'path label' file), got None")
            if self.class_counts is None:
                raise ValueError(
                    "dataset='split_file' needs --class_counts: the pretraining split file (e.g. "
                    "ImageNet_LT_train.txt) or its counts; make_long_tailed does not apply"
                )
        elif any(value is not None for value in split_files.values()):
            raise ValueError(
                f"train_split_file/test_split_file need dataset='split_file', got dataset={self.dataset!r}"
            )
        for name in ("max_train_samples", "max_test_samples", "pixels_image_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 (or unset), got {value}")

    def probe_settings(self) -> ProtocolSettings:
        """The probes' hyper-parameters."""
        names = ProtocolSettings.__dataclass_fields__
        return ProtocolSettings(**{name: getattr(self, name) for name in names})


def _subsample(dataset: Dataset, max_samples: int | None, seed: int) -> Dataset:
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(max_samples)).flatten_indices()


def pretraining_class_counts(args: BenchmarkArguments, train: Dataset) -> list[int]:
    """Counts per class of the long-tailed pretraining split: given, or from `make_long_tailed`."""
    from gh_hf.data import default_max_per_class, get_class_counts, make_long_tailed, split_file_class_counts

    if args.class_counts is None:
        long_tailed = make_long_tailed(
            train,
            args.imbalance_ratio,
            args.profile,
            seed=args.long_tailed_seed,
            max_per_class=args.max_per_class or default_max_per_class(train),
        )
        return get_class_counts(long_tailed)
    text = args.class_counts
    is_file = Path(text).is_file()
    content = Path(text).read_text() if is_file else text
    try:
        counts = (
            json.loads(content) if content.strip().startswith("[") else [int(c) for c in content.split(",")]
        )
    except ValueError as error:
        message = (
            "class_counts must be comma-separated integers, a JSON list, a file holding one, or a "
            f"'path label' split file; got {text!r}"
        )
        if not is_file:
            raise ValueError(message) from error
        try:
            counts = split_file_class_counts(text)
        except ValueError as split_error:
            raise ValueError(f"{message} ({split_error})") from split_error
    class_groups(counts, args.grouping)  # validates them
    return [int(c) for c in counts]


def _dataset_info(args: BenchmarkArguments, train: Dataset, test: Dataset, class_counts: list[int]) -> dict:
    label = train.features["label"]
    return {
        "name": args.dataset,
        "imbalance_ratio": None if args.class_counts else args.imbalance_ratio,
        "profile": None if args.class_counts else args.profile,
        "long_tailed_seed": None if args.class_counts else args.long_tailed_seed,
        "max_per_class": None if args.class_counts else args.max_per_class,
        "class_counts": class_counts,
        "class_names": label.names if isinstance(label, ClassLabel) else None,
        "grouping": args.grouping,
        "groups": class_groups(class_counts, args.grouping),
        "num_train": len(train),
        "num_test": len(test),
    }


def pixel_encoder(dataset_name: str, train: Dataset, image_size: int | None = None) -> PixelEncoder:
    """The raw-pixel floor of a dataset: its images through the eval transform, flattened.

    The normalisation is the one pretraining gives an encoder of this dataset (its statistics
    in `gh_hf.data.DATASET_STATS`; ImageNet's for a folder or split file of natural images).

    Args:
        dataset_name: A `gh_hf.data.load_image_dataset` name.
        train: The labelled train split (its first image sets the size and the channels).
        image_size: Eval view size (default: the first image's shorter side, so 28 on
            Fashion-MNIST and 32 on CIFAR, the sizes the presets pretrain at).

    Returns:
        A `PixelEncoder`: features of C * image_size**2 values per image.
    """
    from gh_hf.data import source_normalization

    image = train[0]["image"]
    in_chans = 1 if image.mode in _GRAYSCALE_MODES else 3
    mean, std = source_normalization(dataset_name, in_chans)
    return PixelEncoder(image_size or min(image.size), in_chans, mean, std)


def check_encoder_reference(encoder: str) -> None:
    """Raises DataSourceError if `encoder` is neither "pixels", an existing folder nor a loadable Hub id.

    A path that does not exist would otherwise reach the Hub client as a malformed repo id.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from gh_hf.data import DataSourceError

    if encoder == PIXELS or Path(encoder).is_dir():
        return
    try:
        validate_repo_id(encoder)
    except HFValidationError:
        looks_like = "is not a folder (nor a Hub id 'namespace/name')"
    else:
        if not constants.HF_HUB_OFFLINE:
            return
        looks_like = "is not a folder, and HF_HUB_OFFLINE=1 keeps it from being fetched as a Hub id"
    raise DataSourceError(
        f"--encoders entry {encoder!r} {looks_like}; pass an encoder folder a run wrote "
        "(OUTPUT_DIR/encoder), 'pixels', or a Hub model id"
    )


def _load_encoder(encoder: str, args: BenchmarkArguments, train: Dataset, device: Any) -> nn.Module:
    if encoder == PIXELS:
        return pixel_encoder(args.dataset, train, args.pixels_image_size)
    from transformers import AutoModel  # gh_hf/__init__ (run before this module) registered GHModel

    return AutoModel.from_pretrained(encoder).to(device)


def _evaluate_one(
    encoder: str, args: BenchmarkArguments, data: dict[str, Any], accelerator: Any
) -> tuple[dict, dict | None]:
    """(the encoder's protocol results, its class geometry or None), from one feature extraction."""
    model = _load_encoder(encoder, args, data["train"], accelerator.device)
    train, test = encoder_features(
        model, data["train"], data["test"], args.batch_size, args.num_workers, accelerator, args.cache_dir
    )
    settings = args.probe_settings()
    metrics = evaluate_features(
        train,
        test,
        data["train"],
        data["class_counts"],
        args.protocols,
        args.grouping,
        settings,
        accelerator.device,
    )
    results = {
        name: {"metrics": values, "settings": settings.for_protocol(name)} for name, values in metrics.items()
    }
    geometry = class_geometry(train, test, data["class_counts"], args.grouping) if args.geometry else None
    return results, geometry


def write_outputs(report: dict[str, Any], output_dir: str | Path) -> str:
    """Write results.json, results.md and per_class_accuracy.png; return the Markdown table."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(report, output_dir / "results.json")
    table = markdown_table(report["results"])
    if "geometry" in report:
        table += "\n" + geometry_table(report["geometry"])
    (output_dir / "results.md").write_text(table)
    main = report["main_protocol"]
    names = display_names(list(report["results"]))
    per_class = {
        names[name]: entry[main]["metrics"]["per_class_accuracy"] for name, entry in report["results"].items()
    }
    title = f"{report['dataset']['name']}: per-class accuracy, {main} protocol"
    dataset = report["dataset"]
    plot_path = output_dir / "per_class_accuracy.png"
    plot_per_class_accuracy(per_class, dataset["class_counts"], plot_path, title, dataset["groups"])
    return table


def run_benchmark(args: BenchmarkArguments, accelerator: Any | None = None) -> dict[str, Any]:
    """Evaluate every encoder with every protocol; the main process writes the outputs.

    Args:
        args: The benchmark's arguments.
        accelerator: An `accelerate.Accelerator` (one is created if None).

    Returns:
        The report written to results.json: {"dataset", "protocols", "main_protocol", "results":
        {encoder: {protocol: {"metrics", "settings"}}}, and with `geometry` "geometry": {encoder:
        `class_geometry`'s dict}} (NaN where results.json has null).
    """
    from accelerate import Accelerator

    from gh_hf.data import load_image_dataset
    from gh_hf.dist import default_accelerator_kwargs

    for encoder in args.encoders:  # before any data is loaded
        check_encoder_reference(encoder)
    accelerator = accelerator or Accelerator(**default_accelerator_kwargs())
    protocols = parse_protocols(args.protocols)
    train, test = (
        load_image_dataset(
            args.dataset,
            split=split,
            data_dir=args.data_dir,
            **({"split_file": split_file, "image_root": args.image_root} if split_file else {}),
        )
        for split, split_file in (("train", args.train_split_file), ("test", args.test_split_file))
    )
    class_counts = pretraining_class_counts(args, train)
    data = {
        "train": _subsample(train, args.max_train_samples, args.seed),
        "test": _subsample(test, args.max_test_samples, args.seed),
        "class_counts": class_counts,
    }
    evaluated = {encoder: _evaluate_one(encoder, args, data, accelerator) for encoder in args.encoders}
    report = {
        "dataset": _dataset_info(args, data["train"], data["test"], class_counts),
        "protocols": protocols,
        "main_protocol": protocols[0],
        "arguments": asdict(args),
        "results": {encoder: results for encoder, (results, _) in evaluated.items()},
    }
    if args.geometry:
        report["geometry"] = {encoder: geometry for encoder, (_, geometry) in evaluated.items()}
    if accelerator.is_main_process:
        print(write_outputs(report, args.output_dir))
    accelerator.wait_for_everyone()
    return report
