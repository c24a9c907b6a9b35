"""What the four video students share: options, input checks, channel handling, normalisation, outputs.

Every student is a ResNet-18 over clips ``(C, T, H, W)`` with four residual stages of 64/128/256/512
channels. The subclasses only build the layers (``_build``) and run the stem (``_stem``); this base
runs the four stages, pools each globally into ``ModelOutput.stages`` and reads the classifier off the
pooled last stage, so that feature-based distillers see the same four widths for every student.

The layers are attributes of the student itself, not of a wrapped ``backbone``: the student's
``state_dict`` then has exactly the key names of the architecture it reproduces (torchvision's or
Kensho Hara's), which is what makes a released weight file load by name with no renaming.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from kdbench.contracts import DatasetInfo, Model, ModelOutput
from kdbench.errors import KdbenchError
from kdbench.options import PluginOptions, path_field

from .weights import load_pretrained

#: (mean, std) per RGB channel of each family's Kinetics pretraining, for pixels in [0, 1].
KINETICS_TORCHVISION = ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989))
KINETICS_HARA = ((0.4345, 0.4051, 0.3775), (0.2768, 0.2713, 0.2737))


class VideoStudentOptions(PluginOptions):
    pretrained: str | None = path_field(
        None, what="file", description="Local path of a weight file to start from (never downloaded); the classifier "
                          "`fc` is always new. None = random initialisation.")
    normalize: bool = Field(
        True, description="Subtract the Kinetics mean and divide by the std of this family's pretraining "
                          "(input pixels in [0, 1]).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the embedding before the classifier.")


def as_rgb(student: str, x: Tensor) -> Tensor:
    """A batch of clips (B, 1 or 3, T, H, W) as RGB: a gray channel repeated to three (a view, no copy)."""
    if x.dim() != 5 or x.shape[1] not in (1, 3):
        raise KdbenchError(f"student {student!r} reads batches shaped (B, 1 or 3, T, H, W), got {tuple(x.shape)}")
    return x.expand(-1, 3, -1, -1, -1) if x.shape[1] == 1 else x


def clip_channels(student: str, shape: tuple[int, ...]) -> int:
    """The channel count of a dataset's clip, refusing what an RGB stem cannot read."""
    if len(shape) != 4:
        raise KdbenchError(f"student {student!r} reads clips shaped (C, T, H, W); the dataset gives one sample "
                           f"shaped {tuple(shape)}")
    if shape[0] not in (1, 3):
        raise KdbenchError(f"student {student!r} reads 1-channel (grayscale/infrared) or 3-channel (RGB) clips; "
                           f"the dataset's clips have {shape[0]} channels")
    return int(shape[0])


class VideoResNetStudent(Model):
    """Base of the four students (not registered itself)."""

    Options = VideoStudentOptions
    mean_std: ClassVar[tuple[tuple[float, ...], tuple[float, ...]]]

    def __init__(self, options: VideoStudentOptions, info: DatasetInfo) -> None:
        super().__init__(options, info)
        self.in_channels = clip_channels(self.name, info.student_input_shape)
        mean, std = self.mean_std
        # Not persistent: they are constants of the family, and keeping them out of the state dict keeps
        # its keys equal to the reference architecture's.
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1, 1), persistent=False)
        self.dropout = nn.Dropout(options.dropout)
        self._build(info.num_classes)
        if options.pretrained is not None:
            load_pretrained(self, options.pretrained, f"student {self.name!r}")

    def _build(self, num_classes: int) -> None:
        """Create the stem, ``layer1``..``layer4`` and ``fc`` (512 → num_classes) as attributes."""
        raise NotImplementedError

    def _stem(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def prepare(self, x: Tensor) -> Tensor:
        """Make the network's RGB input: repeat a gray channel to three, then normalise.

        Repeating (rather than a 1-channel stem) keeps a pretrained RGB stem meaningful: a gray pixel is
        what an RGB decoder yields for a gray frame, and the stem's response equals that of one filter
        whose weights are the sum of its three RGB filters (up to the per-channel normalisation).
        """
        x = as_rgb(self.name, x)
        if self.options.normalize:
            x = (x - self.mean) / self.std
        return x

    def forward(self, x: Tensor) -> ModelOutput:
        x = self._stem(self.prepare(x))
        stages = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            stages.append(x.mean(dim=(2, 3, 4)))  # global average over T, H, W, as the networks' avgpool
        embedding = stages[-1]
        return ModelOutput(self.fc(self.dropout(embedding)), embedding, tuple(stages))
