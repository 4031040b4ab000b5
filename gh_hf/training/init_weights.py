"""`--init_from`: start a run's backbone from a saved encoder (a folder or a Hub id).

The run keeps its own schedule, optimizer, score bank, projector, anchors and prior; only the
backbone's weights come from the encoder. Typical use: continue a published (or an earlier run's)
SSL encoder with GH on long-tailed data, or give GH a longer SSL warm-up than one run affords.
"""

from __future__ import annotations

from gh_hf.configuration_gh import GHConfig
from gh_hf.modeling_gh import GHModel
from gh_hf.modeling_gh_pretraining import GHForPreTraining
from gh_hf.sdclr import PrunedBranch

# The config fields that fix the backbone's weights (names and shapes); the others (image size,
# normalisation, the SSL/GH settings) may differ between the encoder and the run.
ARCHITECTURE_FIELDS = ("backbone", "backbone_kwargs", "in_chans", "small_input_stem")


def _invalid(source: str, reason: str) -> ValueError:
    return ValueError(f"--init_from={source!r} is invalid (training): {reason}.")


def check_init_source(source: str, config: GHConfig) -> GHConfig:
    """The config of the encoder at `source`, checked against the run's `config`.

    Args:
        source: what `AutoModel.from_pretrained` takes: a local encoder folder (e.g. another run's
            `output_dir/encoder`) or a Hub repo id.
        config: the run's model config.

    Raises:
        ValueError: naming the source and why: no GH config there, or the architecture fields in
            which it differs from the run ("name: value there, value here").
    """
    try:
        values, _ = GHConfig.get_config_dict(source)
    except (OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise _invalid(source, f"no encoder could be loaded from it ({reason})") from None
    if not values:  # a local folder without config.json reads as {}
        raise _invalid(source, "no encoder could be loaded from it (it holds no config.json)")
    if values.get("model_type") != GHConfig.model_type:
        raise _invalid(
            source,
            f"its config.json is of model_type {values.get('model_type')!r}, not a gh_hf encoder "
            f"({GHConfig.model_type!r})",
        )
    source_config = GHConfig.from_dict(values)
    differences = [
        f"{name}: {getattr(source_config, name)!r} there, {getattr(config, name)!r} here"
        for name in ARCHITECTURE_FIELDS
        if getattr(source_config, name) != getattr(config, name)
    ]
    if differences:
        raise _invalid(source, "its backbone differs from this run's model in " + "; ".join(differences))
    return source_config


def load_init_encoder(model: GHForPreTraining, source: str) -> None:
    """Copies the backbone weights of the encoder at `source` into `model.encoder` (strictly).

    SDCLR's pruned branch is rebuilt from the new dense weights (masks of ones, BatchNorm copies),
    as when a model is first built; the projector, anchors and prior are left as they are.
    """
    check_init_source(source, model.config)
    model.encoder.load_state_dict(GHModel.from_pretrained(source).state_dict(), strict=True)
    if model.pruned is not None:  # built anew: reset_from_dense's guarded copies skip initialised tensors
        model.pruned = PrunedBranch(model.encoder, model.projector, model.config.prune_ratio)
