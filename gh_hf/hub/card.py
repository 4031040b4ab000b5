"""Model cards of gh_hf encoders, rendered from `model_cards/gh_encoder_template.md`.

`render_model_card` reads an encoder folder (config, weights, `training_args.json`,
`long_tailed_split.json`, `run_info.json`) and, optionally, the encoder's benchmark results, and
fills the template with `huggingface_hub.ModelCard.from_template`. Every figure in a card was
recorded for this encoder: without results the card has no evaluation numbers at all.
"""

from __future__ import annotations

import json
import logging
import sysconfig
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from gh_hf.configuration_gh import GHConfig
from gh_hf.hub.encoder_folder import (
    CARD_FILE,
    CONFIG_FILE,
    PROCESSOR_FILE,
    RUN_INFO_FILE,
    SPLIT_FILE,
    TRAINING_ARGS_FILE,
    image_processor_for,
    read_json,
)
from gh_hf.hub.results import (
    FIGURE_FILE,
    GROUPING_TEXT,
    EncoderResults,
    dataset_hub_id,
    dataset_title,
    eval_results,
    protocol_description,
    protocol_title,
    table_rows,
)
from gh_hf.hub.run_info import run_info_rows
from gh_hf.image_processing_gh import GHImageProcessor
from gh_hf.modeling_gh import GHModel

logger = logging.getLogger(__name__)

TEMPLATE_NAME = "gh_encoder_template.md"
DEFAULT_LICENSE = "apache-2.0"
BASE_TAGS = ["self-supervised", "geometric-harmonization", "long-tailed", "timm"]
SSL_TITLES = {
    "simclr": "SimCLR",
    "focal": "Focal contrastive (SimCLR + focal modulation)",
    "sdclr": "SDCLR",
    "bcl": "BCL",
}
GH_CITATION = """@inproceedings{zhou2023combating,
  title     = {Combating Representation Learning Disparity with Geometric Harmonization},
  author    = {Zhou, Zhihan and Yao, Jiangchao and Hong, Feng and Zhang, Ya and Han, Bo and Wang, Yanfeng},
  booktitle = {Advances in Neural Information Processing Systems},
  volume    = {36},
  year      = {2023},
  eprint    = {2310.17622},
  archivePrefix = {arXiv}
}"""


def default_template_path() -> Path:
    """The card template: `model_cards/` of a gh_hf checkout, or `share/gh_hf/model_cards/` of an install."""
    candidates = [
        Path(__file__).resolve().parents[2] / "model_cards" / TEMPLATE_NAME,
        Path(sysconfig.get_path("data")) / "share" / "gh_hf" / "model_cards" / TEMPLATE_NAME,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"model card template {TEMPLATE_NAME} not found (looked in {', '.join(map(str, candidates))}); "
        "pass template_path."
    )


def method_title(config: GHConfig) -> str:
    """The method's name: "SimCLR + GH", "SimCLR", ..."""
    base = SSL_TITLES.get(config.ssl_method, config.ssl_method).split(" (")[0]
    return f"{base} + GH" if config.use_gh else base


def _model_rows(config: GHConfig, encoder: GHModel) -> list[tuple[str, str]]:
    stem = ", small-input stem (3x3 stride-1 conv, no max-pool)" if config.small_input_stem else ""
    kwargs = f" with `{json.dumps(config.backbone_kwargs)}`" if config.backbone_kwargs else ""
    parameters = sum(parameter.numel() for parameter in encoder.parameters())
    return [
        ("Backbone", f"timm `{config.backbone}`{kwargs}{stem}"),
        ("Input", _input_description(config)),
        (
            "Output",
            f"`pooler_output` (batch, {encoder.num_features}): pooled features; "
            "`last_hidden_state`: the last feature map",
        ),
        ("Parameters", f"{parameters:,}"),
        ("Pretraining objective", _objective(config)),
        ("Library", "transformers (`GHModel`, model type `gh_timm`), code in this repository"),
    ]


def _input_description(config: GHConfig) -> str:
    channels = {1: "grayscale (1 channel)", 3: "RGB (3 channels)"}.get(
        config.in_chans, f"{config.in_chans} channels"
    )
    return f"{channels} images of {config.image_size} x {config.image_size} pixels"


def _objective(config: GHConfig) -> str:
    title = SSL_TITLES.get(config.ssl_method, config.ssl_method)
    base = f"{title}, temperature {config.contrastive_temperature}"
    if not config.use_gh:
        return base
    return (
        f"{base}, plus Geometric Harmonization with K = {config.num_anchors} anchors in a "
        f"{config.projection_dim}-dimensional projection"
    )


def _processor_description(processor: GHImageProcessor) -> str:
    mode = "grayscale (PIL mode L)" if processor.num_channels == 1 else "RGB"
    crop = processor.crop_size
    return (
        f"convert to {mode}, resize the shorter side to {processor.size.shortest_edge} pixels (bilinear), "
        f"centre-crop {crop.height} x {crop.width}, scale to [0, 1] and normalise with mean "
        f"{list(processor.image_mean)} and std {list(processor.image_std)}"
    )


def _data_context(split: dict[str, Any] | None, args: dict[str, Any] | None) -> dict[str, Any] | None:
    if split is None and args is None:
        return None
    data_args = (args or {}).get("data", {})
    name = (split or {}).get("dataset") or data_args.get("dataset", "unknown")
    hub_id = dataset_hub_id(name)
    source = (
        f"[{dataset_title(name)}](https://huggingface.co/datasets/{hub_id})"
        if hub_id
        else dataset_title(name)
    )
    ratio = (split or {}).get("imbalance_ratio", data_args.get("imbalance_ratio"))
    profile = (split or {}).get("profile", data_args.get("imbalance_profile"))
    rows = [("Source", source)]
    if ratio is not None and ratio != 1:
        profile_name = {"exp": "exponential", "step": "step"}.get(profile, profile)
        rows.append(("Long-tail profile", f"{profile_name}, imbalance ratio n_max / n_min = {ratio:g}"))
    description = (
        f"Pretrained without labels on {_split_rule(profile, ratio, (split or {}).get('max_per_class'))} "
        "of the "
        f"{dataset_title(name)} training set; labels were used only to build the split."
    )
    class_rows = []
    if split is not None:
        counts = split["class_counts"]
        names = split.get("class_names") or [str(c) for c in range(len(counts))]
        rows += [
            ("Images", f"{split['num_images']:,}"),
            ("Classes", f"{len(counts)}; largest {max(counts):,} images, smallest {min(counts):,}"),
        ]
        if split.get("seed") is not None:
            rows.append(("Split seed", str(split["seed"])))
        class_rows = [(class_id, names[class_id], f"{count:,}") for class_id, count in enumerate(counts)]
    return {
        "title": f"{dataset_title(name)}-LT",
        "description": description,
        "rows": rows,
        "class_rows": class_rows,
    }


def _split_rule(profile: str | None, ratio: float | None, max_per_class: float | None) -> str:
    if ratio is None or ratio == 1:
        return "the split as provided (already long-tailed)"
    n_max = f"n_max = {max_per_class:g}" if max_per_class else "n_max = images / classes"
    if profile == "step":
        return (
            "a step-profile subset (the first half of the classes keep n_max images, the others "
            f"n_max / {ratio:g}; {n_max})"
        )
    return (
        f"an exponential-profile subset (class c, 0 the head, keeps int(n_max * (1/{ratio:g})^(c/(C-1))) "
        f"images; {n_max})"
    )


def _crop(data: dict) -> str:
    """The crop-scale override of a run, if it had one."""
    scale = data.get("crop_min_scale")
    return "" if scale is None else f" (random resized crop of {scale:g}-1 of the area)"


def _epochs(count: float) -> str:
    return f"{count:g} epoch" + ("" if count == 1 else "s")


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "n/a"


def _schedule(training: dict[str, Any], use_gh: bool) -> str:
    # Imported here: gh_hf.training imports gh_hf.hub (publishing at the end of a run).
    from gh_hf.training.schedules import resolve_lr_schedule

    schedule = resolve_lr_schedule(
        training.get("lr_schedule", "auto"), use_gh, training.get("gh_warmup_epochs", 0)
    )
    if schedule == "two_stage":
        return (
            f"two-stage cosine: {training['learning_rate']} to {training['gh_stage_learning_rate']} "
            f"until epoch {training['gh_warmup_epochs']}, then to {training['min_learning_rate']}"
        )
    warmup = _epochs(training["lr_warmup_epochs"])
    return f"cosine to {training['min_learning_rate']} after {warmup} of linear warm-up"


def _hyperparameter_rows(
    args: dict[str, Any] | None, config: GHConfig, run_info: dict | None
) -> list[tuple[str, str]]:
    if args is None:
        return []
    training, data = args["training"], args["data"]
    accumulation = training["gradient_accumulation_steps"]
    batch = f"{training['per_device_batch_size']} per process x {accumulation} accumulation step(s)"
    if run_info and run_info.get("num_processes"):
        processes = run_info["num_processes"]
        total = training["per_device_batch_size"] * training["gradient_accumulation_steps"] * processes
        batch += f" x {processes} process(es) = {total}"
    length = _epochs(training["num_epochs"])
    if training.get("max_steps", -1) > 0:
        length += f", stopped at {training['max_steps']} optimizer steps"
    rows = [("Objective", _objective(config))]
    if training.get("init_from"):  # --init_from: the backbone continued a saved encoder
        started = f"the backbone of `{training['init_from']}` (projector and GH head new)"
        rows.append(("Started from", started))
    rows += [
        ("Length", length),
        ("Batch", batch),
        ("Optimizer", f"SGD, momentum {training['momentum']}, weight decay {training['weight_decay']}"),
        ("Learning rate", _schedule(training, config.use_gh)),
        (
            "Augmentation",
            f"{data['augmentation']} recipe{_crop(data)}, two views per image, "
            f"{config.image_size} x {config.image_size}",
        ),
    ]
    if config.use_gh:
        rows += _gh_rows(training, config)
    rows += [("Mixed precision", str(training["mixed_precision"])), ("Seed", str(training["seed"]))]
    return rows


def _gh_rows(training: dict[str, Any], config: GHConfig) -> list[tuple[str, str]]:
    weight = (
        f"0 for the first {_epochs(training['gh_warmup_epochs'])} (SSL warm-up), "
        f"then ramped to {config.gh_weight} "
        f"over {_epochs(training['gh_ramp_epochs'])}"
    )
    labels = (
        f"Sinkhorn, epsilon {config.sinkhorn_epsilon}, {config.sinkhorn_iterations} iterations; "
        f"GH softmax temperature {config.gh_temperature}"
    )
    prior = (
        f"re-estimated every {_epochs(training['prior_every_epochs'])} (floor {training['prior_floor']}), "
        f"score-bank momentum {training['bank_momentum_warmup']} in warm-up, "
        f"{training['bank_momentum']} after"
    )
    return [("GH weight", weight), ("Surrogate labels", labels), ("Anchor prior", prior)]


def _evaluation_context(results: EncoderResults | None) -> dict[str, Any] | None:
    if results is None:
        return None
    dataset = results.dataset
    return {
        "key": results.key,
        "dataset_title": dataset_title(dataset["name"]),
        "num_test": _count(dataset.get("num_test")),
        "num_train": _count(dataset.get("num_train")),
        "grouping": GROUPING_TEXT.get(dataset.get("grouping"), f"the {dataset.get('grouping')} grouping"),
        "rows": table_rows(results),
        "protocols": [
            (protocol_title(name), protocol_description(name, results.entries[name].get("settings", {})))
            for name in results.protocols
        ],
        "main_protocol": protocol_title(results.main_protocol),
        "figure": FIGURE_FILE if results.figure is not None else None,
    }


def build_card_data(
    config: GHConfig, dataset: str | None, results: EncoderResults | None, model_name: str, license: str
) -> ModelCardData:
    """The card's metadata: library, pipeline, tags, datasets, licence and, with results, the model-index."""
    hub_id = dataset_hub_id(dataset) if dataset else None
    return ModelCardData(
        library_name="transformers",
        pipeline_tag="image-feature-extraction",
        license=license,
        tags=[*BASE_TAGS, config.ssl_method],
        datasets=[hub_id] if hub_id else None,
        model_name=model_name if results is not None else None,
        eval_results=eval_results(results) if results is not None else None,
    )


def render_model_card(
    encoder_dir: str | Path,
    model_id: str | None = None,
    results: EncoderResults | None = None,
    license: str = DEFAULT_LICENSE,
    encoder: GHModel | None = None,
    template_path: str | Path | None = None,
) -> ModelCard:
    """The model card of an encoder folder.

    Args:
        encoder_dir: The encoder folder (config.json, model.safetensors, and the run's records).
        model_id: What the usage snippets load: the Hub repo id, or the folder path (default).
        results: The encoder's benchmark results (`load_results`); None renders no evaluation figure.
        license: The licence identifier of the card metadata.
        encoder: The loaded encoder, if at hand (else loaded from `encoder_dir`).
        template_path: Defaults to `default_template_path()`.

    Returns:
        The rendered `ModelCard`.
    """
    encoder_dir = Path(encoder_dir)
    encoder = encoder if encoder is not None else GHModel.from_pretrained(encoder_dir)
    config = encoder.config
    has_processor = (encoder_dir / PROCESSOR_FILE).is_file()
    processor = (
        GHImageProcessor.from_pretrained(encoder_dir) if has_processor else image_processor_for(config)
    )
    args, split, run_info = (
        read_json(encoder_dir / name) for name in (TRAINING_ARGS_FILE, SPLIT_FILE, RUN_INFO_FILE)
    )
    saved_with = (read_json(encoder_dir / CONFIG_FILE) or {}).get("transformers_version", "(unknown)")
    data = _data_context(split, args)
    dataset = (split or {}).get("dataset") or ((args or {}).get("data") or {}).get("dataset")
    model_id = model_id or str(encoder_dir)
    card_data = build_card_data(config, dataset, results, model_id.split("/")[-1], license)
    data_title = data["title"] if data else "an unrecorded dataset"
    summary = (
        f"A `{config.backbone}` image encoder pretrained with self-supervised {method_title(config)} on "
        f"{data_title}, a long-tailed split, with gh_hf, an implementation of Geometric Harmonization "
        f"(Zhou et al., NeurIPS 2023, [arXiv:2310.17622](https://arxiv.org/abs/2310.17622))."
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path or default_template_path()),
        title=f"{method_title(config)} {config.backbone} encoder, pretrained on {data_title}",
        summary=summary,
        model_id=model_id,
        model_rows=_model_rows(config, encoder),
        input_description=_input_description(config),
        num_features=encoder.num_features,
        num_features_shape=f"1, {encoder.num_features}",
        processor_description=_processor_description(processor),
        transformers_version=saved_with,
        data=data,
        data_title=data_title,
        hyperparameter_rows=_hyperparameter_rows(args, config, run_info),
        training_args_json=json.dumps(args, indent=2) if args else "",
        evaluation=_evaluation_context(results),
        environment_rows=run_info_rows(run_info) if run_info else [],
        citation=GH_CITATION,
    )


def write_model_card(encoder_dir: str | Path, **kwargs: Any) -> Path:
    """Renders the card of `encoder_dir` (see `render_model_card`) into its README.md."""
    path = Path(encoder_dir) / CARD_FILE
    render_model_card(encoder_dir, **kwargs).save(path)
    return path
