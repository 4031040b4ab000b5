"""`output_dir/log.jsonl` of a run that starts from a checkpoint: the history of the state it holds.

Every checkpoint records how many rows the run's log held when it was saved (`TrainerState.log_rows`).
A run resumed from its own checkpoint cuts its log back to those rows: what was logged after the
checkpoint belongs to steps the run is about to redo, and would otherwise appear twice. A fork (a run
started from another run's checkpoint, gh_hf.training.fork) begins with the source's rows up to the
same point. Either way a row naming the checkpoint follows, so the log says where the run restarted.
A run that starts from step 0 begins a new log (`start_log`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

LOG_FILE = "log.jsonl"
UNKNOWN_ROWS = -1  # a checkpoint written before gh_hf counted log rows


def start_log(log_path: Path) -> Path | None:
    """A run starting from step 0 begins a new log. One already in the folder (an earlier start, e.g.
    killed before its first checkpoint) is kept aside as `log.<i>.jsonl`, whose path is returned."""
    if not log_path.is_file() or log_path.stat().st_size == 0:
        return None
    index = 1
    while (kept := log_path.with_name(f"{log_path.stem}.{index}{log_path.suffix}")).exists():
        index += 1
    os.replace(log_path, kept)
    return kept


def continue_log(
    log_path: Path, checkpoint: Path, global_step: int, rows: int, source: Path | None = None
) -> int:
    """Rewrites `log_path` for a run starting from `checkpoint`; returns the rows it then holds.

    Args:
        log_path: this run's log.jsonl.
        checkpoint: the checkpoint the run starts from (named in the last row).
        global_step: the checkpoint's step.
        rows: rows the checkpoint's run had logged when it was saved; UNKNOWN_ROWS for checkpoints
            older than that count: a resume then keeps every row, a fork the source's rows up to
            `global_step`.
        source: the source run's folder for a fork; None for a run resumed from its own checkpoint.

    The file is written under a temporary name and renamed, so a crash leaves the old log whole.
    """
    source_log = log_path if source is None else source / LOG_FILE
    lines = [line for line in source_log.read_text().splitlines() if line] if source_log.is_file() else []
    if rows != UNKNOWN_ROWS:
        lines = lines[:rows]
    elif source is not None:
        lines = [line for line in lines if json.loads(line).get("step", 0) <= global_step]
    key = "resumed_from" if source is None else "forked_from"
    lines.append(json.dumps({key: str(checkpoint), "step": global_step}))
    temporary = log_path.with_name(f".tmp-{log_path.name}")
    temporary.write_text("".join(line + "\n" for line in lines))
    os.replace(temporary, log_path)
    return len(lines)
