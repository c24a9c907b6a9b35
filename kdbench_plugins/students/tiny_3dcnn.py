"""``tiny-3dcnn``: the small default video student of the ``synthetic`` dataset."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from kdbench.contracts import DatasetInfo
from kdbench.hookspecs import hookimpl
from kdbench.options import PluginOptions

from ..shared.tiny import ThreeStageNet, block


class Tiny3DCNNOptions(PluginOptions):
    width: int = Field(8, gt=0, description="Channels of the first block; the next two double it each time.")
    embedding_dim: int = Field(32, gt=0, description="Width of the feature the classifier reads.")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout before the classifier.")



class Tiny3DCNN(ThreeStageNet):
    """Small 3-D CNN on a (C, T, H, W) infrared clip, with three conv blocks and a narrow embedding.

    Time keeps full resolution until the last block, so frame-to-frame motion, the only stage cue
    in the video, survives. It uses BatchNorm, unlike the teacher: with GroupNorm the student sat on
    the majority class for many epochs. Its test-time statistics settle once the learning rate
    decays, hence the cosine schedule in the dataset's run defaults.
    """

    name = "tiny-3dcnn"
    Options = Tiny3DCNNOptions

    def __init__(self, options: Tiny3DCNNOptions, info: DatasetInfo) -> None:
        super().__init__(options, info)
        c, w = info.student_input_shape[0], options.width
        blocks = [
            block(nn.Conv3d(c, w, 3, stride=(1, 2, 2), padding=1, bias=False), nn.BatchNorm3d(w)),
            block(nn.Conv3d(w, 2 * w, 3, stride=(1, 2, 2), padding=1, bias=False), nn.BatchNorm3d(2 * w)),
            block(nn.Conv3d(2 * w, 4 * w, 3, stride=2, padding=1, bias=False), nn.BatchNorm3d(4 * w)),
        ]
        self.build_head(blocks, 4 * w, options, info.num_classes)


@hookimpl
def register_students(register):
    register(Tiny3DCNN)


@hookimpl
def register_teachers(register):
    """Also a teacher: the video model teaches the EEG one in a reversed run (``direction = "reverse"``)."""
    register(Tiny3DCNN)
