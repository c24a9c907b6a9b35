"""``cmc``: Tian, Krishnan & Isola, "Contrastive Multiview Coding", ECCV 2020 (arXiv:1906.05849), as a distiller.

CMC learns one encoder per view so that the two views of the same scene score high and views of different
scenes score low; it was designed as self-supervised pre-training, and the SACD paper (Table II) uses it as
a cross-modal distillation baseline. Here the two views are the teacher's input (EEG, audio) and the
student's (video): view 1 is the student network plus a projection head, view 2 the *frozen* teacher network
plus a learnable projection head (only that head learns on the teacher side; CMC itself trains both
encoders, but the contract keeps the teacher fixed).

Implemented (paper Sec. 3; equations named rather than numbered, since numbering differs between the
arXiv versions and the ECCV text was not at hand):

* the critic h(v1, v2) = exp(f1(v1)·f2(v2) / (‖f1‖‖f2‖·τ)) on 128-d embeddings (linear head, L2 norm);
* the two-view loss L_contrast^{V1,V2} = −E log [h(positive) / (h(positive) + Σ_k h(negative_k))] with K
  negatives, one view anchored, positives and negatives from the other view;
* the symmetric objective L(V1, V2) = L^{V1,V2} + L^{V2,V1}, i.e. both directions, summed.
* From the released code (HobbitLong/CMC ``NCE/NCEAverage.py``): the other view is read from a momentum
  memory bank over the training set (momentum 0.5, τ = 0.07, 128-d); the (K+1)-way softmax is computed
  exactly (the code's ``use_softmax`` path with ``NCESoftmaxLoss``; its README reports it better than NCE).

How it differs from ``crd`` here: CRD uses NCE (binary positive-vs-noise classification with a fixed
normaliser Z) and RepDistiller's weight 0.8; CMC uses the softmax cross-entropy above, no Z, weight 1 (its
objective sums the two directions unweighted), and negatives are always other samples (CMC has no labels).
Set ``objective="nce"`` for CMC's original NCE variant (the same critic as CRD's). Shared machinery is in
:mod:`.contrast`. Needs ``batch.index``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kdbench.contracts import Distiller
from kdbench.hookspecs import hookimpl
from kdbench.losses import hard_ce
from kdbench.options import PluginOptions

from .contrast import ContrastMemory, Embed, NCECritic, softmax_contrast


class CMCOptions(PluginOptions):
    embed_dim: int = Field(128, gt=0, description="width of the contrast space (CMC --feat_dim 128)")
    num_negatives: int = Field(
        16384, gt=0, description="K negatives per anchor (16384, as CRD and the memory-bank runs of the CMC README; "
                                 "CMC's script default is 4096); capped at num_train − 1 for smaller training sets")
    temperature: float = Field(0.07, gt=0, description="τ of the critic (CMC --nce_t 0.07, ImageNet)")
    momentum: float = Field(0.5, ge=0, lt=1, description="memory-bank momentum (CMC --nce_m 0.5)")
    objective: Literal["softmax", "nce"] = Field(
        "softmax", description="'softmax': exact (K+1)-way cross-entropy (the paper's L_contrast; code: "
                               "use_softmax + NCESoftmaxLoss); 'nce': the NCE approximation with a fixed Z "
                               "(the code's NCECriterion, as in crd)")
    cmc_weight: float = Field(1.0, ge=0, description="weight of L^{s,t} + L^{t,s} (CMC sums both directions "
                                                     "unweighted; no distillation weight is published)")
    ce_weight: float = Field(1.0, ge=0, description="weight of the student's cross-entropy")


class CMC(Distiller):
    """Tian et al. 2020: two-view contrastive coding between student and (frozen) teacher views, memory bank."""

    name = "cmc"
    Options = CMCOptions

    def __init__(self, options: CMCOptions, ctx) -> None:
        super().__init__(options, ctx)
        self.embed_s = Embed(ctx.student.embedding, options.embed_dim)
        self.embed_t = Embed(ctx.teacher.embedding, options.embed_dim)
        self.memory = ContrastMemory(ctx.num_train, options.embed_dim, options.num_negatives, options.momentum)
        if options.objective == "nce":
            self.critic_s = NCECritic(ctx.num_train, options.temperature)
            self.critic_t = NCECritic(ctx.num_train, options.temperature)

    def contrast(self, sim_s, sim_t):
        """L^{s,t} + L^{t,s}: student anchors against the teacher bank plus teacher anchors against the student bank."""
        if self.options.objective == "nce":
            return self.critic_s(sim_s) + self.critic_t(sim_t)
        return softmax_contrast(sim_s, self.options.temperature) + softmax_contrast(sim_t, self.options.temperature)

    def forward(self, student, teacher, batch):
        o = self.options
        z_s, z_t = self.embed_s(student.embedding), self.embed_t(teacher.embedding)
        sim_s, sim_t = self.memory(z_s, z_t, batch.index, batch.label)
        return {"ce": o.ce_weight * hard_ce(student.logits, batch.label),
                "cmc": o.cmc_weight * self.contrast(sim_s, sim_t)}


@hookimpl
def register_distillers(register):
    register(CMC)
