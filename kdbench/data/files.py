"""Where a dataset's files are, and a cheap fingerprint of their content.

The fingerprint hashes each file's path (relative to the root), size and modification time, as make and
rsync do: reading 6.5 GB of video to hash it on every run would cost more than the run's first epoch.
Replacing a file, truncating it or touching it changes the key; an edit that keeps both size and mtime
does not (documented in docs/datasets.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from ..errors import KdbenchError


def resolve_root(root: str | Path | None, dataset: str) -> Path:
    """The dataset's folder: the ``root`` option, else ``$KDBENCH_DATA/<dataset>``; refused if absent."""
    if root is None or str(root) == "":
        base = os.environ.get("KDBENCH_DATA")
        if not base:
            raise KdbenchError(f"dataset {dataset!r} needs its folder: pass --root DIR to `kdbench data`, --data-root DIR "
                               f"to `kdbench run` (or set KDBENCH_DATA so that $KDBENCH_DATA/{dataset} is used)")
        root = Path(base) / dataset
    path = Path(root).expanduser()
    if not path.is_dir():
        raise KdbenchError(f"dataset {dataset!r}: folder {path} does not exist; point --root / --data-root at a copy "
                           f"of the data, or make a small one with `kdbench data synth {dataset} --root {path}`")
    return path.resolve()


def files_fingerprint(root: Path, files: Iterable[Path], params: dict[str, Any]) -> str:
    """sha256 over (relative path, size, mtime) of each existing file, plus the sampling ``params``."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for path in sorted({Path(f) for f in files}):
        try:
            st = path.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        rel = os.path.relpath(path, root)
        h.update(f"\0{rel}\0{stamp}".encode())
    return h.hexdigest()
