"""Splits decoded from files, and the cache that lets every later run skip the decoding.

A :class:`ClipSplit` is a split whose samples come from files (an EEG epoch cut out of an EDF, frames
decoded from an AVI). Its subclass says how to decode one item into fixed-shape arrays -- video as
``uint8``, EEG as ``float32`` -- and the base class turns them into samples. ``kdbench data prepare``
(:func:`prepare`) decodes every item once into one memory-mappable ``.npy`` file per field and split, under
``$KDBENCH_CACHE_DIR/clips/<key>``, where the key hashes the dataset's content fingerprint (file sizes and
mtimes plus the sampling parameters) and the split. A split looks for its prepared cache on first use and
reads from it when present, so training uses it without being told to.

Writing is atomic and resumable: items are written into ``<key>.partial/``, and a ``done`` mask (flushed
after the arrays it vouches for) records which are complete; an interrupted prepare continues where it
stopped, and the folder is renamed to ``<key>`` only when every item is in.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import KdbenchError, first_line
from ..paths import cache_dir

FORMAT = 1
#: the two inputs a sample carries (``kdbench.contracts`` re-exports it); a split asked for some of them leaves
#: the others empty
FIELDS = ("student", "teacher")


def clips_root() -> Path:
    return cache_dir() / "clips"


class ClipSplit(torch.utils.data.Dataset):
    """A split whose items are decoded from files, with an automatic prepared-clip cache.

    Subclasses implement :meth:`decode` and :meth:`source` and may override :meth:`to_tensor`.
    ``keys`` name the items (stable across runs: ``--skip-bad`` and reports use them); ``key`` is the
    cache key of the split's content, which must change whenever a decoded array could.
    """

    def __init__(self, keys: list[str], labels: np.ndarray, key: str, groups: np.ndarray | None = None) -> None:
        self.keys = list(keys)
        self.labels = np.asarray(labels, dtype=np.int64)
        #: subject (recording) id per item, for domain-adversarial teachers; -1 = unknown
        self.groups = np.full(len(self.labels), -1, np.int64) if groups is None else np.asarray(groups, np.int64)
        self.key = key
        self.wanted: tuple[str, ...] = FIELDS
        self._cache: dict[str, np.ndarray] | None = None
        self._looked = False

    # ----------------------------------------------------------------- what subclasses provide

    def decode(self, i: int, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The stored form of item ``i``'s ``fields``: same shape and dtype for every item of the split."""
        raise NotImplementedError

    def source(self, i: int) -> str:
        """The file(s) item ``i`` is read from, for error messages."""
        raise NotImplementedError

    def to_tensor(self, name: str, array: np.ndarray) -> torch.Tensor:
        """Stored form -> model input. Default: :func:`model_input`."""
        return model_input(array)

    # ----------------------------------------------------------------- the torch Dataset

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for a split of {len(self)} samples")
        arrays = self._stored(i) if self._prepared() else self._decode_checked(i, self.wanted)
        sample: dict[str, Any] = {name: (self.to_tensor(name, arrays[name]) if name in self.wanted
                                         else torch.zeros(0)) for name in FIELDS}
        sample.update(label=int(self.labels[i]), index=i, group=int(self.groups[i]))
        return sample

    def only(self, *fields: str) -> ClipSplit:
        """A view that decodes just these fields (a teacher pass need not decode video); the others are empty."""
        wanted = tuple(f for f in FIELDS if f in fields)
        if wanted == self.wanted:
            return self
        view = copy.copy(self)
        view.wanted = wanted
        return view

    # ----------------------------------------------------------------- cache

    @property
    def cache_path(self) -> Path:
        return clips_root() / self.key

    def _prepared(self) -> bool:
        if not self._looked:
            self._looked = True
            if (self.cache_path / "meta.json").exists():
                self._cache = self._open_cache(self.cache_path)
        return self._cache is not None

    def _open_cache(self, path: Path) -> dict[str, np.ndarray]:
        """Memory-map a prepared cache after checking it against its ``meta.json`` and this split's items."""
        def damaged(detail: str) -> KdbenchError:
            return KdbenchError(f"the prepared clip cache {path} is damaged ({detail}); delete that folder and run "
                                f"`kdbench data prepare` again (or train without it: it is only a cache)")

        try:
            meta = json.loads((path / "meta.json").read_text())
            layout = meta["layout"]
        except (OSError, ValueError, KeyError) as error:
            raise damaged(f"unreadable meta.json: {error}") from None
        keys = hashlib.sha256("\n".join(self.keys).encode()).hexdigest()
        if meta.get("items") != len(self) or meta.get("keys_sha256") != keys:
            raise damaged(f"it holds {meta.get('items')} items that are not this split's {len(self)}")
        arrays = {}
        for name, spec in layout.items():
            try:
                array = np.load(path / f"{name}.npy", mmap_mode="r")
            except (OSError, ValueError) as error:
                raise damaged(f"{name}.npy: {first_line(error)}") from None
            expected = (len(self), *spec["shape"])
            if array.shape != expected or str(array.dtype) != spec["dtype"]:
                raise damaged(f"{name}.npy is {array.dtype} {array.shape}, not {spec['dtype']} {expected}")
            arrays[name] = array
        if set(self.wanted) - set(arrays):
            raise damaged(f"no {', '.join(sorted(set(self.wanted) - set(arrays)))}.npy")
        return arrays

    def _stored(self, i: int) -> dict[str, np.ndarray]:
        assert self._cache is not None
        return {name: self._cache[name][i] for name in self.wanted}

    def _decode_checked(self, i: int, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
        try:
            return self.decode(i, fields)
        except KdbenchError:
            raise
        except Exception as error:  # a file that went bad after the check: name it, don't dump a traceback
            detail = first_line(error)
            raise KdbenchError(f"cannot read item {self.keys[i]!r} from {self.source(i)}: {detail}; "
                               f"run `kdbench data check` on this dataset") from None


def model_input(array: np.ndarray) -> torch.Tensor:
    """The default stored form -> model input: uint8 pixels to floats in [0, 1]; anything else as float32."""
    tensor = torch.from_numpy(np.array(array))
    return tensor.float().div_(255.0) if tensor.dtype == torch.uint8 else tensor.float()


def split_key(dataset_name: str, fingerprint: str, split: str) -> str:
    """The cache key of one split of a dataset whose content fingerprint is ``fingerprint``."""
    blob = json.dumps({"format": FORMAT, "dataset": dataset_name, "content": fingerprint, "split": split})
    return f"{dataset_name}-{split}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"


_worker_split: ClipSplit | None = None


def _remember(split: ClipSplit) -> None:
    global _worker_split
    _worker_split = split


def _decode_in_worker(i: int) -> dict[str, np.ndarray]:
    assert _worker_split is not None
    return _worker_split._decode_checked(i, FIELDS)


def _decoders(split: ClipSplit, workers: int):
    """Processes that decode items in parallel (decoding video is CPU-bound); only this process writes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method), initializer=_remember,
                               initargs=(split,))


def prepare(split: ClipSplit, *, progress: bool = False, echo: Callable[[str], None] = print,
            flush_every: float = 5.0, workers: int = 1) -> Path:
    """Decode every item of ``split`` into its cache (resuming a partial one); returns the cache folder.

    ``workers`` > 1 decodes in that many processes, in order; this process alone writes the arrays and the
    ``done`` mask, so an interruption leaves the same resumable state as with one process.
    """
    from tqdm import tqdm

    final = split.cache_path
    if (final / "meta.json").exists():
        return final
    if len(split) == 0:
        raise KdbenchError(f"split cache {split.key}: the split has no items to prepare")
    partial = final.with_name(final.name + ".partial")
    first = split._decode_checked(0, FIELDS)
    layout = {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in first.items()}
    layout_file = partial / "layout.json"
    if partial.exists() and (not layout_file.exists() or json.loads(layout_file.read_text()) != layout):
        shutil.rmtree(partial)  # left by another version of the sampling: start over
    fresh = not partial.exists()
    if fresh:
        partial.mkdir(parents=True)
        layout_file.write_text(json.dumps(layout))
    mode = "w+" if fresh else "r+"
    n = len(split)
    arrays = {name: np.lib.format.open_memmap(partial / f"{name}.npy", mode=mode, dtype=np.dtype(spec["dtype"]),
                                              shape=(n, *spec["shape"])) for name, spec in layout.items()}
    done = np.lib.format.open_memmap(partial / "done.npy", mode=mode, dtype=np.bool_, shape=(n,))
    todo = np.flatnonzero(~done)
    if not fresh and len(todo) < n:
        echo(f"resuming {split.key}: {n - len(todo)} of {n} items already prepared")

    def flush() -> None:
        for array in arrays.values():
            array.flush()
        done.flush()  # after the data it vouches for

    last = time.monotonic()
    pool = _decoders(split, workers) if workers > 1 and len(todo) > 1 else None
    try:
        decoded = pool.map(_decode_in_worker, todo.tolist(), chunksize=4) if pool else \
            (first if i == 0 else split._decode_checked(int(i), FIELDS) for i in todo)
        for i, item in tqdm(zip(todo, decoded), total=len(todo), desc=split.key, unit="item", disable=not progress,
                            leave=False):
            for name, array in arrays.items():
                if item[name].shape != array.shape[1:]:
                    raise KdbenchError(f"item {split.keys[i]!r} ({split.source(int(i))}) decodes to {name} of shape "
                                       f"{item[name].shape}, not {array.shape[1:]} like the rest of the split")
                array[i] = item[name]
            done[i] = True
            if time.monotonic() - last > flush_every:
                flush()
                last = time.monotonic()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        flush()
    arrays.clear()  # drop the memory maps before the folder is renamed
    done = None
    (partial / "meta.json").write_text(json.dumps({"format": FORMAT, "items": n, "keys_sha256": hashlib.sha256(
        "\n".join(split.keys).encode()).hexdigest(), "layout": layout}))
    try:
        os.rename(partial, final)
    except OSError:  # another process prepared the same split first
        shutil.rmtree(partial, ignore_errors=True)
    split._looked = False
    return final
