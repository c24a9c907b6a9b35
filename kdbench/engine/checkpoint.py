"""Checkpoints written atomically: a crash mid-write leaves the previous checkpoint, never half a file."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import KdbenchError
from ..signals import signals_deferred  # noqa: F401  (also imported from here)


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over it; signals wait until done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with signals_deferred():
        try:
            with open(tmp, "wb") as handle:
                torch.save(obj, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


RESUME_FIX = "delete it to start over"


def check_writable(folder: Path, need: int, what: str, fix: str) -> None:
    """Refuse, before any training, a folder that cannot take a file of ``need`` bytes: not creatable, not
    writable, or without the room (an atomic save holds the old file and the new one at once)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".kdbench-write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise KdbenchError(f"{what} {folder} is not writable ({error.strerror or error}); {fix}") from None
    free = shutil.disk_usage(folder).free
    if free < need:
        raise KdbenchError(f"{what} {folder} has {free / 2**20:.0f} MiB free, and a checkpoint needs about "
                           f"{need / 2**20:.0f} MiB; {fix}")


def state_bytes(*modules: torch.nn.Module) -> int:
    """Bytes of the modules' parameters and buffers."""
    return sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()])


def load(path: Path, what: str | None = None, fix: str = RESUME_FIX) -> dict[str, Any]:
    """Load a kdbench checkpoint onto the CPU, with one clear line if it cannot be: ``what`` names it (default
    "checkpoint '<path>'") and ``fix`` says what to do about an unreadable one."""
    what = what or f"checkpoint {str(path)!r}"
    path = Path(path)
    if path.is_dir():
        raise KdbenchError(f"{what} is a folder, not a weights file; {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise KdbenchError(f"{what} does not exist") from None
    except Exception as error:
        raise KdbenchError(f"{what} is unreadable ({type(error).__name__}); {fix}") from None


def load_state_strict(module: torch.nn.Module, state: dict[str, Any], what: str) -> None:
    """Load a state dict by key and shape, naming the first mismatch instead of dumping all of them."""
    own = module.state_dict()
    for key in own:
        if key not in state:
            raise KdbenchError(f"{what}: key {key!r} is missing from the checkpoint; is it for another model?")
        if tuple(state[key].shape) != tuple(own[key].shape):
            raise KdbenchError(f"{what}: key {key!r} has shape {tuple(state[key].shape)} in the checkpoint, "
                               f"the model expects {tuple(own[key].shape)}")
    extra = [key for key in state if key not in own]
    if extra:
        raise KdbenchError(f"{what}: unexpected key {extra[0]!r} in the checkpoint; is it for another model?")
    module.load_state_dict(state, strict=True)


def read_torch_file(path: str, what: str, docs: str) -> Any:
    """Read a weight file the user points at (never downloaded), with one clear line when it cannot be.

    The safe loader (tensors, numbers, containers) reads released weight files; a file holding pickled
    classes it does not know falls back to the full loader, as ``torch.load`` did by default, since the
    user chose the file. ``docs`` names the page that says where such files come from.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise KdbenchError(f"{what}: weight file {path!r} does not exist (weights are never downloaded; see {docs})")
    try:
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            return torch.load(file, map_location="cpu", weights_only=False)
    except Exception as error:
        raise KdbenchError(f"{what}: weight file {path!r} is unreadable by torch.load ({type(error).__name__})") from None
