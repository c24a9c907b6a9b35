"""``pretrained``: a trained network of the student's own modality, fine-tuned whole or through its classifier only.

SACD paper, Table IV, experiment E: reverse distillation (the video model teaching the EEG model) with the EEG
model's encoder frozen ("frozen gradients"): the EEG network trained on its own is kept, and only what reads its
embedding learns — its classifier here, plus the distiller's own parts. The network is the one runs of the same
dataset in the other direction train and cache as *their* teacher (for a reversed run: the forward runs' EEG
teacher); the engine hands it over through :meth:`adopt_own` before training (``adopts_own``).

``train = "classifier"``: every parameter but the classifier's (the last linear layer, which reads the
embedding) is frozen and the network stays in eval mode, so dropout is off and BatchNorm statistics do not move;
``train = "all"`` fine-tunes the whole network from the trained weights.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from kdbench.contracts import DatasetInfo, Model, ModelOutput
from kdbench.errors import KdbenchError
from kdbench.hookspecs import hookimpl
from kdbench.options import PluginOptions


class PretrainedOptions(PluginOptions):
    partner: str = Field("", description="registered name of the trained network to adopt ('' = the dataset's "
                                         "network for the student's modality)")
    train: Literal["classifier", "all"] = Field("classifier", description="'classifier': only the last linear "
                                                "layer trains (Table IV E); 'all': the whole network fine-tunes")


class Pretrained(Model):
    """A trained network of the student's modality (Table IV E): its classifier only, or all of it, trains."""

    name = "pretrained"
    Options = PretrainedOptions
    adopts_own = True

    def __init__(self, options: PretrainedOptions, info: DatasetInfo) -> None:
        super().__init__(options, info)
        self.partner = options.partner
        self.network: Model | None = None

    def adopt_own(self, network: Model) -> None:
        self.network = network
        if self.options.train == "classifier":
            linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
            if not linears:
                raise KdbenchError(f"pretrained: {type(network).name!r} has no linear classifier to train")
            network.requires_grad_(False)
            linears[-1].requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> Pretrained:
        super().train(mode)
        if self.network is not None and self.options.train == "classifier":
            self.network.eval()   # the frozen encoder's dropout and BatchNorm statistics stay as trained
        return self

    def forward(self, x: Tensor) -> ModelOutput:
        if self.network is None:
            raise KdbenchError("pretrained has no network: the engine adopts it before training")
        return self.network(x)


@hookimpl
def register_students(register):
    register(Pretrained)
