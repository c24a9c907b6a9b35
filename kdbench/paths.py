"""Where kdbench keeps what it computes once and reuses: teacher weights and outputs, checks, decoded clips."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$KDBENCH_CACHE_DIR``, else ``~/.cache/kdbench`` (tests point the variable at a temporary folder)."""
    return Path(os.environ.get("KDBENCH_CACHE_DIR") or Path.home() / ".cache" / "kdbench")
