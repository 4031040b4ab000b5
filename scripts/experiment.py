#!/usr/bin/env python
"""Rerun the Fashion-MNIST-LT table of README "Results": `make experiment` (or this script).

Pretrains every arm x seed with the `fashion_mnist_lt` preset through `accelerate launch`,
benchmarks each encoder with scripts/benchmark.py as soon as it exists (the probes are
deterministic per encoder: zero-initialised, seeded shuffles, so one call per encoder gives the
numbers of one call for all), and writes results/fashion_mnist_lt/: results.json/.md and
per_class_accuracy.png (the benchmark's outputs, merged over the runs), summary.md (mean and
spread over seeds), runs/<run>/ (training log with the prior estimates, arguments, run_info) and
commands.md (the exact commands and the commit). `--reuse` keeps finished runs and benchmarks, so
an interrupted experiment resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from gh_hf.evaluation import write_outputs
from gh_hf.hub.run_info import source_revision

ROOT = Path(__file__).resolve().parents[1]
ARMS = {  # name -> arguments on top of the preset
    "simclr": ["--use_gh", "false", "--lr_schedule", "cosine"],
    "simclr_two_stage_lr": ["--use_gh", "false", "--lr_schedule", "two_stage"],
    "simclr_gh": ["--use_gh", "true", "--lr_schedule", "two_stage"],
    # The other SSL bases: with and without GH on the same (two-stage) schedule, so GH is the
    # only difference within a pair.
    **{
        f"{base}{suffix}": ["--ssl_method", base, "--use_gh", use_gh, "--lr_schedule", "two_stage"]
        for base in ("focal", "sdclr", "bcl")
        for suffix, use_gh in (("", "false"), ("_gh", "true"))
    },
}
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
METRICS = ("accuracy", "many", "medium", "few", "per_class_std")
# (without GH, with GH) on the same schedule, seeds and data order: GH is the only difference.
PAIRS = {
    "SimCLR": ("simclr_two_stage_lr", "simclr_gh"),
    "Focal": ("focal", "focal_gh"),
    "SDCLR": ("sdclr", "sdclr_gh"),
    "BCL": ("bcl", "bcl_gh"),
}
PER_RUN_ARGUMENTS = ("encoders", "output_dir", "cache_dir")
BENCHMARK = ["--dataset", "fashion_mnist", "--imbalance_ratio", "100", "--protocols", "linear,knn"]


def run(command: list[str], log: list[str]) -> None:
    log.append(" ".join(command))
    print("$", log[-1], flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def merge_reports(paths: list[Path], output_dir: Path) -> dict:
    """One benchmark report (as results.json holds it) from the one-encoder reports of the runs."""
    reports = [json.loads(path.read_text()) for path in paths]
    first = reports[0]

    def settings(report: dict) -> tuple:  # all but what names the encoder and where outputs go
        arguments = {k: v for k, v in report["arguments"].items() if k not in PER_RUN_ARGUMENTS}
        return report["dataset"], report["protocols"], arguments

    for path, report in zip(paths, reports, strict=True):
        if settings(report) != settings(first):
            raise ValueError(f"{path} was benchmarked with other data, protocols or settings than {paths[0]}")
    results = {encoder: entry for report in reports for encoder, entry in report["results"].items()}
    arguments = {**first["arguments"], "encoders": list(results), "output_dir": str(output_dir)}
    return {**first, "arguments": arguments, "results": results}


def _metric(report: dict, encoder: str, protocol: str, metric: str) -> float:
    return 100 * report["results"][encoder][protocol]["metrics"][metric]


def _mean_spread(values: list[float], signed: bool = False) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{'+' if signed else ''}.2f} ± {spread:.2f}"


def summarise(report: dict, runs: dict[str, list[str]]) -> str:
    """Mean ± spread per arm, then GH minus its base paired by seed (same schedule and data order)."""
    lines = [
        "| Arm | Protocol | Seeds | Overall | Many | Medium | Few | Std |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for protocol in report["protocols"]:
        for arm, encoders in runs.items():
            cells = [_mean_spread([_metric(report, e, protocol, m) for e in encoders]) for m in METRICS]
            lines.append(f"| {arm} | {protocol} | {len(encoders)} | " + " | ".join(cells) + " |")
    lines += ["", "mean ± sample standard deviation over seeds, in %.", ""]
    pairs = {base: arms for base, arms in PAIRS.items() if all(arm in runs for arm in arms)}
    if pairs:
        lines += [
            "GH minus the same base without GH, paired by seed (same seed, schedule and data order):",
            "",
            "| Base | Protocol | Seeds | Overall | Many | Medium | Few | Std |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for protocol in report["protocols"]:
            for base, (without, with_gh) in pairs.items():
                seeds = list(zip(runs[without], runs[with_gh], strict=True))
                cells = [
                    _mean_spread(
                        [_metric(report, g, protocol, m) - _metric(report, b, protocol, m) for b, g in seeds],
                        True,
                    )
                    for m in METRICS
                ]
                lines.append(f"| {base} | {protocol} | {len(seeds)} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "difference in points, mean ± sample standard deviation over seeds (Std: lower is better).",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--work_dir", default="outputs/experiment")
    parser.add_argument("--results_dir", default="results/fashion_mnist_lt")
    parser.add_argument("--linear_epochs", default="200")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="Keep runs whose encoder (with run_info.json) already exists in work_dir instead of "
        "pretraining them again, e.g. to finish an interrupted experiment.",
    )
    parser.add_argument(
        "--skip_benchmark",
        action="store_true",
        help="Only pretrain; benchmark in a later call (with --reuse).",
    )
    parser.add_argument(
        "--extra", default="", help="Extra pretraining arguments, e.g. '--num_epochs 2' for a smoke run."
    )
    args = parser.parse_args()
    work, results = ROOT / args.work_dir, ROOT / args.results_dir
    revision = source_revision(str(ROOT))  # '<sha>' or '<sha>-dirty', as each run's run_info.json
    commands: list[str] = []
    timings = {}
    arms, seeds = args.arms.split(","), args.seeds.split(",")
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        parser.error(f"--arms: unknown arm(s) {unknown}; choose from {sorted(ARMS)}")
    for seed in seeds:  # seed-major: an interrupted experiment has every arm's first seed
        for arm in arms:
            name, output_dir = f"{arm}_seed{seed}", work / f"{arm}_seed{seed}"
            command = [*LAUNCH, "scripts/pretrain.py", "--preset", "fashion_mnist_lt", *ARMS[arm], "--seed", seed,
                       "--output_dir", str(output_dir), *args.extra.split()]  # fmt: skip
            run_info = output_dir / "encoder" / "run_info.json"
            if args.reuse and run_info.exists():
                commands.append(" ".join(command) + "  # reused")
                timings[name] = json.loads(run_info.read_text()).get("wall_time_s")
            else:
                start = time.time()
                run(command, commands)
                timings[name] = round(time.time() - start, 1)
            if not args.skip_benchmark:
                benchmark = [sys.executable, "scripts/benchmark.py", "--encoders", str(output_dir / "encoder"),
                             *BENCHMARK, "--linear_epochs", args.linear_epochs, "--output_dir", str(output_dir / "benchmark"),
                             "--cache_dir", str(work / "feature_cache")]  # fmt: skip
                if args.reuse and (output_dir / "benchmark" / "results.json").exists():
                    commands.append(" ".join(benchmark) + "  # reused")
                else:
                    run(benchmark, commands)
    runs = {arm: [str(work / f"{arm}_seed{seed}" / "encoder") for seed in seeds] for arm in arms}
    if args.skip_benchmark:
        return 0
    report = merge_reports([work / name / "benchmark" / "results.json" for name in timings], results)
    print(write_outputs(report, results))
    (results / "summary.md").write_text(summarise(report, runs))
    revisions = {}
    for name in timings:
        target = results / "runs" / name
        target.mkdir(parents=True, exist_ok=True)
        for file in ("log.jsonl", "training_args.json", "knn_metrics.json", "encoder/run_info.json"):
            if (work / name / file).exists():
                shutil.copy(work / name / file, target / Path(file).name)
        if (target / "run_info.json").exists():
            revisions[name] = json.loads((target / "run_info.json").read_text()).get("source_revision")
    (results / "commands.md").write_text(
        f"commit: {revision} (-dirty: with uncommitted changes to gh_hf/ or scripts/)\n\n"
        f"wall time per pretraining run (s): {json.dumps(timings)}\n\n"
        f"gh_hf source of each pretraining run (run_info.json; null = not recorded): {json.dumps(revisions)}\n\n"
        "```\n" + "\n".join(commands) + "\n```\n"
    )
    print((results / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
