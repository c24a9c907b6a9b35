"""A frozen teacher's outputs for every sample of a split, computed once and reused by every run.

A sweep trains many students against the same frozen teacher; running the teacher again for each run
and each epoch is waste (for Cnn14 or a video-rate EEG model it can dominate). The first run that needs a
split's teacher outputs computes them in one pass and stores them; every later run, with any distiller,
reads them by sample index from memory-mapped arrays.

Safety: the key is a hash of the teacher's name and options, **its weights**, the dataset's name and
content fingerprint and the split, so new weights, other data or other preprocessing (which changes the
fingerprint) never meet old outputs. The arrays are written into a temporary directory that is renamed
into place only when complete, so an interrupted pass leaves nothing that could be read.
Layout: ``<cache>/teacher-outputs/<key>/{meta.json, label.npy, logits.npy, embedding.npy, stage<k>.npy}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from ..contracts import Dataset, FeatureSpec, Model, ModelOutput
from . import loop

FORMAT = 1


def weights_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().cpu()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        # raw bytes of any dtype (a 0-d counter too: reshape first, as a 0-d tensor cannot be re-viewed)
        digest.update(value.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def outputs_key(teacher_name: str, teacher_options: dict, weights: str, dataset_name: str, dataset: Dataset,
                split: str) -> str:
    payload = {"format": FORMAT, "teacher": teacher_name, "options": teacher_options, "weights": weights,
               "dataset": dataset_name, "data": dataset.fingerprint(), "split": split}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


class TeacherOutputs:
    """Read side: memory-mapped arrays, looked up by ``Batch.index``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        meta = json.loads((path / "meta.json").read_text())
        self.num_stages = meta["num_stages"]
        load = lambda name: np.load(path / f"{name}.npy", mmap_mode="r")  # noqa: E731
        self.label, self.logits, self.embedding = load("label"), load("logits"), load("embedding")
        self.stages = [load(f"stage{k}") for k in range(self.num_stages)]

    @property
    def spec(self) -> FeatureSpec:
        return FeatureSpec(self.logits.shape[1], self.embedding.shape[1], tuple(s.shape[1] for s in self.stages))

    def lookup(self, index: torch.Tensor, device: torch.device) -> ModelOutput:
        rows = index.cpu().numpy()
        take = lambda array: torch.from_numpy(np.ascontiguousarray(array[rows])).to(device)  # noqa: E731
        return ModelOutput(take(self.logits), take(self.embedding), tuple(take(s) for s in self.stages))

    def __len__(self) -> int:
        return len(self.label)


def find(root: Path, key: str) -> TeacherOutputs | None:
    path = root / key
    return TeacherOutputs(path) if (path / "meta.json").exists() else None


def compute(root: Path, key: str, teacher: Model, split, *, batch_size: int, num_workers: int,
            device: torch.device, amp: torch.dtype | None, progress: bool) -> TeacherOutputs:
    """One pass of the frozen teacher over ``split`` (a teacher-only view; any order: rows are placed by
    ``Batch.index``)."""
    from tqdm import tqdm

    final = root / key
    tmp = root / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        arrays: dict[str, np.ndarray] = {}
        data = loop.loader(split, batch_size, shuffle=False, generator=None, num_workers=num_workers, device=device)
        teacher.eval()
        with torch.no_grad():
            for batch in tqdm(data, desc="teacher outputs", leave=False, disable=not progress, unit="batch"):
                batch = batch.to(device)
                with loop.autocast(device, amp):
                    out = teacher(batch.teacher_input).float()
                fields = {"label": batch.label, "logits": out.logits, "embedding": out.embedding,
                          **{f"stage{k}": s for k, s in enumerate(out.stages)}}
                rows = batch.index.cpu().numpy()
                for name, value in fields.items():
                    value = value.detach().cpu().numpy()
                    if name not in arrays:
                        arrays[name] = np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=value.dtype,
                                                                 shape=(len(split), *value.shape[1:]))
                    arrays[name][rows] = value
        for array in arrays.values():
            array.flush()
        num_stages = sum(name.startswith("stage") for name in arrays)
        (tmp / "meta.json").write_text(json.dumps({"format": FORMAT, "num_stages": num_stages, "rows": len(split)}))
        del arrays
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same outputs first: theirs are as good as ours
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return TeacherOutputs(final)
