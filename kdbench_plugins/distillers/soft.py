"""The temperature-softened KL divergence shared by ``kd``, ``crd`` and ``fitnet`` (not a plugin itself).

Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", arXiv:1503.02531, 2015, Sec. 2:
both networks' logits are divided by a temperature T before the softmax, which softens the teacher's class
probabilities so that the small ones (how the teacher ranks the wrong classes) carry gradient. The
soft-target gradients scale as 1/T², so the term is multiplied by T² to keep its weight relative to the
hard-label cross-entropy unchanged when T changes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def softened_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float, weight: float = 1.0,
                t_squared: bool = True) -> Tensor:
    """weight · T² · KL(softmax(teacher/T) ‖ softmax(student/T)), the KL summed over classes and averaged
    over the batch (``batchmean``).

    KL differs from Hinton's cross-entropy with the soft targets only by the teacher's entropy, a constant:
    same gradients, and 0 at a perfect match. ``t_squared=False`` leaves out the T² (FitNets' stage 2, Eq. 2,
    and its authors' code). The scalar factors are multiplied together first and applied once. Gradients
    flow into both logits; detach the teacher's where it must not learn.
    """
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                  reduction="batchmean", log_target=True)
    return (weight * t * t if t_squared else weight) * kl
