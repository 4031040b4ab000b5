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

from gh_hf.data import DataSourceError, data_error_message
from gh_hf.dist import ends_process_group
from gh_hf.evaluation import BenchmarkArguments, run_benchmark


@ends_process_group
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser(BenchmarkArguments)
    try:  # bad arguments fail here, before any data is loaded
        if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
            (args,) = parser.parse_yaml_file(argv[0])
        else:
            (args,) = parser.parse_args_into_dataclasses(argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:  # so do missing encoders and unreadable data, in one line too
        run_benchmark(args)
    except DataSourceError as error:
        print(f"error: {data_error_message(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
