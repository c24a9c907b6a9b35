"""Batch-level conditional-probability kernels shared by ``pkt`` and ``ifd`` (not a plugin itself).

Passalis & Tefas (PKT, ECCV 2018) and Passalis, Tzelepi & Tefas (IFD, CVPR 2020) describe a layer by
how its B samples sit relative to each other: an affinity kernel K(x_i, x_j) is turned into conditional
probabilities p_{j|i} = K_ij / Σ_k K_ik (each row of the B×B matrix sums to one), and a student layer is
trained so that its distribution matches the teacher layer's. Only B×B matrices are compared, so the two
layers may have any widths.

Every function takes ``(B, D)`` features; anything wider is flattened per sample first. ``include_self``
chooses whether the self-pair (the diagonal) counts: the authors' released code keeps it; a secondary
source says the papers' equations leave it out, which could not be checked here (see docs/distillers/pkt.md
and ifd.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_affinity(x: Tensor) -> Tensor:
    """(cos(x_i, x_j) + 1) / 2 ∈ [0, 1]; unchanged when any sample (or the whole set) is scaled by c > 0."""
    z = F.normalize(x.flatten(1), dim=1, eps=1e-12)  # an all-zero sample gets cos 0 with everyone, not NaN
    return (z @ z.T + 1.0) / 2.0


def student_t_affinity(x: Tensor, eps: float = 1e-6) -> Tensor:
    """1 / (1 + ‖x_i − x_j‖) (Student-t with one degree of freedom), distances as sqrt(d² + eps).

    The eps keeps the square root differentiable on the diagonal (d = 0); it is the released code's value.
    (The released code forms d² from the Gram matrix; differences give the same values without its
    cancellation error.)
    """
    x = x.flatten(1)
    d2 = (x[:, None, :] - x[None, :, :]).pow(2).sum(2)  # from differences: exact on the diagonal, shift-proof
    return 1.0 / (1.0 + (d2 + eps).sqrt())


def conditional(kernel: Tensor, include_self: bool = True) -> Tensor:
    """Row-normalise a B×B affinity into p_{j|i}; with ``include_self=False`` the diagonal is zeroed first."""
    if not include_self:
        kernel = kernel * (1.0 - torch.eye(len(kernel), device=kernel.device, dtype=kernel.dtype))
    return kernel / kernel.sum(1, keepdim=True).clamp_min(1e-12)


def _mean(terms: Tensor, include_self: bool) -> Tensor:
    """Mean over the entries compared: all B² of them, or the B(B−1) off-diagonal ones."""
    if include_self:
        return terms.mean()
    b = len(terms)
    off = 1.0 - torch.eye(b, device=terms.device, dtype=terms.dtype)
    return (terms * off).sum() / max(b * (b - 1), 1)


def kl_divergence(p_teacher: Tensor, p_student: Tensor, include_self: bool = True, eps: float = 1e-7) -> Tensor:
    """KL(teacher ‖ student) of conditional distributions, mean over the compared entries.

    ``eps`` inside both logs as in the PKT authors' code: zero probabilities (a zeroed diagonal) stay finite.
    The B² mean equals (the mean over rows of each row's KL) / B, so a weight on it scales with the batch.
    """
    terms = p_teacher * ((p_teacher + eps).log() - (p_student + eps).log())
    return _mean(terms, include_self)


def jeffreys_divergence(p: Tensor, q: Tensor, include_self: bool = True) -> Tensor:
    """Symmetric KL, Σ (p − q)(log p − log q), mean over the compared entries (IFD's released reduction).

    Symmetric in its two arguments by construction. The logs are clamped at 1e-12 only so that zeroed
    diagonals (and a cosine kernel hitting exactly 0) give 0 instead of NaN; the released code has no clamp.
    """
    terms = (p - q) * (p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())
    return _mean(terms, include_self)
