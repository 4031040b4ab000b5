"""Arguments of `scripts/pretrain.py`: three dataclasses parsed by `HfArgumentParser`.

Values come from a YAML preset (`--preset NAME`, default "demo"), then an optional YAML file
(`--config FILE`), then the command line; each later source overrides the earlier ones.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from gh_hf.data.streaming import STREAMED_SOURCES
from gh_hf.training.anchor_alignment import ANCHOR_ALIGNMENTS
from gh_hf.training.schedules import LR_SCHEDULES
from gh_hf.training.score_bank import BANK_DTYPES, BANK_SHARDINGS

PRESET_DIR = Path(__file__).parent / "presets"
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
VIEW_PIPELINES = ("auto", "batched", "per_image")
# "auto", or one of the groupings of gh_hf.evaluation (not imported here: it loads `evaluate`).
KNN_GROUPINGS = ("auto", "thirds", "thresholds")


def _fail(owner: str, name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"--{name}={value!r} is invalid ({owner}): {allowed}.")


def _bank_momentum_setting(name: str, value: str | float) -> str | float:
    """ "auto", or the value as a float in [0, 1)."""
    if value == "auto":
        return value
    try:
        momentum = float(value)
    except (TypeError, ValueError):
        momentum = math.nan
    if not 0 <= momentum < 1:  # NaN fails too
        _fail("training", name, value, "must be 'auto' or a float in [0, 1)")
    return momentum


@dataclass
class DataArguments:
    dataset: str = field(
        default="fashion_mnist",
        metadata={
            "help": "fashion_mnist, digits, cifar10, cifar100, a folder, split_file, or parquet (with "
            "--streaming true)."
        },
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Local copy of the dataset (idx files, saved dataset, image folder; the folder of "
            "parquet shards with --streaming)."
        },
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Stream the training split from the parquet shards of --data_dir (--dataset parquet; "
            "columns image, label, index) instead of loading it as a table."
        },
    )
    index_file: str | None = field(
        default=None,
        metadata={
            "help": "With --streaming: the split's rows, one shard `index` value a line (a keep-list, in "
            "split order); --imbalance_ratio other than 1 long-tails these rows further."
        },
    )
    shuffle_buffer_size: int = field(
        default=10000, metadata={"help": "With --streaming: rows in the shuffle buffer of the stream."}
    )
    shuffle_buffer_shards: int = field(
        default=10,
        metadata={"help": "With --streaming: shards read at a time into the shuffle buffer (1: one by one)."},
    )
    split_file: str | None = field(
        default=None, metadata={"help": "ImageNet-LT/Places-LT style 'path label' file (dataset=split_file)."}
    )
    test_split_file: str | None = field(
        default=None,
        metadata={"help": "With --split_file: the test images' 'path label' file, for the kNN monitor."},
    )
    image_root: str | None = field(
        default=None, metadata={"help": "Root of the paths in --split_file/--test_split_file."}
    )
    imbalance_ratio: float = field(
        default=100.0, metadata={"help": "n_max / n_min of the long-tailed split; 1 keeps the data as is."}
    )
    imbalance_profile: str = field(default="exp", metadata={"help": "exp or step."})
    class_order: str = field(
        default="identity",
        metadata={
            "help": "Which classes are the head: identity (label 0 first), permuted (a permutation seeded "
            "by --seed) or comma-separated label ids, head first."
        },
    )
    augmentation: str = field(
        default="cifar", metadata={"help": "cifar (small images) or imagenet (adds blur)."}
    )
    crop_min_scale: float | None = field(
        default=None,
        metadata={
            "help": "Smallest random-resized-crop area, in (0, 1]; default: the recipe's "
            "(cifar 0.1, imagenet 0.08)."
        },
    )
    dataloader_num_workers: int = field(
        default=2, metadata={"help": "DataLoader worker processes per training process (per_image views)."}
    )
    view_pipeline: str = field(
        default="auto",
        metadata={
            "help": "batched (decode the split into memory once, make both views of a whole batch on the "
            "model's device), per_image (PIL views in DataLoader workers) or auto (batched for "
            "fashion_mnist, digits and CIFAR, BCL's memory-boosted views included)."
        },
    )

    def __post_init__(self) -> None:
        if self.imbalance_ratio < 1:
            _fail("data", "imbalance_ratio", self.imbalance_ratio, "must be >= 1")
        if self.imbalance_profile not in ("exp", "step"):
            _fail("data", "imbalance_profile", self.imbalance_profile, "must be 'exp' or 'step'")
        if self.augmentation not in ("cifar", "imagenet"):
            _fail("data", "augmentation", self.augmentation, "must be 'cifar' or 'imagenet'")
        if self.crop_min_scale is not None and not 0 < self.crop_min_scale <= 1:
            _fail("data", "crop_min_scale", self.crop_min_scale, "must be in (0, 1]")
        if self.dataloader_num_workers < 0:
            _fail("data", "dataloader_num_workers", self.dataloader_num_workers, "must be >= 0")
        if self.class_order not in ("identity", "permuted") and not all(
            part.strip().isdigit() for part in self.class_order.split(",")
        ):
            _fail(
                "data",
                "class_order",
                self.class_order,
                "must be identity, permuted or comma-separated label ids",
            )
        if self.view_pipeline not in VIEW_PIPELINES:
            _fail("data", "view_pipeline", self.view_pipeline, f"must be one of {VIEW_PIPELINES}")
        if self.test_split_file is not None and self.split_file is None:
            _fail("data", "test_split_file", self.test_split_file, "needs --split_file (the training images)")
        self._check_streaming()

    def _check_streaming(self) -> None:
        for name in ("shuffle_buffer_size", "shuffle_buffer_shards"):
            if getattr(self, name) < 1:
                _fail("data", name, getattr(self, name), "must be >= 1")
        if not self.streaming:
            if self.dataset in STREAMED_SOURCES:
                _fail(
                    "data",
                    "dataset",
                    self.dataset,
                    "parquet shards are read as a stream: add --streaming true",
                )
            if self.index_file is not None:
                _fail("data", "index_file", self.index_file, "needs --streaming true")
            return
        if self.dataset not in STREAMED_SOURCES:
            _fail(
                "data", "streaming", self.streaming, f"needs --dataset parquet, got --dataset {self.dataset}"
            )
        if self.data_dir is None:
            _fail(
                "data",
                "data_dir",
                self.data_dir,
                "is required with --streaming (the folder of parquet shards)",
            )
        if self.split_file is not None:
            _fail(
                "data", "split_file", self.split_file, "cannot be streamed; with --streaming use --index_file"
            )


@dataclass
class ModelArguments:
    backbone: str = field(default="resnet18", metadata={"help": "Any timm model name."})
    backbone_kwargs: str = field(
        default="{}",
        metadata={"help": "JSON kwargs for timm.create_model, e.g. '{\"channels\": [16, 32, 64, 128]}'."},
    )
    in_chans: int | None = field(
        default=None, metadata={"help": "Input channels; default: 1 for grayscale datasets, else 3."}
    )
    image_size: int = field(default=32, metadata={"help": "Training resolution."})
    small_input_stem: bool = field(
        default=True, metadata={"help": "3x3 stride-1 stem without max-pool (CIFAR convention)."}
    )
    ssl_method: str = field(default="simclr", metadata={"help": "simclr, focal, sdclr or bcl."})
    use_gh: bool = field(default=True, metadata={"help": "Add the Geometric Harmonization term."})
    projection_dim: int = 128
    num_anchors: int = 100
    contrastive_temperature: float = 0.2
    focal_gamma: float = 2.0
    gh_temperature: float = 0.1
    sinkhorn_epsilon: float = 0.05
    sinkhorn_iterations: int = 300
    sinkhorn_tolerance: float = 1e-6
    gh_weight: float = 1.0
    prune_ratio: float = 0.9

    def __post_init__(self) -> None:
        if isinstance(self.backbone_kwargs, dict):
            self.backbone_kwargs = json.dumps(self.backbone_kwargs)
        try:
            parsed = json.loads(self.backbone_kwargs)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"--backbone_kwargs={self.backbone_kwargs!r} is invalid (model): not JSON ({error})."
            ) from None
        if not isinstance(parsed, dict):
            _fail("model", "backbone_kwargs", self.backbone_kwargs, "must be a JSON object")

    def config_kwargs(self) -> dict[str, Any]:
        """The GHConfig keyword arguments these arguments fix (in_chans/mean/std come from the data)."""
        kwargs = asdict(self)
        kwargs["backbone_kwargs"] = json.loads(self.backbone_kwargs)
        return kwargs


@dataclass
class PretrainingArguments:
    output_dir: str = field(
        default="outputs/demo", metadata={"help": "Where checkpoints, logs and encoder/ go."}
    )
    num_epochs: int = 100
    max_steps: int = field(
        default=-1, metadata={"help": "Stop after this many optimizer steps (> 0 overrides num_epochs)."}
    )
    per_device_batch_size: int = 256
    gradient_accumulation_steps: int = 1
    learning_rate: float = 0.5
    gh_stage_learning_rate: float = field(
        default=0.3, metadata={"help": "two_stage schedule: LR at the GH warm-up boundary."}
    )
    min_learning_rate: float = 1e-6
    lr_warmup_epochs: float = field(default=10, metadata={"help": "cosine schedule: linear warm-up epochs."})
    lr_schedule: str = field(
        default="auto", metadata={"help": "auto (two_stage with GH, else cosine), cosine or two_stage."}
    )
    momentum: float = 0.9
    weight_decay: float = 5e-4
    gh_warmup_epochs: int = field(default=50, metadata={"help": "SSL-only epochs before GH starts."})
    gh_ramp_epochs: int = field(
        default=10, metadata={"help": "Epochs over which the GH weight rises to gh_weight."}
    )
    prior_every_epochs: int = field(
        default=20,
        metadata={"help": "Re-estimate the anchor prior every N epochs from the warm-up boundary."},
    )
    prior_floor: float = field(
        default=0.0, metadata={"help": "Added to every anchor's count before normalising the prior."}
    )
    # "auto" or a float; HfArgumentParser cannot parse a str | float field, __post_init__ converts.
    bank_momentum_warmup: str = field(
        default="auto",
        metadata={
            "help": "Score-bank momentum in the SSL warm-up: auto (= 0.9 ^ (500 / warm-up epochs), the "
            "paper's memory scaled to this schedule) or a float in [0, 1)."
        },
    )
    bank_momentum: str = field(
        default="auto",
        metadata={
            "help": "Score-bank momentum in the GH stage: auto (= 0.999 ^ (500 / GH-stage epochs)) or a "
            "float in [0, 1)."
        },
    )
    bank_sharding: str = field(
        default="sharded",
        metadata={
            "help": "sharded (process r of W holds the samples i with i % W == r: 1/W of the bank, the same "
            "prior; docs/memory.md) or replicated (every process holds the whole bank)."
        },
    )
    bank_dtype: str = field(
        default="float32",
        metadata={
            "help": "Storage dtype of the score bank: float32, bfloat16 or float16 (half the memory; "
            "float16 keeps the prior closer to float32's than bfloat16 does: docs/memory.md)."
        },
    )
    class_prior: str = field(
        default="estimated",
        metadata={
            "help": "The anchor prior pi: estimated (from the score bank), uniform, or a JSON file of "
            "num_anchors class frequencies (any order), matched to anchors by occupancy rank."
        },
    )
    anchor_alignment: str = field(
        default="none",
        metadata={
            "help": "none (the paper: the anchor ETF keeps its fixed orientation) or kmeans: once, at the GH "
            "start, rotate the ETF onto the K-means centroids of the split's projections (one eval pass, "
            "which also restarts the score bank; no label is read). Not in the paper (docs/training.md)."
        },
    )
    checkpoint_every: int = field(
        default=0, metadata={"help": "Save a checkpoint every N optimizer steps (0: off)."}
    )
    checkpoint_every_epochs: int = field(
        default=1, metadata={"help": "Save a checkpoint every N epochs (0: off)."}
    )
    save_total_limit: int = field(default=2, metadata={"help": "Keep the last k checkpoints."})
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "A saved encoder (folder or Hub id, e.g. another run's output_dir/encoder) whose "
            "backbone weights this run starts from; projector, anchors, prior, optimizer and schedule "
            "start fresh. Its backbone must match --backbone/--backbone_kwargs/--in_chans/--small_input_stem."
        },
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "A checkpoint folder or 'latest'. Another run's checkpoint starts this run from "
            "its state (a fork; this run's log begins with that run's rows up to it)."
        },
    )
    save_warmup_checkpoint: bool = field(
        default=False,
        metadata={
            "help": "Also keep the state when the GH warm-up ends (after --gh_warmup_epochs epochs) "
            "in output_dir/checkpoints/warmup, outside the rotation. Runs of the same seed and base "
            "that differ only in GH start their second stage from it (scripts/experiment.py does)."
        },
    )
    seed: int = 0
    mixed_precision: str = field(
        default="auto",
        metadata={
            "help": "auto (bf16 where the device runs it natively: a bf16 GPU, or a CPU with AMX / "
            "AVX512-BF16; else no), no, fp16 or bf16 (through Accelerate)."
        },
    )
    report_to: str = field(
        default="none", metadata={"help": "none, all, tensorboard, wandb, ... (Accelerate trackers)."}
    )
    logging_steps: int = 10
    knn_every_epochs: int = field(
        default=0, metadata={"help": "Run the kNN monitor every N epochs (0: only at the end)."}
    )
    knn_at_end: bool = field(default=True, metadata={"help": "Run the kNN monitor once training ends."})
    knn_max_train_samples: int = field(
        default=10000, metadata={"help": "Balanced labelled images for the kNN monitor's memory."}
    )
    knn_grouping: str = field(
        default="auto",
        metadata={
            "help": "Many/Medium/Few groups of the kNN monitor: thirds (CIFAR-LT), thresholds "
            "(ImageNet-LT/Places-LT: >100, 20..100, <20 images) or auto (thresholds with --split_file, "
            "else thirds)."
        },
    )
    bcl_momentum: float = field(
        default=0.97, metadata={"help": "BCL: moving-average momentum of the per-sample loss."}
    )
    bcl_num_ops: int = field(default=2, metadata={"help": "BCL: RandAugment ops per view (k)."})
    bcl_max_magnitude: int = field(
        default=30, metadata={"help": "BCL: RandAugment magnitude of the hardest sample."}
    )
    push_to_hub: bool = field(
        default=False, metadata={"help": "Upload output_dir/encoder to the Hub at the end."}
    )
    hub_model_id: str | None = field(
        default=None, metadata={"help": "USER/NAME of the Hub repo (with --push_to_hub)."}
    )
    hub_private_repo: bool = False
    compile: bool = field(
        default=False,
        metadata={
            "help": "torch.compile the backbone and projector (in place: saved weights keep their names)."
        },
    )
    channels_last: bool = field(
        default=False, metadata={"help": "Train in the channels_last memory format (often faster on GPUs)."}
    )

    def __post_init__(self) -> None:
        positive = (
            "per_device_batch_size",
            "gradient_accumulation_steps",
            "learning_rate",
            "prior_every_epochs",
            "logging_steps",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                _fail("training", name, getattr(self, name), "must be > 0")
        non_negative = (
            "num_epochs",
            "min_learning_rate",
            "lr_warmup_epochs",
            "weight_decay",
            "gh_warmup_epochs",
            "gh_ramp_epochs",
            "prior_floor",
            "checkpoint_every",
            "checkpoint_every_epochs",
            "knn_every_epochs",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                _fail("training", name, getattr(self, name), "must be >= 0")
        if self.num_epochs == 0 and self.max_steps <= 0:
            _fail("training", "num_epochs", self.num_epochs, "must be > 0 unless --max_steps is set")
        if self.save_warmup_checkpoint and self.gh_warmup_epochs == 0:
            _fail("training", "save_warmup_checkpoint", True, "needs --gh_warmup_epochs > 0 (no warm-up)")
        if self.save_total_limit < 1:
            _fail("training", "save_total_limit", self.save_total_limit, "must be >= 1")
        for name in ("bcl_num_ops", "bcl_max_magnitude"):
            if getattr(self, name) < 1:
                _fail("training", name, getattr(self, name), "must be >= 1")
        for name in ("bank_momentum_warmup", "bank_momentum"):
            setattr(self, name, _bank_momentum_setting(name, getattr(self, name)))
        for name in ("momentum", "bcl_momentum"):
            if not 0 <= getattr(self, name) < 1:
                _fail("training", name, getattr(self, name), "must be in [0, 1)")
        if self.knn_grouping not in KNN_GROUPINGS:
            _fail("training", "knn_grouping", self.knn_grouping, f"must be one of {KNN_GROUPINGS}")
        if self.bank_sharding not in BANK_SHARDINGS:
            _fail("training", "bank_sharding", self.bank_sharding, f"must be one of {BANK_SHARDINGS}")
        if self.bank_dtype not in BANK_DTYPES:
            _fail("training", "bank_dtype", self.bank_dtype, f"must be one of {tuple(BANK_DTYPES)}")
        if self.anchor_alignment not in ANCHOR_ALIGNMENTS:
            _fail(
                "training", "anchor_alignment", self.anchor_alignment, f"must be one of {ANCHOR_ALIGNMENTS}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            _fail("training", "lr_schedule", self.lr_schedule, f"must be one of {LR_SCHEDULES}")
        if self.push_to_hub and not self.hub_model_id:
            _fail("training", "hub_model_id", self.hub_model_id, "is required with --push_to_hub (USER/NAME)")
        if self.mixed_precision not in MIXED_PRECISION:
            _fail("training", "mixed_precision", self.mixed_precision, f"must be one of {MIXED_PRECISION}")


ARGUMENT_CLASSES = (DataArguments, ModelArguments, PretrainingArguments)
ARGUMENT_PARTS = ("data", "model", "training")  # the sections of training_args.json, in that order


def as_json(arguments: Any) -> dict[str, Any]:
    """An arguments dataclass as its training_args.json section (tuples as lists)."""
    return json.loads(json.dumps(asdict(arguments)))


def setting_differences(
    saved: dict[str, dict[str, Any]], current: tuple[Any, Any, Any], ignore: set[str] | tuple[str, ...] = ()
) -> list[tuple[str, Any, Any]]:
    """(name, saved value, current value) of each setting in which a run's training_args.json
    (`saved`) differs from `current` (data, model and training arguments).

    A setting added after `saved` was written counts as its default (what that run did); names in
    `ignore` and settings "auto" in `current` (a run stores what "auto" resolved to) are skipped.
    """
    differences = []
    for part, values in zip(ARGUMENT_PARTS, current, strict=True):
        kept = {**as_json(type(values)()), **saved.get(part, {})}
        differences += [
            (key, kept.get(key), value)
            for key, value in as_json(values).items()
            if key not in ignore and value != "auto" and kept.get(key) != value
        ]
    return differences


def available_presets() -> list[str]:
    return sorted(path.stem for path in PRESET_DIR.glob("*.yaml"))


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} does not exist.")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{what} {str(path)!r} must hold a mapping of argument names to values.")
    return values


def load_preset(name: str) -> dict[str, Any]:
    """The values of a named preset (a YAML file in gh_hf/training/presets/)."""
    if name not in available_presets():
        raise ValueError(
            f"--preset={name!r} is unknown; available presets: {', '.join(available_presets())}."
        )
    return _read_yaml(PRESET_DIR / f"{name}.yaml", "Preset")


def _check_known(values: dict[str, Any], source: str) -> None:
    known = {f.name for cls in ARGUMENT_CLASSES for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source} sets unknown arguments {unknown}; known arguments: {sorted(known)}.")


def parse_pretrain_args(
    argv: list[str] | None = None,
) -> tuple[DataArguments, ModelArguments, PretrainingArguments]:
    """Parses preset, config file and command line into the three argument dataclasses."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="demo")
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    values = load_preset(known.preset)
    _check_known(values, f"preset {known.preset!r}")
    if known.config:
        file_values = _read_yaml(Path(known.config), "Config file")
        _check_known(file_values, f"config file {known.config!r}")
        values.update(file_values)
    if isinstance(values.get("backbone_kwargs"), dict):
        values["backbone_kwargs"] = json.dumps(values["backbone_kwargs"])
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    parser.add_argument("--preset", default="demo", help=f"One of {available_presets()} (default: demo).")
    parser.add_argument(
        "--config", default=None, help="A YAML file of argument values (overrides the preset)."
    )
    parser.set_defaults(**values)
    # The extra --preset/--config options come back as a trailing Namespace, which is dropped.
    data_args, model_args, training_args = parser.parse_args_into_dataclasses(
        args=rest, look_for_args_file=False
    )[:3]
    return data_args, model_args, training_args
