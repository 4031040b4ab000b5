#!/usr/bin/env python
"""Rerun README "Results" (`make experiment`): GH's effect on Fashion-MNIST-LT, arms x seeds.

Pretrains every arm x seed with the `fashion_mnist_lt` preset (classes ranked by a permutation
seeded by the seed), benchmarks each encoder and the raw-pixel floor as soon as they exist, and
writes results/fashion_mnist_lt/: runs/<arm>_seed<s>/ (log with the prior diagnostics, arguments,
run facts, benchmark.json), seed<s>/ (merged table and per-class figure), summary.md and
commands.md. `--reuse` keeps every run already kept there (or whose encoder exists in the work
folder), so an interrupted experiment resumes where it stopped. See gh_hf.experiment.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from gh_hf.experiment import ARMS, DEFAULT_ARMS, Experiment, run_experiment, write_seed_reports, write_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="fashion_mnist_lt")
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"Comma-separated, of {sorted(ARMS)}.")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--work_dir", default="outputs/experiment")
    parser.add_argument("--results_dir", default="results/fashion_mnist_lt")
    parser.add_argument("--protocols", default="linear,knn")
    parser.add_argument("--linear_epochs", type=int, default=200)
    parser.add_argument("--extra", default="", help="Extra pretraining arguments, e.g. '--num_epochs 2'.")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="Keep finished runs, resume interrupted ones from their latest checkpoint, run what is missing.",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per run (default: all cores).")
    parser.add_argument(
        "--runs_only",
        action="store_true",
        help="Pretrain and benchmark the arms only, without the pixel floor, seed reports and summary "
        "(for arms run side by side in separate processes; a later call with --reuse adds them).",
    )
    parser.add_argument(
        "--share_warmup",
        choices=("true", "false"),
        default="true",
        help="Arms of a seed and base start their second stage from one GH arm's warm-up checkpoint "
        "(a kept one first) instead of training the same warm-up again (default: true; see "
        "gh_hf.experiment).",
    )
    parser.add_argument(
        "--summary_only",
        action="store_true",
        help="Rewrite summary.md and the seed<s>/ reports from the kept runs; nothing is run.",
    )
    args = parser.parse_args(argv)
    try:
        experiment = Experiment(
            preset=args.preset,
            arms=args.arms.split(","),
            seeds=[int(seed) for seed in args.seeds.split(",")],
            work_dir=args.work_dir,
            results_dir=args.results_dir,
            protocols=args.protocols,
            linear_epochs=args.linear_epochs,
            extra=shlex.split(args.extra),
            reuse=args.reuse or args.summary_only,
            threads=args.threads,
            runs_only=args.runs_only,
            share_warmup=args.share_warmup == "true",
        )
    except ValueError as error:
        parser.error(str(error))
    try:
        if args.summary_only:
            write_seed_reports(experiment)
        print(write_summary(experiment) if args.summary_only else run_experiment(experiment))
    except ValueError as error:  # e.g. --reuse finding a kept run made with other settings
        print(f"experiment.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
