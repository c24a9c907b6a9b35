"""``ifd``: Passalis, Tzelepi & Tefas, "Heterogeneous Knowledge Distillation using Information Flow Modeling",
CVPR 2020 (arXiv:2005.00727; authors' code github passalis/pkth).

The paper models a network's *information flow*, how much each layer's representation says about the
targets, and trains the student so that every one of its layers carries the same information as the
matching teacher layer. In practice (as in PKT) each layer is summarised by the batch's conditional
probabilities p_{j|i} = K_ij / Σ_k K_ik, and the student minimises, per paired layer,

    D_i = J(P_t^cos, P_s^cos) + J(P_t^T, P_s^T),   J(P, Q) = mean_ij (p_ij − q_ij)(log p_ij − log q_ij),

with K^cos = (cos + 1)/2 and the Student-t kernel K^T = 1/(1 + ‖x_i − x_j‖); J is the symmetric (Jeffreys)
KL divergence. The paper's full text was not available here, so its equation numbers are not quoted; these
are the formulas of the authors' ``prob_loss`` with the 'combined' kernels and loss used in their CIFAR-10
experiment (exp2_proposed.py), including its mean over all B² entries, diagonal included (option
``include_self``).

Critical-learning-period weights: L = Σ_i α_i D_i with α = 1 for the final layer and α = α_init · γ^k for
every intermediate layer at (0-based) epoch k, α_init = 100, γ = 0.7: the intermediate layers are shaped
strongly at first and then released, which is when (the paper argues) a network's information flow is set.
``on_epoch_start`` updates α; the engine calls it on resume too, so no state needs saving.

Layers: the student's stages plus its embedding against the teacher's stages plus its embedding. The
embeddings always pair with each other (weight 1). If the stage counts differ, the net with fewer stages
(n of them) uses all of them and the other contributes n stages at the same relative depth:
stage k of the shorter net pairs with stage ceil((k + 1)·m / n) − 1 of the longer (m stages), so the
deepest stages pair, the pairing is one-to-one and keeps the depth order. A net without stages leaves only
the embedding pair.

Not reproduced: the paper's auxiliary (proxy) teacher. For heterogeneous pairs it first distils the
teacher's final representation into an auxiliary network of the student's architecture (twice as wide),
then transfers aux → student layer by layer. kdbench runs have one frozen teacher, so this distiller pairs
the real teacher's layers with the student's directly (see docs/distillers/ifd.md). The released code also
trains without labels; for classification benchmarks the cross-entropy is added (ce_weight).
"""

from __future__ import annotations

import math

from pydantic import Field

from kdbench.contracts import Distiller
from kdbench.hookspecs import hookimpl
from kdbench.losses import hard_ce
from kdbench.options import PluginOptions

from .kernels import (
    conditional,
    cosine_affinity,
    jeffreys_divergence,
    student_t_affinity,
)


class IFDOptions(PluginOptions):
    alpha_init: float = Field(100.0, ge=0, description="α_init: weight of the intermediate layers at epoch 0 "
                              "(authors' exp2_proposed.py init_weight)")
    gamma: float = Field(0.7, gt=0, description="γ: per-epoch decay of the intermediate-layer weight "
                         "(authors' exp2_proposed.py decay)")
    weight: float = Field(1.0, ge=0, description="overall weight of Σ α_i D_i next to the cross-entropy "
                          "(the released code has no further factor)")
    ce_weight: float = Field(1.0, ge=0, description="weight of the hard-label cross-entropy (absent from the "
                             "released transfer code; needed for the supervised benchmark)")
    include_self: bool = Field(True, description="count the self-pair p_{i|i}, as the released code does; "
                               "False excludes it (j ≠ i)")


def pair_stages(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """One-to-one (student stage, teacher stage) pairs by relative depth; the deepest stages always pair."""
    n, m = min(n_student, n_teacher), max(n_student, n_teacher)
    long = [math.ceil((k + 1) * m / n) - 1 for k in range(n)]
    return list(zip(range(n), long)) if n_student <= n_teacher else list(zip(long, range(n)))


def layer_divergence(a, b, include_self: bool = True):
    """D between two (B, ·) feature sets: Jeffreys over the cosine kernel plus Jeffreys over the Student-t kernel.

    Symmetric in (a, b); the widths of a and b are free.
    """
    return sum(jeffreys_divergence(conditional(kernel(a), include_self), conditional(kernel(b), include_self),
                                   include_self) for kernel in (cosine_affinity, student_t_affinity))


class IFD(Distiller):
    """Passalis et al. 2020: per-layer kernel-probability matching with decaying intermediate-layer weights."""

    name = "ifd"
    Options = IFDOptions

    def __init__(self, options, ctx):
        super().__init__(options, ctx)
        self.pairs = pair_stages(len(ctx.student.stages), len(ctx.teacher.stages))
        self.on_epoch_start(0)

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch
        self.alpha = self.options.alpha_init * self.options.gamma ** epoch  # the intermediate layers' weight

    def forward(self, student, teacher, batch):
        o = self.options
        final = layer_divergence(teacher.embedding.detach(), student.embedding, o.include_self)
        flow = sum((layer_divergence(teacher.stages[t].detach(), student.stages[s], o.include_self)
                    for s, t in self.pairs), start=final * 0.0)
        return {"ce": o.ce_weight * hard_ce(student.logits, batch.label),
                "ifd_final": o.weight * final,
                "ifd_flow": o.weight * self.alpha * flow}


@hookimpl
def register_distillers(register):
    register(IFD)
