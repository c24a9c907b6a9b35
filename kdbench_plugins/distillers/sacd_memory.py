"""SACD's contrast branch (Han et al. 2022, Section IV-C, eqs. 12–13): K-hard-negative memory queues.

Each modality has a FIFO queue of its most recent (embedding, label) pairs. For an anchor of the other
modality, its K hard negatives are the K stored entries of *other classes* most similar to it (eq. 3's
argmax generalised to top-K); the stored labels keep same-class entries, the anchor's own positive among
them, out of the negative set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.contracts import UNLABELLED

#: the label of a queue slot nothing has been written to yet
EMPTY = -1


class MemoryBank(nn.Module):
    """A FIFO queue of ``size`` feature vectors with their labels, all registered buffers.

    Empty slots carry the label −1 and are never selected. ``ptr`` is the next slot to overwrite, i.e.
    the oldest entry once the queue is full; writing wraps around.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("labels", torch.full((size,), EMPTY, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.features.shape[0]

    @torch.no_grad()
    def push(self, features: Tensor, labels: Tensor) -> None:
        """Enqueue a batch, dropping the oldest entries (a batch larger than the queue keeps its last ones)."""
        features, labels = features[-self.size:], labels[-self.size:]
        slots = (self.ptr + torch.arange(len(labels), device=self.ptr.device)) % self.size
        self.features[slots] = features.detach().to(self.features.dtype)
        self.labels[slots] = labels.to(self.labels.dtype)
        self.ptr.copy_((self.ptr + len(labels)) % self.size)


def hardest_negatives(anchors: Tensor, labels: Tensor, keys: Tensor, key_labels: Tensor,
                      k: int) -> tuple[Tensor, Tensor, Tensor]:
    """For each anchor (B, dim), its similarities to the k most similar keys (M, dim) of another class.

    Returns ``(similarity (B, k'), valid (B, k'), slot (B, k'))`` with k' = min(k, M). Keys with label −1
    (empty slots) or the anchor's label are never chosen; if fewer than k remain (early in training, or a
    dominant class), the surplus columns are marked invalid for the caller to mask. An unscored anchor
    (``UNLABELLED``) has no known class: every filled slot is a candidate; an unscored key is a candidate for
    every anchor. Selection uses the similarity without gradient; the gathered similarities keep the gradient
    of anchors and keys.
    """
    similarity = anchors @ keys.T
    known = labels[:, None] != UNLABELLED
    invalid = (key_labels[None, :] == EMPTY) | (known & (key_labels[None, :] == labels[:, None]))
    top = similarity.detach().masked_fill(invalid, float("-inf")).topk(min(k, keys.shape[0]), dim=1)
    return similarity.gather(1, top.indices), torch.isfinite(top.values), top.indices


def hinge(positive: Tensor, negative: Tensor, valid: Tensor, margin: float, reduction: str = "mean") -> Tensor:
    """One bracket of eq. 13: Σ_k Σ_n [α − S(pos_n) + S(neg_nk)]_+ over the valid (n, k) pairs.

    ``reduction="mean"`` divides by the number of valid pairs (the authors' deleted K-hard-negative loss
    averaged over its triplets), so the term stays O(α) whatever K and the batch size; ``"sum"`` is eq. 13
    as printed.
    """
    terms = F.relu(margin - positive[:, None] + negative) * valid
    if reduction == "sum":
        return terms.sum()
    return terms.sum() / valid.sum().clamp_min(1)
