"""What a run leaves for users: output_dir/encoder/ with config, safetensors weights and a card stub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets import Dataset

from gh_hf.data import get_class_counts
from gh_hf.modeling_gh import GHForPreTraining

CARD_STUB = """---
library_name: transformers
pipeline_tag: image-feature-extraction
tags: [self-supervised, geometric-harmonization, long-tailed, timm, {ssl_method}]
---

# GH encoder: {backbone} pretrained with {method} on {dataset}

A `{backbone}` (timm) encoder pretrained with self-supervised {method} on a long-tailed split of
`{dataset}` (imbalance ratio {ratio}, {num_images} images, per-class counts {counts}), with
[gh_hf](https://arxiv.org/abs/2310.17622).

```python
import gh_hf
from transformers import AutoModel
encoder = AutoModel.from_pretrained("path/to/this/folder")  # encoder(pixel_values).pooler_output
```

Training arguments are in `training_args.json`. No evaluation figures are claimed here; benchmark
this encoder with `python scripts/benchmark.py --encoders <this folder>`.
"""


def export_encoder(model: GHForPreTraining, encoder_dir: str | Path, all_args: dict[str, Any], train_dataset: Dataset) -> Path:
    """Saves the encoder part of `model` (no projector, anchors or optimizer state) for `AutoModel`."""
    encoder_dir = Path(encoder_dir)
    model.encoder.save_pretrained(encoder_dir)
    (encoder_dir / "training_args.json").write_text(json.dumps(all_args, indent=2))
    config = model.config
    method = config.ssl_method.upper() + (" + GH" if config.use_gh else "")
    counts = get_class_counts(train_dataset)
    card = CARD_STUB.format(
        ssl_method=config.ssl_method,
        backbone=config.backbone,
        method=method,
        dataset=all_args["data"]["dataset"],
        ratio=all_args["data"]["imbalance_ratio"],
        num_images=len(train_dataset),
        counts=counts,
    )
    (encoder_dir / "README.md").write_text(card)
    return encoder_dir
