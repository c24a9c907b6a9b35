"""What the three EEG teachers share: the input check, the lazy braindecode import, feature taps, the head.

Every teacher reads one 30-s single-channel epoch ``(B, 1, n_times)`` and exposes a 512-d embedding (the
SACD paper's latent size, V-B) through a learned linear projection of its native feature, with the
class logits computed from that embedding. The projection has no activation: a linear map into 512
followed by each paper's own linear head spans exactly the functions the head alone could compute
(the head's rank is at most its output width, far below 512), so adding it changes how the teacher is
parameterised, not what it can learn, and the embedding keeps its sign for cosine-based distillers.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import Tensor, nn

from kdbench.contracts import DatasetInfo
from kdbench.errors import KdbenchError

#: the SACD paper's latent size (V-B: "The dimension of the latent feature space is 512").
LATENT = 512


def epoch_length(info: DatasetInfo, who: str) -> int:
    """``n_times`` of a single-channel teacher input, or one line saying why the dataset does not fit."""
    shape = tuple(info.teacher_input_shape)
    if len(shape) != 2 or shape[0] != 1 or shape[1] < 1:
        raise KdbenchError(f"teacher {who!r} reads one EEG channel, shape (1, n_times); "
                           f"the dataset's teacher input has shape {shape}")
    return int(shape[1])


def braindecode_models() -> Any:
    """Import ``braindecode.models`` (~4 s) only when a teacher is built, hiding its import-time notices.

    Importing it builds MNE montages and wfdb tables, which emit deprecation warnings that say nothing
    about the user's run; only those two categories are silenced, and only during the import.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", category=Warning, module=r"wfdb\..*")
        import braindecode.models as models
    return models


class _Tap:
    """A forward hook that stores its module's output under a name."""

    def __init__(self, store: dict[str, Tensor], key: str) -> None:
        self.store, self.key = store, key

    def __call__(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        self.store[self.key] = output


class Taps:
    """Outputs of chosen submodules of a wrapped network, caught by forward hooks during its forward.

    Hooks let the wrapped library model run its own ``forward`` unchanged (so it stays the reference for
    what the network computes) while the teacher still reads intermediate stages. The store is a plain
    attribute of the owning module, so ``copy.deepcopy`` of the teacher copies hooks and store together.
    """

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.store: dict[str, Tensor] = {}
        for key, module in modules.items():
            module.register_forward_hook(_Tap(self.store, key))

    def take(self) -> dict[str, Tensor]:
        """The outputs of the last forward pass; the store is emptied so no activation outlives it."""
        out = dict(self.store)
        self.store.clear()
        return out


def pooled(x: Tensor) -> Tensor:
    """Global average over every axis after the channel axis: (B, C, ...) -> (B, C)."""
    return x.flatten(2).mean(-1)


class LinearHead(nn.Module):
    """Native feature -> linear 512-d embedding -> linear class logits (see the module docstring)."""

    def __init__(self, native: int, embedding_dim: int, num_classes: int) -> None:
        super().__init__()
        self.project = nn.Linear(native, embedding_dim)
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def forward(self, feature: Tensor) -> tuple[Tensor, Tensor]:
        embedding = self.project(feature)
        return self.classifier(embedding), embedding
