"""``baseline``: the student trained alone with cross-entropy (the "Baseline R3D/R(2+1)D" rows of Table II)."""


from kdbench.contracts import Distiller
from kdbench.hookspecs import hookimpl
from kdbench.losses import hard_ce


class Baseline(Distiller):
    """No distillation: cross-entropy on the student's logits only."""

    name = "baseline"

    def forward(self, student, teacher, batch):
        return {"ce": hard_ce(student.logits, batch.label)}


@hookimpl
def register_distillers(register):
    register(Baseline)
