"""``pkt``: Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer", ECCV 2018.

Section 3 of the paper: instead of regressing the teacher's features, the student matches how the teacher
*arranges the batch*. Each network's embeddings give a cosine-similarity kernel shifted to [0, 1],
K_ij = (cos(x_i, x_j) + 1) / 2, whose rows are normalised into conditional probabilities
p_{j|i} = K_ij / Σ_k K_ik; the student minimises KL(P_teacher ‖ P_student). (The paper's full text was not
available here, so its equation numbers are not quoted; the formulas are the ones its authors' code,
passalis/probabilistic_kt, computes, which RepDistiller's ``PKT`` copies.)

Only B×B matrices are compared, so the widths of the two embeddings never need to agree and the method has
no learnable part: it suits cross-modal pairs as they are. The cosine kernel ignores each sample's norm,
so rescaling either network's features changes nothing.

Reduction and weight: the KL terms are averaged over all B² entries, as RepDistiller does, so the benchmark
weight β = 30000 (RepDistiller ``scripts/run_cifar_distill.sh``: ``-a 0 -b 30000``) keeps its meaning. That
mean equals (mean per-anchor KL) / B, so at batch size B the per-anchor KL is weighted β / B (469 at B = 64,
1875 at kdbench's default B = 16). Total loss: ce_weight · CE + β · KL.
"""

from __future__ import annotations

from pydantic import Field

from kdbench.contracts import Distiller
from kdbench.hookspecs import hookimpl
from kdbench.losses import hard_ce
from kdbench.options import PluginOptions

from .kernels import conditional, cosine_affinity, kl_divergence


class PKTOptions(PluginOptions):
    weight: float = Field(30000.0, ge=0, description="β on the KL term, which is a mean over B² entries "
                          "(RepDistiller's run_cifar_distill.sh value for pkt)")
    ce_weight: float = Field(1.0, ge=0, description="weight of the hard-label cross-entropy "
                             "(RepDistiller's default γ = 1)")
    include_self: bool = Field(True, description="count the self-pair p_{i|i} in each row, as the authors' "
                               "code and RepDistiller do; False normalises over k ≠ i only (t-SNE style)")


class PKT(Distiller):
    """Passalis & Tefas 2018: match the batch's cosine-kernel conditional probabilities (KL, teacher → student)."""

    name = "pkt"
    Options = PKTOptions

    def forward(self, student, teacher, batch):
        o = self.options
        p_teacher = conditional(cosine_affinity(teacher.embedding), o.include_self)
        p_student = conditional(cosine_affinity(student.embedding), o.include_self)
        return {"ce": o.ce_weight * hard_ce(student.logits, batch.label),
                "pkt": o.weight * kl_divergence(p_teacher, p_student, o.include_self)}


@hookimpl
def register_distillers(register):
    register(PKT)
