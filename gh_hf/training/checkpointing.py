"""Crash-safe checkpoints: written under a temporary name, renamed when complete, last k kept.

`checkpoints/step_N` are the rotated ones `--resume_from_checkpoint latest` resumes from;
`checkpoints/warmup` (`--save_warmup_checkpoint`) is the state when the GH warm-up ends, kept
outside the rotation so that other arms of an experiment can start their second stage from it.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils.constants import OPTIMIZER_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_NAME

CHECKPOINT_DIR = "checkpoints"
WARMUP_CHECKPOINT = "warmup"
_NAME = re.compile(r"^step_(\d+)$")


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary, half-written ones are ignored)."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [
        (int(match.group(1)), path)
        for path in root.iterdir()
        if (match := _NAME.match(path.name)) and path.is_dir()
    ]
    return [path for _, path in sorted(found)]


def resolve_checkpoint(output_dir: str | os.PathLike, resume_from_checkpoint: str | None) -> Path | None:
    """The checkpoint folder to resume from: a path, 'latest' (None if the run has none yet), or None."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise ValueError(
            f"--resume_from_checkpoint={resume_from_checkpoint!r} is not a checkpoint folder (nor 'latest')."
        )
    return path


def missing_checkpoint_files(
    path: str | os.PathLike, custom_objects: int, bank_shards: str | None, single_files: bool = True
) -> list[str]:
    """What `accelerator.load_state` will read from the checkpoint folder `path` and not find there.

    Args:
        path: the checkpoint folder.
        custom_objects: how many objects the run registers for checkpointing (its counters, and a
            streamed loader's or BCL's loss memory when it has them): `custom_checkpoint_<i>.pkl`.
        bank_shards: the glob of the score bank's shard files (`ScoreBank.shard_glob()`) when the run
            has GH (at least one must be there), else None.
        single_files: the model and optimizer are saved as one file each (`model.safetensors`,
            `optimizer.bin`); False under FSDP or DeepSpeed, which save folders of their own
            (not checked here).
    """
    path = Path(path)
    missing = []
    if single_files:
        if not any((path / name).is_file() for name in (SAFE_WEIGHTS_NAME, WEIGHTS_NAME)):
            missing.append(SAFE_WEIGHTS_NAME)
        if not (path / f"{OPTIMIZER_NAME}.bin").is_file():
            missing.append(f"{OPTIMIZER_NAME}.bin")
    needed = [f"custom_checkpoint_{index}.pkl" for index in range(custom_objects)]
    missing += [name for name in needed if not (path / name).is_file()]
    if bank_shards is not None and not any(path.glob(bank_shards)):
        missing.append(bank_shards)
    return missing


def require_complete_checkpoint(
    path: str | os.PathLike, custom_objects: int, bank_shards: str | None, single_files: bool = True
) -> None:
    """Fails, naming what is missing, when `path` lacks part of the state a run resumes from.

    A folder cut down to its weights (to save disk, or copied in part) would otherwise fail deep in
    `accelerator.load_state`, on whichever file it reads first. Arguments: `missing_checkpoint_files`.

    Raises:
        ValueError: naming the folder, the missing files and the files it holds.
    """
    missing = missing_checkpoint_files(path, custom_objects, bank_shards, single_files)
    if missing:
        held = sorted(entry.name for entry in Path(path).iterdir())
        raise ValueError(
            f"--resume_from_checkpoint={str(path)!r} is not a complete checkpoint: it lacks "
            f"{', '.join(missing)} (it holds {', '.join(held) or 'nothing'}). A run resumes or forks from "
            "the whole state it saved (weights, optimizer, counters, and the score bank with GH); to start a "
            "new run from an encoder's weights, use --init_from ENCODER_DIR"
        )


def warmup_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The run's complete warm-up checkpoint (`--save_warmup_checkpoint`), or None."""
    path = checkpoint_root(output_dir) / WARMUP_CHECKPOINT
    return path if path.is_dir() else None


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | os.PathLike,
    global_step: int,
    keep: int,
    name: str | None = None,
) -> Path:
    """`accelerator.save_state` into `.tmp-step_N`, renamed to `step_N` once every process is done.

    With `name`, the checkpoint is `checkpoints/<name>` instead, outside the rotation of the last
    `keep` (and never what 'latest' resumes from).
    """
    root = checkpoint_root(output_dir)
    name = name or f"step_{global_step:08d}"
    final = root / name
    temporary = root / f".tmp-{name}"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
