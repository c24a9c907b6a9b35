"""``crd``: Tian, Krishnan & Isola, "Contrastive Representation Distillation", ICLR 2020 (arXiv:1910.10699).

The student is trained to tell, for a sample, the teacher's representation of *that* sample from the
teacher's representations of other samples; this maximises a lower bound on the mutual information
I(T; S) between the two representations, which keeps the teacher's structure (correlations between its
feature dimensions) that logit matching ignores, and needs no shared architecture or modality.

Implemented (paper Sec. 3.1, numbering of the ICLR/arXiv-v2 text as RepDistiller cites it):

* Eq. (19), the critic h(T, S) = e^{g_T(t)·g_S(s)/τ} / (e^{g_T(t)·g_S(s)/τ} + N/M): g_T, g_S are linear
  heads to a 128-d space followed by L2 normalisation, N negatives, M = training-set size.
* Eq. (18), the NCE objective L_critic = E_pos[log h] + N·E_neg[log(1 − h)], maximised by student and heads.
* The released code's way of making it practical (HobbitLong/RepDistiller ``crd/``): the e^{s/τ} term is
  divided by a constant Z estimated once from the first batch; the "other view" of each pair is read from a
  momentum memory bank over the whole training set (momentum 0.5); the loss is used in both directions,
  student anchor vs teacher bank and teacher anchor vs student bank; the total is
  γ·CE + α·KD + β·(L_s + L_t) with RepDistiller's γ = 1, α = 0, β = 0.8.

The machinery shared with ``cmc`` (banks, sampler, Z) is in :mod:`.contrast`. Needs ``batch.index`` (bank
rows) and, for ``negatives="other-classes"``, ``batch.label``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kdbench.contracts import Distiller
from kdbench.hookspecs import hookimpl
from kdbench.losses import hard_ce
from kdbench.options import PluginOptions

from .contrast import ContrastMemory, Embed, NCECritic
from .soft import softened_kl


class CRDOptions(PluginOptions):
    embed_dim: int = Field(128, gt=0, description="width of the contrast space (paper/RepDistiller --feat_dim 128)")
    num_negatives: int = Field(
        16384, gt=0, description="K negatives per anchor (paper; RepDistiller --nce_k 16384); capped at "
                                 "num_train − 1 for smaller training sets")
    temperature: float = Field(0.07, gt=0, description="τ of the critic (RepDistiller --nce_t 0.07)")
    momentum: float = Field(0.5, ge=0, lt=1, description="memory-bank momentum (RepDistiller --nce_m 0.5)")
    negatives: Literal["other-samples", "other-classes"] = Field(
        "other-samples",
        description="draw negatives from every other sample (the paper's product-of-marginals noise), or only "
                    "from samples of other classes (what RepDistiller's CIFAR-100 loader does, mode 'exact')")
    crd_weight: float = Field(0.8, ge=0, description="β, weight of the two-way CRD loss (RepDistiller README: -b 0.8)")
    ce_weight: float = Field(1.0, ge=0, description="γ, weight of the cross-entropy (RepDistiller -r, default 1)")
    kd_weight: float = Field(
        0.0, ge=0, description="α, weight of Hinton KD (RepDistiller README runs CRD with -a 0; CRD+KD uses -a 1)")
    kd_temperature: float = Field(4.0, gt=0, description="KD temperature when kd_weight > 0 (RepDistiller --kd_T 4)")


class CRD(Distiller):
    """Tian et al. 2020: NCE contrast of student vs teacher embeddings with memory banks of 16384 negatives."""

    name = "crd"
    Options = CRDOptions

    def __init__(self, options: CRDOptions, ctx) -> None:
        super().__init__(options, ctx)
        self.embed_s = Embed(ctx.student.embedding, options.embed_dim)
        self.embed_t = Embed(ctx.teacher.embedding, options.embed_dim)
        self.memory = ContrastMemory(ctx.num_train, options.embed_dim, options.num_negatives, options.momentum,
                                     options.negatives)
        self.critic_s = NCECritic(ctx.num_train, options.temperature)  # student anchors vs teacher bank
        self.critic_t = NCECritic(ctx.num_train, options.temperature)  # teacher anchors vs student bank

    def forward(self, student, teacher, batch):
        o = self.options
        z_s, z_t = self.embed_s(student.embedding), self.embed_t(teacher.embedding)
        sim_s, sim_t = self.memory(z_s, z_t, batch.index, batch.label)
        losses = {"ce": o.ce_weight * hard_ce(student.logits, batch.label),
                  "crd": o.crd_weight * (self.critic_s(sim_s) + self.critic_t(sim_t))}
        if o.kd_weight > 0:
            losses["kd"] = softened_kl(student.logits, teacher.logits, o.kd_temperature, o.kd_weight)
        return losses


@hookimpl
def register_distillers(register):
    register(CRD)
