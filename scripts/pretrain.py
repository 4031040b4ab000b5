#!/usr/bin/env python
"""Pretrain a GH encoder.

    accelerate launch scripts/pretrain.py [--preset NAME] [--config FILE] [--arg value ...]

With no arguments this runs the `demo` preset (Fashion-MNIST-LT, narrow ResNet-18, SimCLR + GH).
`python scripts/pretrain.py --help` lists every argument.
"""

from __future__ import annotations

import sys

from gh_hf.data import DataSourceError, data_error_message
from gh_hf.dist import ends_process_group
from gh_hf.hub import HubPublishError
from gh_hf.training import Pretrainer, parse_pretrain_args


@ends_process_group
def main(argv: list[str] | None = None) -> int:
    try:  # bad arguments fail here, before any data is loaded
        trainer = Pretrainer(*parse_pretrain_args(argv))
    except (ValueError, HubPublishError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:  # data problems (a missing folder, a corrupt image) fail here, in one line too
        encoder_dir = trainer.train()
    except DataSourceError as error:
        print(f"error: {data_error_message(error)}", file=sys.stderr)
        return 2
    if trainer.accelerator.is_main_process:
        if trainer.final_metrics:
            print(
                "kNN monitor on the test split: "
                + ", ".join(f"{k}={v:.4f}" for k, v in trainer.final_metrics.items())
            )
        print(
            f"Encoder saved to {encoder_dir}. Load it with:\n"
            "  import gh_hf; from transformers import AutoModel; "
            f"AutoModel.from_pretrained({str(encoder_dir)!r})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
