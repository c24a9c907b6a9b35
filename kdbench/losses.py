"""The hard-label loss every distiller and the teacher's training share, aware of unscored samples.

A training split may hold samples nobody scored (label :data:`kdbench.contracts.UNLABELLED`): they still
carry both inputs, so whatever a distiller learns from the teacher's outputs applies to them, while a
cross-entropy on the label must skip them. ``F.cross_entropy`` already skips that label, but averages over
zero samples to NaN when a whole batch is unscored; :func:`hard_ce` returns a zero that keeps the graph
instead, so such a batch trains on its distillation terms alone.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .contracts import UNLABELLED


def hard_ce(logits: Tensor, label: Tensor) -> Tensor:
    """Mean cross-entropy over the batch's labelled samples; 0 (with a graph) if it has none."""
    scored = label != UNLABELLED
    if bool(scored.all()):
        return F.cross_entropy(logits, label)
    if not bool(scored.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[scored], label[scored])

