"""``hard_ce``: the cross-entropy every distiller and the teacher's training use, skipping unscored samples."""

import torch
import torch.nn.functional as F

from kdbench.contracts import UNLABELLED
from kdbench.losses import hard_ce


def test_equals_cross_entropy_over_the_scored_samples_only():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    label = torch.tensor([2, UNLABELLED, 0, 4, UNLABELLED, 1])
    keep = label != UNLABELLED
    assert torch.equal(hard_ce(logits, label), F.cross_entropy(logits[keep], label[keep]))
    full = torch.tensor([2, 3, 0, 4, 1, 1])
    assert torch.equal(hard_ce(logits, full), F.cross_entropy(logits, full))


def test_a_wholly_unscored_batch_gives_zero_with_a_graph_not_nan():
    logits = torch.randn(4, 3, requires_grad=True)
    loss = hard_ce(logits, torch.full((4,), UNLABELLED))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    assert torch.isnan(F.cross_entropy(logits, torch.full((4,), UNLABELLED)))   # what it protects against
