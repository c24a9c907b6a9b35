"""``tiny-eeg``: the small default EEG network of the ``synthetic`` dataset, registered as a teacher and, for
EEG-to-EEG distillation on EEG-only data (``sleepedf``), as a student too."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from kdbench.contracts import DatasetInfo
from kdbench.hookspecs import hookimpl
from kdbench.options import PluginOptions

from ..shared.tiny import ThreeStageNet, block


class TinyEEGOptions(PluginOptions):
    width: int = Field(16, gt=0, description="Channels of the first block; the next two double it each time.")
    embedding_dim: int = Field(64, gt=0, description="Width of the feature the classifier reads.")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout before the classifier.")



class TinyEEGNet(ThreeStageNet):
    """Small 1-D CNN on a raw EEG epoch: a wide strided first filter, then two narrow blocks.

    It normalises with GroupNorm rather than BatchNorm: EEG amplitude differs several-fold between
    stages (N3's delta) and clips, so batch statistics depend on a batch's stage mix, and the
    running averages used at test time were seen to swing the accuracy by 10-20 points between
    epochs of a constant-rate training.
    """

    name = "tiny-eeg"
    Options = TinyEEGOptions

    def __init__(self, options: TinyEEGOptions, info: DatasetInfo) -> None:
        super().__init__(options, info)
        c, w = info.teacher_input_shape[0], options.width
        # A 50-tap first filter spans 0.5 s at 100 Hz: enough to tell delta from theta from spindles.
        blocks = [
            block(nn.Conv1d(c, w, 50, stride=6, padding=22, bias=False), nn.GroupNorm(1, w), nn.MaxPool1d(4)),
            block(nn.Conv1d(w, 2 * w, 7, padding=3, bias=False), nn.GroupNorm(1, 2 * w), nn.MaxPool1d(4)),
            block(nn.Conv1d(2 * w, 4 * w, 7, padding=3, bias=False), nn.GroupNorm(1, 4 * w)),
        ]
        self.build_head(blocks, 4 * w, options, info.num_classes)


@hookimpl
def register_teachers(register):
    register(TinyEEGNet)


@hookimpl
def register_students(register):
    register(TinyEEGNet)
