"""``precomputed``: a teacher made of stored embeddings, with no network of its own.

Cross-modal benchmarks often distil from embeddings computed once by a large pretrained model (CCL and
the SACD release use PANNs Cnn14 audio embeddings of UCF51, 512-d per clip). The dataset hands the stored
vector over as the sample's teacher input; this teacher passes it through as its embedding, and adds a
linear classifier so that logit-based distillers (KD, and anything reading ``teacher.logits``) have
predictions to match. That classifier is the only thing kdbench's teacher training trains: a linear
probe on frozen features.
"""

import torch
from pydantic import Field
from torch import nn

from kdbench.contracts import Model, ModelOutput
from kdbench.errors import KdbenchError
from kdbench.hookspecs import hookimpl
from kdbench.options import PluginOptions

#: widest vector taken for an embedding (Cnn14's is 2,048): anything wider is a raw signal, whose "probe"
#: would silently be a huge linear model on samples; refused with the fix instead.
MAX_WIDTH = 16_384


class PrecomputedOptions(PluginOptions):
    normalize: bool = Field(False, description="L2-normalise each stored embedding before use")


class Precomputed(Model):
    """Stored embeddings as the teacher (no network): identity embedding plus a linear probe for logits."""

    name = "precomputed"
    Options = PrecomputedOptions

    def __init__(self, options: PrecomputedOptions, info) -> None:
        super().__init__(options, info)
        shape = tuple(info.teacher_input_shape)
        if len(shape) != 1:
            raise KdbenchError(f"teacher 'precomputed' reads one stored embedding of shape (D,) per sample; the "
                               f"dataset's teacher input has shape {shape}: pick a model teacher instead")
        if shape[0] > MAX_WIDTH:
            raise KdbenchError(f"teacher 'precomputed' reads stored embeddings, but the dataset's teacher input has "
                               f"{shape[0]} values per sample (a raw signal?): use a model teacher for it, or the "
                               f"dataset's embedding input (e.g. --set dataset.teacher_input=embedding)")
        self.head = nn.Linear(shape[0], info.num_classes)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        embedding = x.float()
        if self.options.normalize:
            embedding = nn.functional.normalize(embedding, dim=1)
        return ModelOutput(self.head(embedding), embedding, ())


@hookimpl
def register_teachers(register):
    register(Precomputed)
