"""Measured facts about a training run (hardware, wall time) for `run_info.json` and the model card."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("gh_hf", "torch", "timm", "transformers", "accelerate")


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU's model name (Linux: /proc/cpuinfo's "model name"), else `platform.processor()`, else None.

    Runs in bf16 on two CPU models differ from the first step (other kernels), so a run records it.
    """
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def describe_hardware(device: torch.device | str, num_processes: int = 1) -> str:
    """The hardware a run used, e.g. "4 x NVIDIA H100 80GB HBM3" or "CPU: AMD EPYC (x86_64), 2 cores"."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{num_processes} x {torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        processes = f", {num_processes} processes" if num_processes > 1 else ""
        machine = platform.machine() or "unknown"
        model = cpu_model()
        name = f"{model} ({machine})" if model and model != machine else machine
        return f"CPU: {name}, {os.cpu_count()} cores{processes}"
    return f"{num_processes} x {device.type}"


def _versions() -> dict[str, str]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def source_revision(root: str | None = None) -> str | None:
    """The git commit of the gh_hf checkout that ran ("<sha>", or "<sha>-dirty" with uncommitted changes
    to gh_hf/ or scripts/); None for an installed package (no checkout of its own).

    Args:
        root: The checkout's root; defaults to the folder holding this gh_hf package.
    """
    package_dir = root or str(Path(__file__).resolve().parents[2])  # gh_hf/hub/run_info.py -> checkout

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=package_dir, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        if os.path.realpath(git("rev-parse", "--show-toplevel")) != os.path.realpath(package_dir):
            return None  # e.g. site-packages inside some other repository
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "gh_hf", "scripts")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def collect_run_info(accelerator: Any, wall_time_s: float, **extra: Any) -> dict[str, Any]:
    """What the trainer writes to `run_info.json` (read by the model card's compute section).

    Args:
        accelerator: The run's `accelerate.Accelerator`.
        wall_time_s: Seconds of training, summed over resumed segments.
        **extra: More measured facts to record (e.g. `global_steps`, `epochs`). A `source_revision`
            given here (the trainer passes the one read when it started: the code that ran is the
            code imported then, not the checkout's HEAD when training ends) replaces the one read now;
            None leaves it out.

    Returns:
        {"hardware", "num_processes", "device_type", "mixed_precision", "wall_time_s",
        "finished_at", "versions", "source_revision" (when gh_hf runs from a git checkout), **extra}.
    """
    revision = extra.pop("source_revision") if "source_revision" in extra else source_revision()
    return {
        "hardware": describe_hardware(accelerator.device, accelerator.num_processes),
        "num_processes": accelerator.num_processes,
        "device_type": accelerator.device.type,
        "mixed_precision": str(accelerator.mixed_precision),
        "wall_time_s": round(float(wall_time_s), 1),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        **({"source_revision": revision} if revision else {}),
        **extra,
    }


def format_duration(seconds: float) -> str:
    """A duration for people: "1 h 02 min 03 s", "4 min 05 s" or "12.3 s"."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


RUN_INFO_LABELS = {
    "hardware": "Hardware",
    "num_processes": "Processes",
    "device_type": "Device type",
    "mixed_precision": "Mixed precision",
    "wall_time_s": "Training wall time",
    "global_steps": "Optimizer steps",
    "epochs": "Epochs",
    "finished_at": "Finished at (UTC)",
    "versions": "Software",
    "source_revision": "gh_hf source (git)",
}


def run_info_rows(run_info: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows of the card's compute table: every recorded fact, known keys first."""
    rows = []
    ordered = [key for key in RUN_INFO_LABELS if key in run_info] + sorted(
        set(run_info) - set(RUN_INFO_LABELS)
    )
    for key in ordered:
        value = run_info[key]
        if key == "wall_time_s":
            seconds = float(value)
            value = format_duration(seconds) + (f" ({seconds:,.0f} s)" if seconds >= 60 else "")
        elif isinstance(value, dict):
            value = ", ".join(f"{name} {version}" for name, version in value.items())
        rows.append((RUN_INFO_LABELS.get(key, key), str(value)))
    return rows
