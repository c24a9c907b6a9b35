"""Where kdbench keeps what it computes once and reuses: teacher weights and outputs, checks, decoded clips."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$KDBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/kdbench``, else ``~/.cache/kdbench`` (the XDG default).
    Tests point ``KDBENCH_CACHE_DIR`` at a temporary folder."""
    if explicit := os.environ.get("KDBENCH_CACHE_DIR"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base and os.path.isabs(os.path.expanduser(base)) else Path.home() / ".cache") \
        / "kdbench"
