"""``kd``: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", arXiv:1503.02531, 2015.

Section 2: the student matches the teacher's class probabilities softened with a temperature T; the
soft-target term is multiplied by T² so its gradients keep their scale as T changes, and it is
combined with the ordinary cross-entropy by a weighted sum. Only logits are compared, so it works for
any teacher/student pair with the same classes, cross-modal ones included.
"""

from pydantic import Field

from kdbench.contracts import Distiller
from kdbench.hookspecs import hookimpl
from kdbench.losses import hard_ce
from kdbench.options import PluginOptions

from .soft import softened_kl


class KDOptions(PluginOptions):
    temperature: float = Field(4.0, gt=0, description="softening temperature T (benchmark suites' value)")
    ce_weight: float = Field(0.1, ge=0, description="weight of the hard-label cross-entropy")
    kd_weight: float = Field(0.9, ge=0, description="weight of the T²-scaled soft-target KL term")


class KD(Distiller):
    """Hinton et al. 2015: KL between temperature-softened teacher and student logits."""

    name = "kd"
    Options = KDOptions

    def forward(self, student, teacher, batch):
        o = self.options
        return {"ce": o.ce_weight * hard_ce(student.logits, batch.label),
                "kd": softened_kl(student.logits, teacher.logits, o.temperature, o.kd_weight)}


@hookimpl
def register_distillers(register):
    register(KD)
