"""``rkd``: Park, Kim, Lu & Cho, "Relational Knowledge Distillation", CVPR 2019 (arXiv:1904.05068).

Section 3.2: the student copies the *relations* among the teacher's embeddings rather than the embeddings.

- Distance-wise (RKD-D): ψ_D(t_i, t_j) = ‖t_i − t_j‖ / μ, with μ the mean distance over the batch's pairs
  i ≠ j, so the teacher's scale drops out; L_D = Huber(ψ_D(s_i, s_j), ψ_D(t_i, t_j)) over all pairs.
- Angle-wise (RKD-A): ψ_A(t_i, t_j, t_k) = ⟨e_ij, e_kj⟩ with e_ij = (t_i − t_j) / ‖t_i − t_j‖, the cosine
  of the angle at t_j; L_A = Huber over all triplets.

Huber with δ = 1 is PyTorch's smooth-L1. Both potentials are invariant to rescaling, translating and
rotating either embedding, and only B×B (B×B×B) relations are compared, so the two widths never need to
agree and the method has no learnable part.

Reduction and weights follow RepDistiller's ``RKDLoss`` (the benchmark suites' implementation): the Huber
terms are averaged over all B² pairs and B³ triplets (degenerate ones, which compare 0 with 0, included),
weighted 25 (distance) and 50 (angle), and added to the cross-entropy with overall weight 1
(``run_cifar_distill.sh``: ``-a 0 -b 1``). Total loss: ce_weight · CE + w_dist · L_D + w_angle · L_A.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from kdbench.contracts import Distiller
from kdbench.hookspecs import hookimpl
from kdbench.losses import hard_ce
from kdbench.options import PluginOptions


class RKDOptions(PluginOptions):
    distance_weight: float = Field(25.0, ge=0, description="weight of the distance-wise loss "
                                   "(RepDistiller RKDLoss w_d)")
    angle_weight: float = Field(50.0, ge=0, description="weight of the angle-wise loss (RepDistiller RKDLoss w_a)")
    ce_weight: float = Field(1.0, ge=0, description="weight of the hard-label cross-entropy "
                             "(RepDistiller's default γ = 1)")


def normalized_distances(x: Tensor) -> Tensor:
    """B×B Euclidean distances divided by their mean over the pairs i ≠ j (the diagonal stays 0)."""
    x = x.flatten(1)
    off = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    # From differences, not the Gram matrix, so that translating the features cannot cost precision; the
    # clamp before the root keeps a zero distance's gradient finite.
    d = (x[:, None, :] - x[None, :, :]).pow(2).sum(2).clamp_min(1e-12).sqrt() * off
    return d / d[off].mean().clamp_min(1e-12)


def triplet_cosines(x: Tensor) -> Tensor:
    """B×B×B tensor of ⟨e_ji, e_ki⟩: the cosine of the angle at x_i between x_j and x_k (0 when degenerate)."""
    x = x.flatten(1)
    e = F.normalize(x[None, :, :] - x[:, None, :], dim=2)  # e[i, j] = unit vector from x_i to x_j
    return e @ e.transpose(1, 2)


class RKD(Distiller):
    """Park et al. 2019: match normalised pairwise distances and triplet angles of the embeddings (Huber)."""

    name = "rkd"
    Options = RKDOptions

    def forward(self, student, teacher, batch):
        o = self.options
        ce = o.ce_weight * hard_ce(student.logits, batch.label)
        if len(batch) < 2:  # no pair to relate; the engine never sends such a batch, but stay finite
            zero = student.embedding.sum() * 0.0
            return {"ce": ce, "rkd_distance": zero, "rkd_angle": zero}
        s, t = student.embedding, teacher.embedding.detach()
        return {"ce": ce,
                "rkd_distance": o.distance_weight * F.smooth_l1_loss(normalized_distances(s),
                                                                     normalized_distances(t)),
                "rkd_angle": o.angle_weight * F.smooth_l1_loss(triplet_cosines(s), triplet_cosines(t))}


@hookimpl
def register_distillers(register):
    register(RKD)
