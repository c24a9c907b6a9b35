"""Reverse distillation: a dataset with the roles of its two modalities swapped (SACD paper, Table IV, E–G).

With ``direction = "reverse"`` the run sees the same samples with the student's input given to the teacher and
the teacher's input to the student: on the sleep data the infrared video model becomes the teacher and the EEG
model the student. Everything else (labels, indices, groups, splits) is the dataset's own, so every distiller
runs unchanged. The swap is a thin view over the built dataset, made after its data check: a file's problem
is the same problem whichever network reads it.

The view has its own fingerprint (the dataset's, marked reversed), so teacher weights and stored teacher
outputs made in one direction are never read in the other.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from ..contracts import FIELDS, Dataset, DatasetInfo

#: which field of the dataset's items each field of the reversed items is read from
SWAP = {"student": "teacher", "teacher": "student"}


class _SwappedSplit(torch.utils.data.Dataset):
    """A split whose items carry the dataset's teacher input as ``student`` and its student input as ``teacher``."""

    def __init__(self, base: torch.utils.data.Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.base[i])
        item["student"], item["teacher"] = item["teacher"], item["student"]
        return item

    def __getattr__(self, name: str) -> Any:   # labels, keys, ... of the underlying split
        return getattr(self.base, name)


class ReversedModalities:
    """The dataset ``base`` seen the other way round; attributes not swapped here are ``base``'s."""

    def __init__(self, base: Dataset) -> None:
        self.base = base
        info = base.info
        self.info = DatasetInfo(class_names=info.class_names, teacher_input_shape=info.student_input_shape,
                                student_input_shape=info.teacher_input_shape)
        #: the new teacher reads what was the student's input: its outputs may be stored only if that is fixed
        self.fixed_teacher_inputs = type(base).fixed_student_inputs

    def split(self, name: str, fields: tuple[str, ...] = FIELDS) -> torch.utils.data.Dataset:
        return _SwappedSplit(self.base.split(name, tuple(SWAP[f] for f in fields)))

    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.base.fingerprint()}|reversed".encode()).hexdigest()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)
