"""Loading a user's weight file into a student: read, unwrap, strip ``module.``, drop the classifier, load strictly.

The classifier is always the student's own (its class count is the dataset's), so the file's ``fc.*``
entries are discarded unchecked; every other key must be present with the same shape and nothing may
be left over, so a file for another architecture fails on its first mismatching key instead of
half-loading. Weights are never downloaded: the user passes a local path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from kdbench.engine.checkpoint import load_state_strict, read_torch_file
from kdbench.errors import KdbenchError

PREFIX = "module."


def read_weight_file(path: str, what: str) -> tuple[dict[str, Tensor], str | None]:
    """The state dict held by ``path`` (and Hara's ``arch`` string if the file is his training checkpoint).

    Accepts a plain state dict (torchvision's release format) or a dict whose ``state_dict`` entry is one
    (Hara's ``{'epoch', 'arch', 'state_dict', 'optimizer', 'scheduler'}``). A leading ``module.`` on
    every key (a model saved inside ``DataParallel``) is removed.
    """
    obj: Any = read_torch_file(path, what, "docs/students.md for where to get them")
    arch = None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        arch = obj.get("arch") if isinstance(obj.get("arch"), str) else None
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise KdbenchError(f"{what}: weight file {path!r} holds no state dict (a mapping of names to tensors)")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            raise KdbenchError(f"{what}: entry {key!r} of weight file {path!r} is a {type(value).__name__}, "
                               f"not a tensor; is it a state dict?")
        state[key[len(PREFIX):] if key.startswith(PREFIX) else key] = value
    return state, arch


def load_pretrained(module: nn.Module, path: str, what: str, classifier: str = "fc.") -> None:
    """Load every weight of ``path`` but the classifier's (keys starting with ``classifier``) into ``module``
    strictly, naming the first mismatch."""
    state, arch = read_weight_file(path, what)
    own = module.state_dict()
    state = {key: value for key, value in state.items() if not key.startswith(classifier)}
    for key, value in own.items():
        # The new classifier keeps its initialisation. A missing BatchNorm step counter (files saved
        # before it existed) is no weight and is only read when momentum is None, so it is tolerated.
        if key.startswith(classifier) or (key.endswith(".num_batches_tracked") and key not in state):
            state[key] = value
    where = f"{what}: weight file {path!r}" + (f" (arch {arch!r})" if arch else "")
    load_state_strict(module, state, where)
