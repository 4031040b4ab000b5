"""Benchmark pretrained encoders: linear / kNN / few-shot probes, Many / Medium / Few accuracy.

    python scripts/benchmark.py --encoders runs/gh runs/simclr --dataset fashion_mnist \
        --imbalance_ratio 100 --protocols linear,knn,fewshot100 --output_dir bench
    python scripts/benchmark.py --encoders pixels runs/gh ...   # 'pixels': the raw-pixel floor row
    python scripts/benchmark.py preset.yaml           # the same arguments from a YAML file
    accelerate launch scripts/benchmark.py ...        # feature extraction sharded over processes

Writes results.json, results.md and per_class_accuracy.png to --output_dir (see docs/evaluation.md).
"""

from __future__ import annotations

import sys

from transformers import HfArgumentParser

from gh_hf.evaluation import BenchmarkArguments, run_benchmark


def main() -> None:
    parser = HfArgumentParser(BenchmarkArguments)
    if len(sys.argv) == 2 and sys.argv[1].endswith((".yaml", ".yml")):
        (args,) = parser.parse_yaml_file(sys.argv[1])
    else:
        (args,) = parser.parse_args_into_dataclasses()
    run_benchmark(args)


if __name__ == "__main__":
    main()
