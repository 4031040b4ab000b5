#!/usr/bin/env python
"""What does GH cost? `PYTHONPATH=. python scripts/bench_step.py [--device cpu|cuda] [--output ...]`.

Times, in one process and interleaved after warm-up:
1. the median training step of SimCLR and SimCLR+GH (the fashion_mnist_lt preset's model by
   default), GH's Sinkhorn solving scores that need `--sinkhorn_iterations` iterations, as training's do;
2. gh_hf's GH loss (forward + backward) and bank update against the paper's (300 fixed iterations
   per view, per-sample bank loop), at each batch x K in `--loss_shapes` and each iteration count
   in `--loss_iterations` that the synthetic scores need (plain iterations);
3. the vectorised score-bank update alone as the batch, K and the number of training samples grow.
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
from gh_hf.dist import resolve_mixed_precision
from gh_hf.training.arguments import load_preset
from gh_hf.training.step_benchmark import compare_gh_losses, compare_steps, time_bank_update


@dataclass
class BenchArguments:
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu")
    backbone: str = "resnet18"
    backbone_kwargs: str = field(
        default=json.dumps(load_preset("fashion_mnist_lt")["backbone_kwargs"]),
        metadata={"help": "JSON; default: the fashion_mnist_lt preset's."},
    )
    in_chans: int = 1
    image_size: int = 28
    num_anchors: int = 10
    batch_size: int = 256
    repeats: int = 20
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bf16 autocast of the step; default: as training's --mixed_precision auto."},
    )
    sinkhorn_iterations: int = field(
        default=200,
        metadata={"help": "Plain Sinkhorn iterations the GH arm's scores need (training: 70-210)."},
    )
    loss_shapes: str = field(default="512x100,4096x1000", metadata={"help": "batch x K of the GH loss rows."})
    loss_iterations: str = field(
        default="10,30,100,300", metadata={"help": "iterations the loss rows' scores need."}
    )
    loss_repeats: int = 5
    component_batches: str = "256,1024,4096"
    component_anchors: str = "10,100,1000"
    component_samples: str = "10000,100000,1000000"
    output: str = "results/bench_step_cpu.json"


def _ints(text: str) -> list[int]:
    return [int(value) for value in text.split(",")]


def _step(args: BenchArguments, device: torch.device) -> dict[str, float]:
    config = GHConfig(
        backbone=args.backbone,
        backbone_kwargs=json.loads(args.backbone_kwargs),
        in_chans=args.in_chans,
        image_size=args.image_size,
        num_anchors=args.num_anchors,
        small_input_stem=True,
    )
    bf16 = resolve_mixed_precision("auto") == "bf16" if args.bf16 is None else args.bf16
    dtype = torch.bfloat16 if bf16 else None
    step = compare_steps(
        config,
        args.batch_size,
        device,
        args.repeats,
        dtype=dtype,
        sinkhorn_iterations=args.sinkhorn_iterations,
    )
    step["bf16"] = bf16
    print(
        f"step, batch {args.batch_size}, K {args.num_anchors}, {'bf16' if bf16 else 'float32'}, "
        f"Sinkhorn {step['plain_sinkhorn_iterations']} plain iterations ({step['sinkhorn_iterations']} run): "
        f"SimCLR {step['simclr_step_s'] * 1e3:.1f} ms, SimCLR+GH {step['simclr_gh_step_s'] * 1e3:.1f} ms, "
        f"ratio {step['gh_over_simclr']:.3f} ({step['simclr_gh_images_per_s']:.0f} images/s with GH)"
    )
    return step


def _losses(args: BenchArguments, device: torch.device) -> list[dict[str, float]]:
    print(
        "\nGH loss fwd+bwd (+ bank update): gh_hf vs the paper's code (300 iterations, per-sample bank loop);"
        "\nplain: iterations plain Sinkhorn needs on these scores, run: iterations gh_hf ran (over-relaxed);"
        "\nplain ms: gh_hf's loss with plain Sinkhorn (sinkhorn_overrelax=False)"
    )
    print(
        f"{'batch':>6} {'K':>5} {'plain':>6} {'run':>4} {'gh ms':>9} {'paper ms':>9} {'ratio':>6} "
        f"{'gh+bank':>9} {'paper+bank':>11} {'ratio':>6} {'plain ms':>9} {'plain/gh':>8}"
    )
    rows = []
    for shape in args.loss_shapes.split(","):
        batch, anchors = (int(value) for value in shape.split("x"))
        for iterations in _ints(args.loss_iterations):
            row = compare_gh_losses(batch, anchors, iterations, device, args.loss_repeats)
            rows.append(row)
            gh, paper = row["gh_loss_s"] * 1e3, row["paper_loss_s"] * 1e3
            gh_all, paper_all = gh + row["gh_bank_s"] * 1e3, paper + row["paper_bank_s"] * 1e3
            print(
                f"{batch:>6} {anchors:>5} {row['plain_sinkhorn_iterations']:>6} "
                f"{row['sinkhorn_iterations']:>4} {gh:>9.2f} {paper:>9.2f} "
                f"{row['paper_over_gh_loss']:>6.2f} {gh_all:>9.2f} {paper_all:>11.2f} "
                f"{row['paper_over_gh_loss_and_bank']:>6.2f} {row['gh_plain_loss_s'] * 1e3:>9.2f} "
                f"{row['plain_over_gh_loss']:>8.2f}"
            )
    return rows


def _bank_updates(args: BenchArguments, device: torch.device) -> list[dict[str, float]]:
    print(f"\n{'batch':>6} {'K':>5} {'N train':>9} {'bank ms':>9}")
    rows = []
    for batch in _ints(args.component_batches):
        for anchors in _ints(args.component_anchors):
            for samples in _ints(args.component_samples):
                if anchors == 1000 and samples > 100_000:  # a 1M x 1000 float32 bank is 4 GB
                    continue
                seconds = time_bank_update(batch, anchors, samples, device)
                rows.append(
                    {"batch": batch, "num_anchors": anchors, "num_samples": samples, "bank_update_s": seconds}
                )
                print(f"{batch:>6} {anchors:>5} {samples:>9} {seconds * 1e3:>9.3f}")
    return rows


def main() -> int:
    (args,) = HfArgumentParser(BenchArguments).parse_args_into_dataclasses()
    device = torch.device(args.device)
    step = _step(args, device)
    losses = _losses(args, device)
    bank_updates = _bank_updates(args, device)
    machine = {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "device": str(device),
               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}  # fmt: skip
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    results = {
        "args": asdict(args),
        "machine": machine,
        "step": step,
        "gh_losses": losses,
        "bank_updates": bank_updates,
    }
    output.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
