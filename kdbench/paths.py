"""Where kdbench keeps what it computes once and reuses: teacher weights and outputs, checks, decoded clips."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable


def cache_dir() -> Path:
    """``$KDBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/kdbench``, else ``~/.cache/kdbench`` (the XDG default).
    Tests point ``KDBENCH_CACHE_DIR`` at a temporary folder."""
    if explicit := os.environ.get("KDBENCH_CACHE_DIR"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base and os.path.isabs(os.path.expanduser(base)) else Path.home() / ".cache") \
        / "kdbench"


def remove_abandoned(folders: Iterable[Path]) -> None:
    """Remove scratch folders named ``...-<pid>`` or ``...-<pid>.partial`` whose writing process is gone from this
    host: what a process killed hard (no ``finally``) leaves behind. A live or unknown pid keeps its folder."""
    for folder in folders:
        pid = folder.name.removesuffix(".partial").rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's process
        return True
    return True
