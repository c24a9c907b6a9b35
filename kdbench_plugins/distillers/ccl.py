"""``ccl``: Chen, Xian, Koepke, Shan & Akata, "Distilling Audio-Visual Knowledge by Compositional Contrastive
Learning", CVPR 2021 (arXiv:2104.10955), as released by the authors (github yanbeic/CCL, Apache-2.0).

The paper's full text was not available to us, so equation numbers are not quoted; every formula below is
the one the authors' code computes (``models/composition_classifier.py``, ``loss/nce_loss.py``,
``loss/jsd_loss.py``, ``training.py::train_a_epoch``), which is also what the SACD authors ran (methods.md §7).

1. **Composition.** A learnable embedding m = f_t + W [f_t/‖f_t‖ ; f_v/‖f_v‖] + b mixes the teacher's
   embedding f_t with the student's f_v; it has its own classifier and is trained jointly with the student.
   It bridges the cross-modal semantic gap: the student is pulled towards m, which is anchored on the teacher
   but can move towards what the video can express.
2. **Label-aware in-batch contrast** between every two of {student, composition, teacher}:
   p_ij = softmax_j(cos(x_i, y_j) / τ); per anchor i, the mean of −log p_ij over same-label j (the sample
   itself included) plus the mean of −log(1 − p_ij) over different-label j; averaged over anchors; used
   symmetrically, NCE(x, y) + NCE(y, x).
3. **Symmetric KL** between the student's and the composition's class probabilities: KL(p‖q) + KL(q‖p),
   weighted 0.5 (the code's ``JSDLoss(weight=0.5)``, which is this, not a Jensen-Shannon divergence).

The released recipe trains the two sides with two optimisers on different sums:
student  ← CE_v + [NCE(v,m)+NCE(m,v)] + [NCE(v,t)+NCE(t,v)] + symKL,
composition ← CE_m + [NCE(v,m)+NCE(m,v)] + [NCE(m,t)+NCE(t,m)] + symKL.
kdbench has one optimiser over student + distiller, so the terms that belong to the composition side only
(CE_m and NCE(m,t)) see the student's embedding detached; the shared terms are left whole, and the
student-only terms do not depend on the composition. One summed loss then gives every parameter exactly the
gradient its own optimiser would have received.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdbench.contracts import UNLABELLED, Distiller
from kdbench.hookspecs import hookimpl
from kdbench.losses import hard_ce
from kdbench.options import PluginOptions


class CCLOptions(PluginOptions):
    temperature: float = Field(
        0.5, gt=0,
        description="τ of the contrastive softmax; the authors' code uses 0.5 for the audio teacher (stored "
                    "1-D-signal embeddings, like an EEG teacher) and 0.1 for the image teacher")
    ce_weight: float = Field(1.0, ge=0, description="weight of the student's cross-entropy (code: 1)")
    composition_ce_weight: float = Field(1.0, ge=0, description="weight of the composition's cross-entropy (code: 1)")
    contrast_weight: float = Field(1.0, ge=0, description="weight of each symmetric contrastive pair (code: 1)")
    sym_kl_weight: float = Field(0.5, ge=0, description="weight of KL(p‖q) + KL(q‖p); the code's JSDLoss(weight=0.5)")
    drop_zero_teacher: bool = Field(
        True, description="leave samples whose teacher embedding is all zeros (the code's marker for 'no audio') "
                          "out of every term except the student's cross-entropy")


def same_label_mask(label: Tensor) -> Tensor:
    """(B, B) bool: True where samples i and j share a label, the diagonal included. These are the positives.
    An unscored sample (``UNLABELLED``) is its own only positive: nothing says which class it shares."""
    known = label != UNLABELLED
    same = (label[:, None] == label[None, :]) & known[:, None] & known[None, :]
    return same | torch.eye(len(label), dtype=torch.bool, device=label.device)


def label_contrast(x: Tensor, y: Tensor, label: Tensor, temperature: float) -> Tensor:
    """One direction of CCL's label-aware in-batch loss, anchors x against candidates y.

    Negatives are the pairs of two scored samples with different labels; a pair with an unscored sample is
    neither positive nor negative (only the softmax of the positive term pushes it away). Rows with no
    negative (e.g. a batch of one class) get no negative term; the released code divides 0/0 there and
    returns NaN.
    """
    logits = F.normalize(x, dim=1) @ F.normalize(y, dim=1).T / temperature
    log_p = F.log_softmax(logits, dim=1)
    same = same_label_mask(label)
    known = label != UNLABELLED
    pos, neg = same.float(), (known[:, None] & known[None, :] & ~same).float()
    pos_term = -(log_p * pos).sum(1) / pos.sum(1)  # the diagonal is always positive: never 0/0
    neg_log = torch.log((1.0 - log_p.exp()).clamp_min(1e-10))
    neg_term = -(neg_log * neg).sum(1) / neg.sum(1).clamp_min(1.0)
    return (pos_term + neg_term).mean()


def symmetric_kl(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """KL(p‖q) + KL(q‖p) = Σ (p − q)(log p − log q) per sample, averaged over the batch (unweighted)."""
    log_p, log_q = F.log_softmax(p_logits, dim=1), F.log_softmax(q_logits, dim=1)
    return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(1).mean()


class CCL(Distiller):
    """Chen et al. 2021: compositional embedding + label-aware contrast between student, composition and teacher."""

    name = "ccl"
    Options = CCLOptions

    def __init__(self, options: CCLOptions, ctx) -> None:
        super().__init__(options, ctx)
        d_s, d_t = ctx.student.embedding, ctx.teacher.embedding
        # The teacher's embedding is the fixed anchor (stored Cnn14 features in the paper), so the common width
        # is the teacher's; the student is mapped into it only when the widths differ (512 = 512 in the paper).
        self.student_proj = nn.Identity() if d_s == d_t else nn.Linear(d_s, d_t)
        self.mix = nn.Linear(2 * d_t, d_t)                  # W, b of the composition
        self.classifier = nn.Linear(d_t, ctx.num_classes)   # the composition's own classifier

    def compose(self, teacher_emb: Tensor, student_emb: Tensor) -> Tensor:
        """m = f_t + W[norm f_t; norm f_v] + b: a residual on the teacher, so m starts close to it."""
        pair = torch.cat([F.normalize(teacher_emb, dim=1), F.normalize(student_emb, dim=1)], dim=1)
        return teacher_emb + self.mix(pair)

    def forward(self, student, teacher, batch):
        o = self.options
        losses = {"ce": o.ce_weight * hard_ce(student.logits, batch.label)}
        keep = (teacher.embedding != 0).any(dim=1) if o.drop_zero_teacher else \
            torch.ones_like(batch.label, dtype=torch.bool)
        names = ("ce_composition", "contrast_student_composition", "contrast_student_teacher",
                 "contrast_composition_teacher", "sym_kl")
        if not bool(keep.any()):
            return {**losses, **{k: student.logits.new_zeros(()) for k in names}}

        label = batch.label[keep]
        t = teacher.embedding[keep].detach()
        v = self.student_proj(student.embedding[keep])
        m = self.compose(t, v)                 # shared terms: gradient to both sides
        m_own = self.compose(t, v.detach())    # composition-only terms: the student must not move
        tau = o.temperature

        def pair(x, y):
            return o.contrast_weight * (label_contrast(x, y, label, tau) + label_contrast(y, x, label, tau))

        losses.update({
            "ce_composition": o.composition_ce_weight * hard_ce(self.classifier(m_own), label),
            "contrast_student_composition": pair(v, m),
            "contrast_student_teacher": pair(v, t),
            "contrast_composition_teacher": pair(m_own, t),
            "sym_kl": o.sym_kl_weight * symmetric_kl(student.logits[keep], self.classifier(m)),
        })
        return losses


@hookimpl
def register_distillers(register):
    register(CCL)
