"""The kdbench teachers ``cnn14`` and ``cnn14-emb512``: a PANNs network, an optional projection, our head.

The PANNs network lives in the submodule ``panns`` so a released checkpoint (``{'iteration', 'model'}``)
loads into it strictly by key, AudioSet head included, while our own head over the dataset's classes
(and the projection to ``embedding_dim``) sit beside it and keep their initialisation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from kdbench.contracts import DatasetInfo, Model, ModelOutput
from kdbench.engine.checkpoint import load_state_strict, read_torch_file
from kdbench.errors import KdbenchError
from kdbench.options import PluginOptions, path_field

from .network import MIN_SAMPLES, N_FFT, SAMPLE_RATE, Cnn14Net, xavier_init

PREFIX = "module."


class PannsOptions(PluginOptions):
    pretrained: str | None = path_field(
        None, what="file", description="Local path of the released PANNs checkpoint ({'iteration', 'model'}: "
                          "Cnn14_mAP=0.431.pth for cnn14, Cnn14_emb512_mAP=0.420.pth for cnn14-emb512), loaded "
                          "strictly by key into the network. None = random init. Never downloaded.")
    sample_rate: int = Field(SAMPLE_RATE, description="Sampling rate of the waveform in Hz. Only 32000 (the "
                                                      "checkpoints' rate) is supported: resample the audio first.")
    embedding_dim: int = Field(512, gt=0, description="Width of the embedding. When it differs from the native "
                                                      "fc1 width (2048 or 512) a learned linear projection is added.")
    freeze_backbone: bool = Field(False, description="Train only our head (and projection) when the teacher is "
                                                     "trained; the PANNs network stays in eval mode. Needs "
                                                     "'pretrained'.")
    spec_augment: bool = Field(False, description="SpecAugment (PANNs recipe: 2 time stripes < 64 frames, 2 mel "
                                                  "stripes < 8 bins) while the teacher trains.")
    dropout: float = Field(0.5, ge=0.0, lt=1.0, description="Dropout on the embedding before our head (PANNs' "
                                                            "embedding dropout).")

    @field_validator("sample_rate")
    @classmethod
    def _only_32k(cls, value: int) -> int:
        if value != SAMPLE_RATE:
            raise ValueError(f"only {SAMPLE_RATE} Hz is supported (the released checkpoints' rate; the 16 kHz "
                             f"Cnn14_16k is not implemented): resample the audio to {SAMPLE_RATE} Hz")
        return value


def waveform_length(info: DatasetInfo, who: str) -> int:
    """L of a mono waveform teacher input, shape (L,) or (1, L), or one line saying why it does not fit."""
    shape = tuple(info.teacher_input_shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[0] == 1)):
        raise KdbenchError(f"teacher {who!r} reads a mono waveform, shape (L,) or (1, L); "
                           f"the dataset's teacher input has shape {shape}")
    if shape[-1] < MIN_SAMPLES:
        raise KdbenchError(f"teacher {who!r} needs at least {MIN_SAMPLES} samples ({MIN_SAMPLES / SAMPLE_RATE:.2f} s "
                           f"at {SAMPLE_RATE} Hz) for its five 2x2 poolings; the dataset gives {shape[-1]}")
    return int(shape[-1])


def read_panns_file(path: str, what: str) -> dict[str, Tensor]:
    """The state dict of a released PANNs file: its ``model`` entry (or the file itself if it is a bare one).

    A leading ``module.`` (a model saved inside DataParallel) is stripped; the released files have none.
    """
    obj: Any = read_torch_file(path, what, "docs/audio.md")
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise KdbenchError(f"{what}: file {path!r} holds no state dict (expected {{'iteration', 'model'}} "
                           f"or a mapping of names to tensors)")
    return {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in obj.items()}


class _PannsTeacher(Model):
    """Shared by both teachers: input check, loading, freezing, forward."""

    Options = PannsOptions
    native: ClassVar[int]
    other: ClassVar[dict[int, str]] = {2048: "cnn14", 512: "cnn14-emb512"}

    def __init__(self, options: PannsOptions, info: DatasetInfo) -> None:
        super().__init__(options, info)
        waveform_length(info, self.name)
        if options.freeze_backbone and not options.pretrained:
            raise KdbenchError(f"teacher {self.name!r}: freeze_backbone needs 'pretrained' (a frozen random "
                               f"network would only feed noise features to the head)")
        self.panns = Cnn14Net(self.native)
        self.project = (None if options.embedding_dim == self.native
                        else xavier_init(nn.Linear(self.native, options.embedding_dim)))
        self.head = xavier_init(nn.Linear(options.embedding_dim, info.num_classes))
        if options.pretrained:
            self.load_panns(options.pretrained)
        if options.freeze_backbone:
            self.panns.requires_grad_(False)
            self.panns.eval()

    def load_panns(self, path: str) -> None:
        """Load a released checkpoint into ``panns`` strictly, naming the first bad key in one line."""
        what = f"teacher {self.name!r}: PANNs checkpoint {path!r}"
        self.load_panns_state(read_panns_file(path, what), what)

    def load_panns_state(self, state: Mapping[str, Tensor], what: str) -> None:
        """Strict load of a released state dict; two common wrong files get a line saying what they are."""
        stft = state.get("spectrogram_extractor.stft.conv_real.weight")
        if stft is not None and stft.ndim == 3 and stft.shape[-1] != N_FFT:
            raise KdbenchError(f"{what}: key 'spectrogram_extractor.stft.conv_real.weight' has shape "
                               f"{tuple(stft.shape)}, a {stft.shape[-1]}-point STFT; only the 32 kHz "
                               f"checkpoints (1024-point) are supported, not Cnn14_16k")
        fc1 = state.get("fc1.weight")
        if fc1 is not None and fc1.ndim == 2 and fc1.shape[0] != self.native and fc1.shape[0] in self.other:
            raise KdbenchError(f"{what}: key 'fc1.weight' has shape {tuple(fc1.shape)}, the model expects "
                               f"({self.native}, {fc1.shape[1]}): it is a checkpoint for teacher "
                               f"{self.other[int(fc1.shape[0])]!r}")
        load_state_strict(self.panns, state, what)

    def train(self, mode: bool = True) -> _PannsTeacher:
        """Keep a frozen PANNs network in eval mode: fixed BN statistics and no dropout, as stored features."""
        super().train(mode)
        if self.options.freeze_backbone:
            self.panns.eval()
        return self

    def forward(self, x: Tensor) -> ModelOutput:
        if x.ndim == 3 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 2:
            raise KdbenchError(f"teacher {self.name!r} reads (B, L) or (B, 1, L) waveforms, got {tuple(x.shape)}")
        native, stages = self.panns(x, augment=self.options.spec_augment and self.training)
        embedding = native if self.project is None else self.project(native)
        logits = self.head(F.dropout(embedding, self.options.dropout, self.training))
        return ModelOutput(logits, embedding, stages)


class Cnn14Teacher(_PannsTeacher):
    """PANNs Cnn14 (AudioSet) on a 32 kHz mono waveform; loads Cnn14_mAP=0.431.pth; 2048-d fc1 → 512."""

    name = "cnn14"
    native = 2048


class Cnn14Emb512Teacher(_PannsTeacher):
    """PANNs Cnn14_emb512 (AudioSet) on a 32 kHz mono waveform; loads Cnn14_emb512_mAP=0.420.pth; 512-d."""

    name = "cnn14-emb512"
    native = 512
