"""gh_hf: Geometric Harmonization for self-supervised pretraining on long-tailed data.

Importing gh_hf registers `GHConfig`, `GHModel` and `GHForPreTraining` with transformers'
AutoConfig, AutoModel and AutoModelForPreTraining (model_type "gh_timm").
"""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from gh_hf.configuration_gh import GHConfig
from gh_hf.geometry import simplex_etf
from gh_hf.modeling_gh import GHForPreTraining, GHModel, GHPreTrainedModel, GHPreTrainingOutput

__version__ = "0.1.0"

AutoConfig.register(GHConfig.model_type, GHConfig, exist_ok=True)
AutoModel.register(GHConfig, GHModel, exist_ok=True)
AutoModelForPreTraining.register(GHConfig, GHForPreTraining, exist_ok=True)

__all__ = [
    "GHConfig",
    "GHForPreTraining",
    "GHModel",
    "GHPreTrainedModel",
    "GHPreTrainingOutput",
    "simplex_etf",
]
