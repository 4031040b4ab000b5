#!/usr/bin/env python
"""What does GH cost? `python scripts/bench_step.py [--device cpu|cuda] [--output results/bench_step_cpu.json]`.

Times, in one process and interleaved after warm-up, the median training step of SimCLR and
SimCLR+GH (the demo backbone by default), then Sinkhorn and the score-bank update alone as the
batch size, the number of anchors K and the number of training samples grow.
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser

from gh_hf import GHConfig
from gh_hf.training.step_benchmark import compare_steps, time_bank_update, time_sinkhorn


@dataclass
class BenchArguments:
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu")
    backbone: str = "resnet18"
    backbone_kwargs: str = '{"channels": [8, 16, 32, 64], "stem_type": "deep", "stem_width": 4}'
    in_chans: int = 1
    image_size: int = 28
    num_anchors: int = 10
    batch_size: int = 256
    repeats: int = 20
    bf16: bool = False
    component_batches: str = "256,1024,4096"
    component_anchors: str = "10,100,1000"
    component_samples: str = "10000,100000,1000000"
    output: str = "results/bench_step_cpu.json"


def _ints(text: str) -> list[int]:
    return [int(value) for value in text.split(",")]


def main() -> int:
    (args,) = HfArgumentParser(BenchArguments).parse_args_into_dataclasses()
    device = torch.device(args.device)
    config = GHConfig(
        backbone=args.backbone,
        backbone_kwargs=json.loads(args.backbone_kwargs),
        in_chans=args.in_chans,
        image_size=args.image_size,
        num_anchors=args.num_anchors,
        small_input_stem=True,
    )
    dtype = torch.bfloat16 if args.bf16 else None
    step = compare_steps(config, args.batch_size, device, repeats=args.repeats, dtype=dtype)
    print(
        f"step, batch {args.batch_size}: SimCLR {step['simclr_step_s'] * 1e3:.1f} ms, SimCLR+GH {step['simclr_gh_step_s'] * 1e3:.1f} ms, "
        f"ratio {step['gh_over_simclr']:.3f} ({step['simclr_gh_images_per_s']:.0f} images/s with GH)"
    )
    components = []
    print(f"\n{'batch':>6} {'K':>5} {'N train':>9} {'sinkhorn ms':>12} {'bank ms':>9}")
    for batch in _ints(args.component_batches):
        for anchors in _ints(args.component_anchors):
            for samples in _ints(args.component_samples):
                if anchors == 1000 and samples > 100_000:  # a 1M x 1000 float32 bank is 4 GB
                    continue
                row = {"batch": batch, "num_anchors": anchors, "num_samples": samples,
                       "sinkhorn_s": time_sinkhorn(batch, anchors, device),
                       "bank_update_s": time_bank_update(batch, anchors, samples, device)}  # fmt: skip
                components.append(row)
                print(
                    f"{batch:>6} {anchors:>5} {samples:>9} {row['sinkhorn_s'] * 1e3:>12.2f} {row['bank_update_s'] * 1e3:>9.3f}"
                )
    machine = {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "device": str(device),
               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}  # fmt: skip
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {"args": asdict(args), "machine": machine, "step": step, "components": components}, indent=2
        )
    )
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
