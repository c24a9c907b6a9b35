"""``late-fusion``: the two modalities' trained encoders side by side and a head on their joined embeddings.

SACD paper, Section V-D and Table IV, experiments A–D: the infrared-video network (R3D-18) and the EEG network
(AttnSleep), each trained on its own modality, are kept; their 512-d embeddings are concatenated and a head
predicts the stage — one linear layer 1024 → 5 (A, C) or three, 1024 → 256 → 64 → 5 (B, D). In A and B the
encoders are frozen ("frozen gradients"), in C and D they train with the head ("released gradients").

Here the encoders are the run's trained teacher (the teacher's modality) and the network that a reversed run of
the same dataset trains and caches as its teacher (the student's modality, ``partner``); the engine hands both
over through :meth:`adopt` before training (``reads_both``). With ``freeze_encoders`` nothing of theirs changes:
their parameters take no gradient and they stay in eval mode (BatchNorm statistics included), so only the head
trains. Embeddings of different widths are refused unless ``project_to`` maps each to a common width first.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from kdbench.contracts import DatasetInfo, Model, ModelOutput
from kdbench.errors import KdbenchError
from kdbench.hookspecs import hookimpl
from kdbench.options import PluginOptions


class LateFusionOptions(PluginOptions):
    partner: str = Field("", description="registered name of the student-modality encoder, trained and cached by a "
                                         "reversed run of the dataset ('' = the dataset's default student)")
    head: Literal["linear", "mlp"] = Field("linear", description="'linear': one layer (Table IV A, C); 'mlp': "
                                                                 "hidden layers with ReLU (B, D)")
    hidden: list[int] = Field([256, 64], description="widths of the 'mlp' head's hidden layers (paper: 256, 64)")
    freeze_encoders: bool = Field(True, description="True: the encoders are frozen, only the head trains (A, B); "
                                                    "False: they train with it (C, D)")
    project_to: int | None = Field(None, gt=0, description="map each embedding linearly to this width before "
                                                           "joining them (needed when their widths differ)")


class LateFusion(Model):
    """Late fusion (SACD Table IV A–D): two trained encoders, joined embeddings, a linear or MLP head."""

    name = "late-fusion"
    Options = LateFusionOptions
    reads_both = True

    def __init__(self, options: LateFusionOptions, info: DatasetInfo) -> None:
        super().__init__(options, info)
        self.partner = options.partner
        self.info = info
        self.encoders: nn.ModuleDict | None = None

    def adopt(self, teacher: Model, partner: Model) -> None:
        o = self.options
        widths = {"student": _width(partner, self.info.student_input_shape),
                  "teacher": _width(teacher, self.info.teacher_input_shape)}
        if o.project_to is None and widths["student"] != widths["teacher"]:
            raise KdbenchError(f"late-fusion: the encoders' embeddings are {widths['student']} ({type(partner).name}) "
                               f"and {widths['teacher']} ({type(teacher).name}) wide; set "
                               f"student.project_to=N to project both to N before joining them")
        self.encoders = nn.ModuleDict({"student": partner, "teacher": teacher})
        self.encoders.requires_grad_(not o.freeze_encoders)
        if o.project_to is not None:
            self.project = nn.ModuleDict({k: nn.Linear(w, o.project_to) for k, w in widths.items()})
            joined = 2 * o.project_to
        else:
            self.project = None
            joined = sum(widths.values())
        sizes = [joined, *(o.hidden if o.head == "mlp" else []), self.info.num_classes]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            layers += [nn.Linear(a, b)] + ([nn.ReLU(inplace=True)] if i < len(sizes) - 2 else [])
        self.head = nn.Sequential(*layers)
        self.train(self.training)

    def train(self, mode: bool = True) -> LateFusion:
        super().train(mode)
        if self.encoders is not None and self.options.freeze_encoders:
            self.encoders.eval()   # frozen means frozen: no BatchNorm statistics move either
        return self

    def forward(self, student_input: Tensor, teacher_input: Tensor) -> ModelOutput:
        if self.encoders is None:
            raise KdbenchError("late-fusion has no encoders: the engine adopts them before training")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.options.freeze_encoders):
            parts = {"student": self.encoders["student"](student_input).embedding,
                     "teacher": self.encoders["teacher"](teacher_input).embedding}
        if self.project is not None:
            parts = {k: self.project[k](v) for k, v in parts.items()}
        joined = torch.cat([parts["student"], parts["teacher"]], dim=1)
        return ModelOutput(self.head(joined), joined, (parts["student"], parts["teacher"]))


def _width(model: Model, shape: tuple[int, ...]) -> int:
    """The embedding width of ``model``, measured with one forward pass on zeros (eval mode, no gradient)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            return int(model(torch.zeros(1, *shape, device=device)).embedding.shape[-1])
    finally:
        model.train(was_training)


@hookimpl
def register_students(register):
    register(LateFusion)
