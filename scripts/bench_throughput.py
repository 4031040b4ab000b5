#!/usr/bin/env python
"""Training throughput end to end: `python scripts/bench_throughput.py [--preset fashion_mnist_lt]`.

Runs the real training loop (loader, views, step; the preset's base, SimCLR, + GH at full weight)
of the per-image pipeline (PIL views in 2 DataLoader workers) and the batched pipeline (views of
the whole batch on the model's device) in one process, in interleaved turns, plus the batched
step alone on ready views ("model_only"), and prints images/s, the speed-up and each pipeline's
data share of the step.
`--arm NAME=ARGS` adds an arm, e.g. `--arm "compiled=--view_pipeline batched --compile true"`;
`--common ARGS` goes to every arm (e.g. `--common "--mixed_precision bf16 --per_device_batch_size 512"`);
`--default_arms false` runs only the `--arm`s, e.g. one per SSL base to compare their costs:
`--default_arms false --arm simclr="--ssl_method simclr" --arm bcl="--ssl_method bcl"`.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from pathlib import Path

import torch

from gh_hf.training.throughput import DEFAULT_ARMS, compare_pipelines


def _arm(text: str) -> tuple[str, list[str]]:
    name, separator, extra = text.partition("=")
    if not separator or not name:
        raise argparse.ArgumentTypeError(f"--arm {text!r} must look like NAME='--arg value ...'")
    return name, shlex.split(extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="fashion_mnist_lt")
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--steps_per_turn", type=int, default=8)
    parser.add_argument("--arm", type=_arm, action="append", default=[], help="NAME=ARGS, repeatable.")
    parser.add_argument("--common", default="", help="Arguments for every arm, e.g. '--image_size 32'.")
    parser.add_argument(
        "--default_arms",
        choices=["true", "false"],
        default="true",
        help="Run the per_image and batched arms too (true) or only the --arm ones (false).",
    )
    parser.add_argument("--output", default="results/throughput_cpu.json")
    args = parser.parse_args(argv)
    arms = {**(DEFAULT_ARMS if args.default_arms == "true" else {}), **dict(args.arm)}
    if not arms:
        parser.error("--default_arms false needs at least one --arm NAME=ARGS")
    report = compare_pipelines(args.preset, arms, args.turns, args.steps_per_turn, shlex.split(args.common))
    report["machine"] = {
        "platform": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    print(f"{args.preset}, batch {report['batch_size']}, GH at full weight, median of {args.turns} turns:")
    print(f"{'arm':>14} {'images/s':>9} {'step ms':>8} {'data share':>11}")
    for name, row in report["results"].items():
        print(
            f"{name:>14} {row['images_per_s']:>9.0f} {row['step_s'] * 1e3:>8.1f} {row['data_share']:>10.1%}"
        )
    if report["batched_over_per_image"] is not None:
        print(f"batched / per_image end-to-end speed-up: {report['batched_over_per_image']:.2f}x")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
