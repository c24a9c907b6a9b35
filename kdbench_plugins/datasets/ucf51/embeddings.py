"""The stored audio-teacher embeddings: ``<Class>/v_<...>.npy`` in a folder or in the release's ``.tar.gz``.

The release is a gzipped tar, which has no index: reaching one member means decompressing everything
before it. So a tar is read once, front to back, and its members (6,837 x 2 KiB = 14 MiB) are kept in
memory; a folder is listed and each file read when needed. Both check each ``.npy`` header (shape,
dtype, size) while indexing, and the values (finite) in ``check``. macOS ``._*`` / ``__MACOSX`` entries
are skipped.
"""

from __future__ import annotations

import io
import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from kdbench.errors import first_line

from .layout import EMBED_DIM


def _junk(parts: tuple[str, ...]) -> bool:
    return any(p.startswith("._") or p == "__MACOSX" for p in parts)




def header_fault(stream, size: int) -> str | None:
    """Why a ``.npy`` file is not one float32 (512,) array, from its header and size; None if it is fine."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(stream)
        else:
            return f"not a readable .npy file (format version {version[0]}.{version[1]})"
    except (ValueError, OSError, SyntaxError) as error:
        return f"not a readable .npy file ({first_line(error)})"
    if tuple(shape) != (EMBED_DIM,) or dtype.kind != "f" or dtype.itemsize != 4:
        return f"holds {dtype} {tuple(shape)}, expected float32 ({EMBED_DIM},)"
    expected = stream.tell() + EMBED_DIM * 4
    if size < expected:
        return f"truncated: {size} bytes, the header promises {expected}"
    return None


def values_fault(array: np.ndarray) -> str | None:
    if array.shape != (EMBED_DIM,) or array.dtype.kind != "f" or array.dtype.itemsize != 4:
        return f"holds {array.dtype} {array.shape}, expected float32 ({EMBED_DIM},)"
    if not np.isfinite(array).all():
        return "holds NaN or infinite values"
    return None


class Embeddings:
    """One embeddings source, indexed: which clips have an embedding, and what is wrong with which."""

    def __init__(self, path: Path, display: str) -> None:
        self.path = path
        self.display = display          # how reports name it (relative to the dataset root when inside)
        self.is_tar = path.is_file()
        self.where: dict[str, str] = {}          # clip key -> how reports name its file
        self.faults: dict[str, str] = {}         # clip key -> what is wrong with its header
        self.loose = 0                           # .npy files outside any class folder (ignored)
        self.error: str | None = None            # the source as a whole could not be read
        self._files: dict[str, Path] = {}
        self._blobs: dict[str, bytes] = {}
        (self._read_tar if self.is_tar else self._read_folder)()

    # ----------------------------------------------------------------- indexing

    def _add(self, parts: tuple[str, ...], name: str) -> str | None:
        if len(parts) < 2:
            self.loose += 1
            return None
        key = f"{parts[-2]}/{parts[-1][:-4]}"
        self.where[key] = name
        return key

    def _read_tar(self) -> None:
        gz = self.path.name.lower().endswith((".tar.gz", ".tgz"))
        try:
            # "r:*" would try every compression and, failing, raise one error per method on several lines
            tar = tarfile.open(self.path, mode="r:gz" if gz else "r:*")  # noqa: SIM115 - closed by `with tar` below
        except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
            detail = first_line(error) if gz else "not a tar file, gzipped or not"
            self.error = (f"not a readable {'.tar.gz' if gz else 'tar archive'} ({detail}); re-download it or point "
                          f"embeddings= at the unpacked folder")
            return
        try:
            with tar:
                for member in tar:
                    parts = PurePosixPath(member.name).parts
                    if not member.isfile() or not member.name.endswith(".npy") or _junk(parts):
                        continue
                    blob = tar.extractfile(member).read()  # first: a member cut off by the archive's end is not known
                    key = self._add(parts, f"{self.display}:{member.name}")
                    if key is None:
                        continue
                    self._blobs[key] = blob
                    fault = header_fault(io.BytesIO(blob), len(blob))
                    if fault:
                        self.faults[key] = fault
        except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
            self.error = f"cannot read the archive after {len(self.where)} embeddings: {first_line(error)}"

    def _read_folder(self) -> None:
        try:
            classes = sorted((e for e in os.scandir(self.path) if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as error:
            self.error = f"cannot list the folder: {error.strerror or error}"
            return
        for entry in classes:
            if entry.is_file() and entry.name.endswith(".npy"):
                self.loose += 1
            if not entry.is_dir():
                continue
            for file in os.scandir(entry.path):
                if not file.name.endswith(".npy") or file.name.startswith("._") or not file.is_file():
                    continue
                key = self._add((entry.name, file.name), f"{self.display}/{entry.name}/{file.name}")
                self._files[key] = Path(file.path)
                try:
                    with open(file.path, "rb") as stream:
                        fault = header_fault(stream, os.fstat(stream.fileno()).st_size)
                except OSError as error:
                    fault = f"cannot read: {error.strerror or error}"
                if fault:
                    self.faults[key] = fault

    # ----------------------------------------------------------------- use

    @property
    def keys(self) -> list[str]:
        return sorted(self.where)

    def classes(self) -> list[str]:
        return sorted({key.split("/", 1)[0] for key in self.where})

    def files(self) -> list[Path]:
        """The files the embeddings are read from (for the content fingerprint)."""
        return [self.path] if self.is_tar else list(self._files.values())

    def load(self, key: str) -> np.ndarray:
        """The embedding of clip ``key`` as float32 (512,); raises ValueError/OSError when it is bad."""
        source = io.BytesIO(self._blobs[key]) if self.is_tar else self._files[key]
        array = np.load(source, allow_pickle=False)
        fault = values_fault(array)
        if fault:
            raise ValueError(fault)
        return array.astype(np.float32, copy=False)
