"""``baseline``: the student trained alone with cross-entropy (the "Baseline R3D/R(2+1)D" rows of Table II)."""

import torch.nn.functional as F

from kdbench.contracts import Distiller
from kdbench.hookspecs import hookimpl


class Baseline(Distiller):
    """No distillation: cross-entropy on the student's logits only."""

    name = "baseline"

    def forward(self, student, teacher, batch):
        return {"ce": F.cross_entropy(student.logits, batch.label)}


@hookimpl
def register_distillers(register):
    register(Baseline)
