"""Writing files and folders so that readers never see a half-written one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def write_atomically(target: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Calls `write(staging)` on a hidden sibling of `target`, then renames it to `target`.

    A reader sees either no `target` or a complete one, even if the writer is killed midway. A file
    target is replaced. A folder target that already exists is kept: another process wrote the same
    content first (a shared cache), and the staged copy is discarded.

    Args:
        target: The file or folder to create.
        write: Writes the file, or creates and fills the folder, at the path it is given.

    Returns:
        `target` as a `Path`.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.partial")
    _remove(staging)  # left by a killed writer that had this pid
    try:
        write(staging)
        os.replace(staging, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        _remove(staging)
    return target


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
