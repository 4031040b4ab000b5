"""The GH-effect experiment: arms x seeds pretrained, benchmarked and summarised, resumably.

`scripts/experiment.py` (`make experiment`) is a thin caller. For every seed the long-tailed split
ranks the classes by a permutation seeded by that seed (`--class_order permuted`, the same for all
arms of the seed), so Few is not always the same three classes. Every arm of a seed shares the
split, the data order, the views and the two-stage LR; within a pair, GH is the only difference.
With `share_warmup` (the default) the arms of a seed that share a base (SimCLR, Focal, SDCLR or
BCL) also share its GH warm-up. Every GH arm keeps its state when the warm-up ends
(`--save_warmup_checkpoint`). An arm's source is the first GH arm of its base, in ARMS order, whose
warm-up is already kept in the work folder (a kept warm-up is never trained again, whichever GH arm
kept it: GH's prior is first used when the warm-up ends), else the first GH arm of its base among
this call's arms. The sources run first; every other arm starts its second stage from its source's
warm-up instead of training the same warm-up again (arms run side by side in separate processes
can fork from a source that another process trains: results/gpu/run_gh_schedule.sh). GH adds
nothing before its warm-up ends, so a fork is the run it replaces, bitwise on CPU
(tests/test_pretrain_e2e.py), and the pair shares its warm-up exactly on any device; it saves
(arms - 1) warm-ups per base and seed.
Each finished run leaves `results_dir/runs/<arm>_seed<seed>/` (training log with the prior
diagnostics, arguments, run facts, the benchmark's `results.json`), which `reuse` treats as done,
so an interrupted experiment resumes where it stopped, also on another machine.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COMMON_ARGS = ["--lr_schedule", "two_stage", "--class_order", "permuted"]
KNOWN_PRIOR = "{known_prior}"  # replaced by the seed's class-frequency file
ARMS: dict[str, list[str]] = {  # name -> arguments on top of the preset and COMMON_ARGS
    "simclr": ["--use_gh", "false"],
    "simclr_gh": ["--use_gh", "true", "--class_prior", "estimated"],
    "simclr_gh_known": ["--use_gh", "true", "--class_prior", KNOWN_PRIOR],
    # --anchor_alignment kmeans (not in the paper): the anchors rotated onto the projections' clusters
    "simclr_gh_aligned": ["--use_gh", "true", "--class_prior", "estimated", "--anchor_alignment", "kmeans"],
    "simclr_gh_known_aligned": [
        "--use_gh",
        "true",
        "--class_prior",
        KNOWN_PRIOR,
        "--anchor_alignment",
        "kmeans",
    ],
    **{
        f"{base}{suffix}": ["--ssl_method", base, "--use_gh", use_gh]
        for base in ("focal", "sdclr", "bcl")
        for suffix, use_gh in (("", "false"), ("_gh", "true"))
    },
}
DEFAULT_ARMS = ("simclr", "simclr_gh", "simclr_gh_known")
# Reported pairs: (label, arm without GH, arm with GH).
PAIRS = (
    ("SimCLR + GH (estimated prior)", "simclr", "simclr_gh"),
    ("SimCLR + GH (known prior)", "simclr", "simclr_gh_known"),
    ("SimCLR + GH (estimated prior, aligned anchors)", "simclr", "simclr_gh_aligned"),
    ("SimCLR + GH (known prior, aligned anchors)", "simclr", "simclr_gh_known_aligned"),
    ("Focal + GH", "focal", "focal_gh"),
    ("SDCLR + GH", "sdclr", "sdclr_gh"),
    ("BCL + GH", "bcl", "bcl_gh"),
)
METRICS = (
    ("Overall", "accuracy"),
    ("Many", "many"),
    ("Medium", "medium"),
    ("Few", "few"),
    ("Std", "per_class_std"),
)
PIXELS = "pixels"


def base_of(arm: str) -> str:
    """The SSL base an arm trains (--ssl_method; the preset's SimCLR when the arm does not set it)."""
    arguments = ARMS[arm]
    return arguments[arguments.index("--ssl_method") + 1] if "--ssl_method" in arguments else "simclr"


def uses_gh(arm: str) -> bool:
    arguments = ARMS[arm]
    return arguments[arguments.index("--use_gh") + 1] == "true"


def launch_command(threads: int | None = None) -> list[str]:
    """`python -m accelerate.commands.launch ...` of one run: one process on `threads` CPU threads.

    accelerate launch gives each process OMP_NUM_THREADS=1 unless told otherwise; the default is
    every core of the machine.
    """
    return ["-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
            "--num_cpu_threads_per_process", str(threads or os.cpu_count() or 1),
            "--dynamo_backend", "no"]  # fmt: skip


RUN_FILES = ("log.jsonl", "training_args.json", "knn_metrics.json", "prior.png", "encoder/run_info.json")


@dataclass
class Experiment:
    """What to run and where. Paths are relative to the repository root."""

    preset: str = "fashion_mnist_lt"
    arms: Sequence[str] = DEFAULT_ARMS
    seeds: Sequence[int] = (0, 1, 2)
    work_dir: str = "outputs/experiment"
    results_dir: str = "results/fashion_mnist_lt"
    protocols: str = "linear,knn"
    linear_epochs: int = 200
    extra: list[str] = field(default_factory=list)
    reuse: bool = False
    threads: int | None = None  # CPU threads per run; None: all cores
    # Pretrain and benchmark the arms only: no pixel floor, seed reports or summary. For arms run side
    # by side in separate processes, which would otherwise all write those; a later call without it
    # (with `reuse`) adds them.
    runs_only: bool = False
    # Arms of a seed and base start their second stage from the first GH arm's warm-up (module doc).
    share_warmup: bool = True
    commands: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ValueError(
                f"threads={self.threads} is invalid; allowed: an integer >= 1 (or None: all cores)"
            )
        unknown = sorted(set(self.arms) - set(ARMS))
        if unknown:
            raise ValueError(f"arms {unknown} are unknown; choose from {sorted(ARMS)}")

    @property
    def data_args(self) -> Any:
        """The runs' `DataArguments` (the preset with COMMON_ARGS and `extra`)."""
        from gh_hf.training.arguments import parse_pretrain_args

        return parse_pretrain_args(["--preset", self.preset, *COMMON_ARGS, *self.extra])[0]

    @property
    def shares_warmup(self) -> bool:
        """`share_warmup` and a GH warm-up to share (`--gh_warmup_epochs` > 0)."""
        from gh_hf.training.arguments import parse_pretrain_args

        training = parse_pretrain_args(["--preset", self.preset, *COMMON_ARGS, *self.extra])[2]
        return self.share_warmup and training.gh_warmup_epochs > 0

    def warmup_sources(self, seed: int) -> dict[str, str]:
        """{arm: the arm whose warm-up it starts from} for one seed (the module doc says which)."""
        from gh_hf.training.checkpointing import warmup_checkpoint

        if not self.shares_warmup:
            return {}
        sources = {}
        for arm in self.arms:
            siblings = [other for other in ARMS if uses_gh(other) and base_of(other) == base_of(arm)]
            kept = [other for other in siblings if warmup_checkpoint(ROOT / work_run_dir(self, other, seed))]
            candidates = kept + [other for other in siblings if other in self.arms]
            if candidates and candidates[0] != arm:
                sources[arm] = candidates[0]
        return sources

    def run_dir(self, name: str) -> Path:
        return ROOT / self.results_dir / "runs" / name

    def run(self, command: list[str]) -> None:
        """Runs `command` from the repository root and appends it to results_dir/commands.md first
        (with `python` for the interpreter), so an interrupted experiment keeps its record."""
        line = shlex.join(["python", *command[1:]])  # quoted: each line can be pasted into a shell
        self.commands.append(line)
        print("$", line, flush=True)
        self.record(line)
        # This checkout first, then whatever the caller put on the path (e.g. packages installed with
        # `pip install --target`), which a plain override would hide from the runs.
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": path})

    def record(self, line: str) -> None:
        """Appends a line to commands.md (created with its header and the gh_hf revision)."""
        from gh_hf.hub.run_info import source_revision

        path = ROOT / self.results_dir / "commands.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(
                "Commands of `make experiment`, in the order they ran (paths relative to the "
                "repository root);\neach run's own gh_hf revision is in its run_info.json.\n\n"
            )
        if not self.commands[:-1]:  # the first command of this call: say which code ran it
            line = f"# gh_hf revision {source_revision(str(ROOT))}\n{line}"
        with path.open("a") as handle:
            handle.write(line + "\n")


def known_prior_file(experiment: Experiment, seed: int) -> str:
    """Writes the class frequencies of the seed's split (largest first: labels are not needed)."""
    from gh_hf.data import get_class_counts
    from gh_hf.files import write_atomically
    from gh_hf.training.data import load_long_tailed_train

    counts = sorted(get_class_counts(load_long_tailed_train(experiment.data_args, seed)), reverse=True)
    text = json.dumps([count / sum(counts) for count in counts]) + "\n"
    # Atomic: arms of a seed run side by side (`--runs_only`) may write it at once (same content).
    path = write_atomically(
        ROOT / experiment.work_dir / f"class_prior_seed{seed}.json", lambda staging: staging.write_text(text)
    )
    return os.path.relpath(path, ROOT)


def work_run_dir(experiment: Experiment, arm: str, seed: int) -> Path:
    """Where one run trains (relative to the repository root)."""
    return Path(experiment.work_dir) / f"{arm}_seed{seed}"


def pretrain_arguments(experiment: Experiment, arm: str, seed: int, prior_file: str) -> list[str]:
    """The `scripts/pretrain.py` arguments of one run, output folder included."""
    arm_args = [prior_file if value == KNOWN_PRIOR else value for value in ARMS[arm]]
    if uses_gh(arm) and experiment.shares_warmup:  # a GH arm keeps its warm-up for the others
        arm_args += ["--save_warmup_checkpoint", "true"]
    output_dir = work_run_dir(experiment, arm, seed)
    return ["--preset", experiment.preset, *COMMON_ARGS, *arm_args, "--seed", str(seed),
            "--output_dir", str(output_dir), *experiment.extra]  # fmt: skip


# Settings a kept run may differ in and still be reused: where it wrote and what it reported to.
# ("auto" settings are compared as "auto": a run stores what they resolved to, from the other
# settings and the machine, e.g. bf16 where it is native.)
REUSE_IGNORES = ("output_dir", "resume_from_checkpoint", "save_warmup_checkpoint", "push_to_hub",
                 "hub_model_id", "report_to")  # fmt: skip


def check_reusable(saved_args: Path, arguments: list[str], name: str) -> None:
    """Fails when a kept run was made with other settings than `arguments` would use now.

    `--reuse` must never mix runs of two configurations in one table (e.g. after the preset changed).
    """
    from gh_hf.training.arguments import parse_pretrain_args, setting_differences

    saved = json.loads(saved_args.read_text())
    differences = [
        f"{key}: kept {kept!r}, now {value!r}"
        for key, kept, value in setting_differences(saved, parse_pretrain_args(arguments), REUSE_IGNORES)
    ]
    if differences:
        raise ValueError(
            f"--reuse: the kept run {name} ({os.path.relpath(saved_args, ROOT)}) was made with other "
            f"settings ({'; '.join(differences)}); delete it to rerun it, or choose another --results_dir"
        )


def pretrain(
    experiment: Experiment, arm: str, seed: int, prior_file: str, start_from: Path | None = None
) -> Path:
    """Pretrains one run and returns its output folder.

    With `reuse`, a finished run (its encoder exists) is kept and an interrupted one resumes from
    its latest checkpoint, both only if made with the same settings; without it, the run starts
    afresh in an emptied folder. A run with no checkpoint of its own starts from `start_from` (the
    warm-up checkpoint of its base's GH arm) when given.
    """
    arguments = pretrain_arguments(experiment, arm, seed, prior_file)
    output_dir = work_run_dir(experiment, arm, seed)
    started = ROOT / output_dir / "training_args.json"
    if experiment.reuse and started.exists():
        check_reusable(started, arguments, f"{arm}_seed{seed}")
        if (ROOT / output_dir / "encoder" / "run_info.json").exists():
            return output_dir
    elif (ROOT / output_dir).exists():
        shutil.rmtree(ROOT / output_dir)  # no checkpoint of an older run may be resumed or rotated
    from gh_hf.training.checkpointing import list_checkpoints

    resume = ["--resume_from_checkpoint", "latest"] if experiment.reuse else []
    if start_from is not None and not list_checkpoints(ROOT / output_dir):
        resume = ["--resume_from_checkpoint", os.path.relpath(start_from, ROOT)]
    experiment.run(
        [sys.executable, *launch_command(experiment.threads), "scripts/pretrain.py", *arguments, *resume]
    )
    return output_dir


def split_counts(output_dir: Path) -> list[int]:
    """Per-label image counts of a run's long-tailed split (from its encoder folder)."""
    return json.loads((ROOT / output_dir / "encoder" / "long_tailed_split.json").read_text())["class_counts"]


def benchmark(experiment: Experiment, encoder: str, counts: list[int], output_dir: Path) -> dict[str, Any]:
    """Benchmarks one encoder (or "pixels") grouped by `counts`; returns its results.json."""
    command = [sys.executable, "scripts/benchmark.py", "--encoders", encoder,
               "--dataset", experiment.data_args.dataset, "--class_counts", ",".join(map(str, counts)),
               "--protocols", experiment.protocols,
               "--linear_epochs", str(experiment.linear_epochs), "--geometry", "true",
               "--output_dir", str(output_dir),
               "--cache_dir", str(Path(experiment.work_dir) / "feature_cache")]  # fmt: skip
    experiment.run(command)
    return json.loads((ROOT / output_dir / "results.json").read_text())


def keep_run(experiment: Experiment, name: str, output_dir: Path | None, report: dict[str, Any]) -> None:
    """Copies a finished run's facts and benchmark report into results_dir/runs/<name>/."""
    target = experiment.run_dir(name)
    target.mkdir(parents=True, exist_ok=True)
    for file in RUN_FILES if output_dir is not None else ():
        if (ROOT / output_dir / file).exists():
            shutil.copy(ROOT / output_dir / file, target / Path(file).name)
    report["arguments"] = {
        key: os.path.relpath(value, ROOT) if isinstance(value, str) and value.startswith(str(ROOT)) else value
        for key, value in report["arguments"].items()
    }
    (target / "benchmark.json").write_text(json.dumps(report, indent=2) + "\n")


def run_seed(experiment: Experiment, seed: int) -> None:
    """Every arm of one seed, then the seed's pixel floor, each kept as soon as it is done."""
    from gh_hf.training.checkpointing import warmup_checkpoint

    prior_file = known_prior_file(experiment, seed)
    counts = None
    sources = experiment.warmup_sources(seed)
    for arm in sorted(experiment.arms, key=lambda arm: arm in sources):  # the sources first
        name = f"{arm}_seed{seed}"
        if experiment.reuse and (experiment.run_dir(name) / "benchmark.json").exists():
            arguments = pretrain_arguments(experiment, arm, seed, prior_file)
            check_reusable(experiment.run_dir(name) / "training_args.json", arguments, name)
            counts = json.loads((experiment.run_dir(name) / "benchmark.json").read_text())["dataset"][
                "class_counts"
            ]
            continue
        start_from = None
        if arm in sources:
            start_from = warmup_checkpoint(ROOT / work_run_dir(experiment, sources[arm], seed))
            if start_from is None:
                print(f"No warm-up checkpoint of {sources[arm]}_seed{seed} (kept from an older run?): "
                      f"{name} trains its warm-up itself.", flush=True)  # fmt: skip
        output_dir = pretrain(experiment, arm, seed, prior_file, start_from)
        counts = split_counts(output_dir)
        report = benchmark(experiment, str(output_dir / "encoder"), counts, output_dir / "benchmark")
        keep_run(experiment, name, output_dir, report)
    name = f"{PIXELS}_seed{seed}"
    if (
        counts is not None
        and not experiment.runs_only
        and not (experiment.reuse and (experiment.run_dir(name) / "benchmark.json").exists())
    ):
        report = benchmark(experiment, PIXELS, counts, Path(experiment.work_dir) / name)
        keep_run(experiment, name, None, report)


def load_reports(experiment: Experiment) -> dict[str, dict[str, Any]]:
    """{run name: its benchmark report} for every kept run."""
    runs = ROOT / experiment.results_dir / "runs"
    return {path.parent.name: json.loads(path.read_text()) for path in sorted(runs.glob("*/benchmark.json"))}


def metric(report: dict[str, Any], protocol: str, key: str) -> float:
    (entry,) = report["results"].values()
    return 100 * entry[protocol]["metrics"][key]


# A table column: (label, the value of one run's benchmark report, decimals).
Column = tuple[str, Callable[[dict[str, Any]], float], int]


def protocol_columns(protocol: str) -> list[Column]:
    """The accuracy columns (METRICS, in %) of one protocol."""
    return [(label, lambda report, key=key: metric(report, protocol, key), 2) for label, key in METRICS]


def geometry_metric(report: dict[str, Any], group: str, key: str) -> float:
    """One group mean of a report's `class_geometry` (accuracy in %, the others as they are)."""
    (entry,) = report["geometry"].values()
    return (100 if key == "centroid_accuracy" else 1) * entry[group][key]


def geometry_columns() -> list[Column]:
    """The benchmark's class-geometry columns (gh_hf.evaluation.report.GEOMETRY_COLUMNS) of a report
    benchmarked with `--geometry true`."""
    from gh_hf.evaluation.report import GEOMETRY_COLUMNS

    return [
        (label, lambda report, key=key, group=group: geometry_metric(report, group, key),
         2 if key == "centroid_accuracy" else 3)
        for label, key, group in GEOMETRY_COLUMNS
    ]  # fmt: skip


def _mean_std(values: list[float], signed: bool = False, decimals: int = 2) -> str:
    """ "mean ± sample std"; one value has no spread to show, so it stands alone."""
    mean = f"{statistics.mean(values):{'+' if signed else ''}.{decimals}f}"
    return f"{mean} ± {statistics.stdev(values):.{decimals}f}" if len(values) > 1 else mean


def _header(title: str, columns: Sequence[Column]) -> list[str]:
    return [f"| {title} | Seeds | " + " | ".join(label for label, _, _ in columns) + " |",
            "|---|---:|" + "---:|" * len(columns)]  # fmt: skip


def arm_table(
    reports: dict[str, dict[str, Any]],
    arms: Sequence[str],
    seeds: Sequence[int],
    title: str,
    columns: Sequence[Column],
) -> list[str]:
    """Markdown rows: mean ± std over seeds per arm (and the pixel floor) of each column."""
    lines = _header(f"Arm ({title})", columns)
    for arm in [*arms, PIXELS]:
        runs = [reports[f"{arm}_seed{seed}"] for seed in seeds if f"{arm}_seed{seed}" in reports]
        if runs:
            cells = [
                _mean_std([read(run) for run in runs], decimals=decimals) for _, read, decimals in columns
            ]
            lines.append(f"| {arm} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines


def paired_table(
    reports: dict[str, dict[str, Any]], seeds: Sequence[int], title: str, columns: Sequence[Column]
) -> list[str]:
    """Markdown rows: GH minus its base, paired by seed, mean ± std over the seeds both finished."""
    lines = _header(f"Pair ({title})", columns)
    for label, base, with_gh in PAIRS:
        pairs = [(reports[f"{base}_seed{s}"], reports[f"{with_gh}_seed{s}"]) for s in seeds
                 if f"{base}_seed{s}" in reports and f"{with_gh}_seed{s}" in reports]  # fmt: skip
        if pairs:
            cells = [
                _mean_std([read(g) - read(b) for b, g in pairs], signed=True, decimals=decimals)
                for _, read, decimals in columns
            ]
            lines.append(f"| {label} | {len(pairs)} | " + " | ".join(cells) + " |")
    return lines


def summarise(experiment: Experiment) -> str:
    """summary.md: per-arm means, paired GH differences and the prior diagnostics of every run."""
    reports = load_reports(experiment)
    seeds = sorted({int(name.rsplit("_seed", 1)[1]) for name in reports})
    arms = [arm for arm in ARMS if any(f"{arm}_seed{seed}" in reports for seed in seeds)]
    lines: list[str] = []
    tables = [(protocol, protocol_columns(protocol)) for protocol in experiment.protocols.split(",")]
    for title, columns in tables:
        lines += [*arm_table(reports, arms, seeds, title, columns), ""]
    lines += [
        "mean ± sample standard deviation over seeds (one seed: its value), in %; pixels: flattened "
        "normalised images.",
        "",
    ]
    for title, columns in tables:
        lines += [*paired_table(reports, seeds, title, columns), ""]
    lines += ["GH minus the same base without GH, paired by seed (same split, data order, views and LR), "
              "in points; Std: lower is more balanced.", ""]  # fmt: skip
    with_geometry = {name: report for name, report in reports.items() if "geometry" in report}
    if with_geometry:  # runs benchmarked before `--geometry` existed have none
        columns = geometry_columns()
        lines += [*arm_table(with_geometry, arms, seeds, "class geometry", columns), "",
                  *paired_table(with_geometry, seeds, "class geometry", columns), "",
                  "Class geometry of the backbone's L2-normalised features (gh_hf.evaluation.class_geometry, "
                  "runs benchmarked with it): NCM, the nearest-class-mean accuracy in %; nearest cos, a "
                  "class mean's largest cosine to another's (lower: more room); concentration, the length "
                  "of a class's mean unit feature.", ""]  # fmt: skip
    lines += hardware_notes(experiment, seeds)
    run_dirs = {name: experiment.run_dir(name) for name in reports if not name.startswith(PIXELS)}
    lines += diagnostics_table(run_dirs)
    return "\n".join(lines) + "\n"


def hardware_notes(experiment: Experiment, seeds: Sequence[int]) -> list[str]:
    """Markdown lines naming each pair whose two runs name different hardware in run_info.json.

    bf16 kernels differ between CPU models (and GPUs), so two such runs differ from their first
    step: their warm-ups are not bitwise one, and the pair's difference carries that noise too.
    """

    def hardware(name: str) -> str | None:
        path = experiment.run_dir(name) / "run_info.json"
        return json.loads(path.read_text()).get("hardware") if path.exists() else None

    notes = []
    for label, base, with_gh in PAIRS:
        for seed in seeds:
            ours, theirs = hardware(f"{base}_seed{seed}"), hardware(f"{with_gh}_seed{seed}")
            if ours and theirs and ours != theirs:
                notes.append(f"- {label}, seed {seed}: {base} on {ours}, {with_gh} on {theirs}.")
    if not notes:
        return []
    return ["Pairs whose run_info.json name different hardware (runs on two CPU models differ from "
            "the first step, so such a pair carries that noise too; records made before run_info named "
            "the CPU model give only the architecture):", "", *notes, ""]  # fmt: skip


DIAGNOSTICS = (
    ("TV(estimate, classes)", "estimate_tv_to_classes"),
    ("TV(prior used, classes)", "prior_tv_to_classes"),
    ("anchor purity", "anchor_purity_mean"),
    ("anchors occupied", "anchors_occupied"),
)


def diagnostics_table(run_dirs: dict[str, Path]) -> list[str]:
    """Markdown rows: each GH run's prior diagnostics at its first and last refresh (log.jsonl)."""
    from gh_hf.training.prior import read_refreshes

    lines = ["Prior diagnostics of each GH run, first -> last refresh (from the score bank's argmax):", "",
             "| Run | Refreshes | " + " | ".join(label for label, _ in DIAGNOSTICS) + " |",
             "|---|---:|" + "---:|" * len(DIAGNOSTICS)]  # fmt: skip
    for name, run_dir in run_dirs.items():
        refreshes = read_refreshes(run_dir / "log.jsonl") if (run_dir / "log.jsonl").exists() else []
        if "_gh" not in name or not refreshes:
            continue
        first, last = refreshes[0], refreshes[-1]
        cells = [f"{_format(first.get(key))} -> {_format(last.get(key))}" for _, key in DIAGNOSTICS]
        lines.append(f"| {name} | {len(refreshes)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _format(value: Any) -> str:
    if value is None:
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def write_summary(experiment: Experiment) -> str:
    """Writes summary.md under results_dir (commands.md is written as commands run); returns it."""
    summary = summarise(experiment)
    (ROOT / experiment.results_dir / "summary.md").write_text(summary)
    return summary


def write_seed_reports(experiment: Experiment) -> None:
    """results_dir/seed<s>/: one merged benchmark report, table and per-class figure per seed."""
    from gh_hf.evaluation import write_outputs

    reports = load_reports(experiment)
    for seed in sorted({int(name.rsplit("_seed", 1)[1]) for name in reports}):
        runs = [report for name, report in reports.items() if name.endswith(f"_seed{seed}")]
        merged = {**runs[0], "results": {key: value for run in runs for key, value in run["results"].items()}}
        merged.pop("geometry", None)
        geometry = {key: value for run in runs for key, value in run.get("geometry", {}).items()}
        if geometry:  # the runs benchmarked with it (older runs have none)
            merged["geometry"] = geometry
        write_outputs(merged, ROOT / experiment.results_dir / f"seed{seed}")


def run_experiment(experiment: Experiment) -> str:
    """Runs every seed (seed-major: an interrupted experiment has every arm of the first seeds)."""
    for seed in experiment.seeds:
        run_seed(experiment, seed)
    if experiment.runs_only:
        return f"runs of {', '.join(experiment.arms)} kept in {experiment.results_dir}/runs (--runs_only)"
    write_seed_reports(experiment)
    return write_summary(experiment)
