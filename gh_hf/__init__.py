"""gh_hf: Geometric Harmonization for self-supervised pretraining on long-tailed data.

Importing gh_hf registers `GHConfig`, `GHModel`, `GHForPreTraining` and `GHImageProcessor` with
transformers' AutoConfig, AutoModel, AutoModelForPreTraining and AutoImageProcessor (model_type
"gh_timm"). `GHConfig`, `GHModel` and `GHImageProcessor` are also registered for auto classes, so
a saved encoder folder carries their code (`configuration_gh.py`, `modeling_gh.py`,
`image_processing_gh.py`: self-contained, no gh_hf import) and loads with
`trust_remote_code=True` where gh_hf is not installed (see gh_hf.hub). Importing gh_hf does not
load the Hub publishing code, the evaluation stack or matplotlib.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForPreTraining

from gh_hf.configuration_gh import GHConfig
from gh_hf.geometry import simplex_etf
from gh_hf.image_processing_gh import GHImageProcessor
from gh_hf.modeling_gh import GHModel, GHPreTrainedModel
from gh_hf.modeling_gh_pretraining import GHForPreTraining, GHPreTrainingOutput

__version__ = "0.1.0"
# One PIL implementation under both backend names: it reproduces gh_hf's evaluation transform exactly
# (a torchvision tensor resize would not), and transformers warns when its default backend has no entry.
_PROCESSOR_BACKENDS = {"pil": GHImageProcessor, "torchvision": GHImageProcessor}

AutoConfig.register(GHConfig.model_type, GHConfig, exist_ok=True)
AutoModel.register(GHConfig, GHModel, exist_ok=True)
AutoModelForPreTraining.register(GHConfig, GHForPreTraining, exist_ok=True)
AutoImageProcessor.register(GHConfig, image_processor_classes=_PROCESSOR_BACKENDS, exist_ok=True)
GHConfig.register_for_auto_class("AutoConfig")
GHModel.register_for_auto_class("AutoModel")
GHImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "GHConfig",
    "GHForPreTraining",
    "GHImageProcessor",
    "GHModel",
    "GHPreTrainedModel",
    "GHPreTrainingOutput",
    "simplex_etf",
]
