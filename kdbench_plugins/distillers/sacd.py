"""``sacd``: Han, Zhang, Men, Liu, Yao, Yan & Chen, "Seeing your sleep stage: cross-modal distillation from EEG
to infrared video", arXiv:2208.05814, 2022 (structure-aware contrastive distillation, SACD).

Implemented from the paper's Section IV, because the authors' released code does not contain these losses
(it ran CCL's): eq. 5, L = L_CE + λ1·L_D + λ2·L_C + λ3·JSD, with

* L_CE (eq. 1) on the student's classifier C_v and on a classifier C_s over the frozen teacher's embedding;
* L_D (eqs. 2, 6–11): one graph network per modality over the mini-batch, each read out into a 1024-d graph
  vector, the two vectors compared by Graph Matching Networks' margin loss (``sacd_graph``);
* L_C (eqs. 3, 12–13): a symmetric hinge against the K hardest other-class negatives held in two memory
  queues, one per modality (``sacd_memory``);
* JSD (eq. 4) between the predictive distributions of C_v and C_s.

The teacher encoder E_s stays frozen (V-B: "the model weights of the teacher network are kept frozen"); it was
trained with eq. 1's CE before distillation (kdbench's teacher stage), so the minimisations over E_s in eqs.
1–4 act here on the distiller's teacher-side modules (C_s, G_s, the EEG projection). A weight of 0 removes a
term and does not build its modules (the ablations of Table V); ``two_way=False`` is Table V's one-way L_C'.
docs/distillers/sacd.md lists every reading of an ambiguous passage.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdbench.contracts import Distiller
from kdbench.hookspecs import hookimpl
from kdbench.losses import hard_ce
from kdbench.options import PluginOptions

from .sacd_graph import BatchGraphEncoder, graph_margin_loss
from .sacd_memory import MemoryBank, hardest_negatives, hinge


class SACDOptions(PluginOptions):
    lambda_d: float = Field(0.5, ge=0, description="λ1, weight of the structure loss L_D (paper V-B); 0 removes it")
    lambda_c: float = Field(1.0, ge=0, description="λ2, weight of the hard-negative contrast L_C (V-B); 0 removes it")
    lambda_jsd: float = Field(1.0, ge=0, description="λ3, weight of the JSD between C_v and C_s (V-B); 0 removes it "
                                                     "and the EEG classifier C_s with its CE")
    node_dim: int = Field(128, gt=0, description="hidden node width of the graph networks (IV-B)")
    edge_dim: int = Field(64, gt=0, description="edge vector width (IV-B)")
    message_dim: int = Field(512, gt=0, description="output width of the message MLP F_m (IV-B)")
    graph_dim: int = Field(1024, gt=0, description="width of the graph vector O(G) (IV-B)")
    graph_layers: int = Field(3, ge=1, description="propagation rounds. Paper: 'multiple layers'; on the complete "
                                                   "batch graph one round reaches every node, so 3 (kdbench, for "
                                                   "speed); the authors' unused GMN config had 5")
    share_graph_layers: bool = Field(True, description="one parameter set for all rounds (share_prop_params of the "
                                                       "authors' GMN config)")
    structure_margin: float = Field(1.0, gt=0, description="γ of eq. 11, read as GMN's pair loss "
                                                           "relu(γ − y(1 − d)); the paper gives no value, 1.0 is "
                                                           "GMN's and the authors' config's")
    structure_negatives: bool = Field(True, description="also push this batch's graph away from the previous batch's "
                                                        "graph of the other modality (kdbench), so that constant "
                                                        "graph vectors do not minimise L_D; False = positive pair only")
    feature_dim: int = Field(512, gt=0, description="width of L_C's common space after the linear projections (V-B: "
                                                    "latent feature space 512)")
    bank_size: int = Field(256, gt=0, description="size of each memory queue (V-B)")
    num_negatives: int = Field(64, gt=0, description="K hardest negatives per anchor (V-B)")
    contrast_margin: float = Field(0.2, ge=0, description="α of eqs. 12–13 (IV-C)")
    two_way: bool = Field(True, description="both brackets of eq. 13; False keeps only the video-anchor one "
                                            "(Table V's one-way L_C')")
    contrast_reduction: Literal["mean", "sum"] = Field(
        "mean", description="'mean' over the valid (anchor, negative) pairs (as the authors' deleted triplet loss) "
                            "or 'sum' (eq. 13 as printed)")


def jensen_shannon(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """Eq. 4: JSD(P, Q) = ½KL(P‖M) + ½KL(Q‖M), M = (P + Q)/2, natural log (so 0 ≤ JSD ≤ ln 2), batch mean."""
    log_p, log_q = F.log_softmax(logits_p, dim=-1), F.log_softmax(logits_q, dim=-1)
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(-1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(-1)
    return (0.5 * (kl_pm + kl_qm)).mean()


class SACD(Distiller):
    """Han et al. 2022 (SACD): batch-graph structure alignment + K-hard-negative memory contrast + JSD."""

    name = "sacd"
    Options = SACDOptions

    def __init__(self, options: SACDOptions, ctx) -> None:
        super().__init__(options, ctx)
        o, d_v, d_s = options, ctx.student.embedding, ctx.teacher.embedding
        # C_s: trained by eq. 1's CE on the frozen E_s; it only serves the JSD, so it lives and dies with λ3.
        self.eeg_classifier = nn.Linear(d_s, ctx.num_classes) if o.lambda_jsd > 0 else None
        self.graph_v = self.graph_s = None
        if o.lambda_d > 0:
            sizes = dict(node_dim=o.node_dim, edge_dim=o.edge_dim, message_dim=o.message_dim, graph_dim=o.graph_dim,
                         layers=o.graph_layers, share=o.share_graph_layers)
            self.graph_v, self.graph_s = BatchGraphEncoder(d_v, **sizes), BatchGraphEncoder(d_s, **sizes)
            # the previous batch's graph vectors: the negatives of eq. 11 (buffers, so they survive a resume)
            self.register_buffer("prev_graph_v", torch.zeros(o.graph_dim))
            self.register_buffer("prev_graph_s", torch.zeros(o.graph_dim))
            self.register_buffer("has_prev_graph", torch.zeros((), dtype=torch.bool))
        self.proj_v = self.proj_s = self.bank_v = self.bank_s = None
        if o.lambda_c > 0:
            # "linear projections can be added to map all embeddings to the same dimension" (V-B)
            self.proj_v, self.proj_s = nn.Linear(d_v, o.feature_dim), nn.Linear(d_s, o.feature_dim)
            # the queues hold embeddings, projected afresh at every step (see contrast_loss)
            self.bank_s = MemoryBank(o.bank_size, d_s)
            self.bank_v = MemoryBank(o.bank_size, d_v) if o.two_way else None

    def forward(self, student, teacher, batch):
        o, y = self.options, batch.label
        losses = {"ce": hard_ce(student.logits, y)}
        if self.eeg_classifier is not None:
            eeg_logits = self.eeg_classifier(teacher.embedding)
            losses["ce_eeg"] = hard_ce(eeg_logits, y)
            losses["jsd"] = o.lambda_jsd * jensen_shannon(student.logits, eeg_logits)
        if self.graph_v is not None:
            losses["structure"] = o.lambda_d * self.structure_loss(student.embedding, teacher.embedding)
        if self.bank_s is not None:
            losses["contrast"] = o.lambda_c * self.contrast_loss(student.embedding, teacher.embedding, y)
        return losses

    def structure_loss(self, emb_v: Tensor, emb_s: Tensor) -> Tensor:
        """L_D (eq. 11) between the video and EEG batch graphs; updates the stored negatives in training."""
        o_v, o_s = self.graph_v(emb_v), self.graph_s(emb_s)
        negatives = []
        if self.options.structure_negatives and bool(self.has_prev_graph):
            negatives = [(o_v, self.prev_graph_s), (self.prev_graph_v, o_s)]
        loss = graph_margin_loss(o_v, o_s, negatives, self.options.structure_margin)
        if self.training:
            self.prev_graph_v.copy_(o_v.detach())
            self.prev_graph_s.copy_(o_s.detach())
            self.has_prev_graph.fill_(True)
        return loss

    def contrast_loss(self, emb_v: Tensor, emb_s: Tensor, y: Tensor) -> Tensor:
        """L_C (eq. 13) against the queues.

        The queues store detached embeddings: on the EEG side exactly what the paper's queue holds (E_s is
        frozen, so its momentum encoder is itself); on the video side the student's embeddings of the last
        few steps, which stand in for MoCo's slowly moving key encoder. Keys are the current projection of
        the stored embeddings, so anchors and negatives always live in the same space. In training the
        batch is enqueued first, so a queue is never empty; same-class entries (the anchor's own among
        them) are filtered by label.
        """
        o = self.options
        f_v, f_s = F.normalize(self.proj_v(emb_v), dim=-1), F.normalize(self.proj_s(emb_s), dim=-1)
        if self.training:
            self.bank_s.push(emb_s, y)
            if self.bank_v is not None:
                self.bank_v.push(emb_v, y)
        positive = (f_v * f_s).sum(-1)                                            # S(F_n^v, F_n^s)
        # video anchors against EEG negatives: S(F_n^v, F_k^s)
        keys_s = F.normalize(self.proj_s(self.bank_s.features), dim=-1)
        negative, valid, _ = hardest_negatives(f_v, y, keys_s, self.bank_s.labels, o.num_negatives)
        loss = hinge(positive, negative, valid, o.contrast_margin, o.contrast_reduction)
        if self.bank_v is not None:  # EEG anchors against video negatives: S(F_k^v, F_n^s)
            keys_v = F.normalize(self.proj_v(self.bank_v.features), dim=-1)
            negative, valid, _ = hardest_negatives(f_s, y, keys_v, self.bank_v.labels, o.num_negatives)
            loss = loss + hinge(positive, negative, valid, o.contrast_margin, o.contrast_reduction)
        return loss


@hookimpl
def register_distillers(register):
    register(SACD)
