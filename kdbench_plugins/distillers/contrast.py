"""Memory-bank contrast shared by ``crd`` and ``cmc`` (Tian, Krishnan & Isola; CMC, ECCV 2020; CRD, ICLR 2020).

Both methods score an anchor embedding against one *positive* and K *negatives* read from a memory bank
of the other view, a non-parametric store with one unit vector per training sample (Wu et al., CVPR 2018).
Only the anchor carries gradient: the bank rows are constants, refreshed after scoring by
``m ← normalize(momentum·m + (1 − momentum)·f)`` at the batch's own indices. The bank therefore lets K be
far larger than a batch at the price of slightly stale keys.

This module holds what both methods share, as facts of the authors' code (``HobbitLong/CMC``
``NCE/NCEAverage.py``, ``HobbitLong/RepDistiller`` ``crd/memory.py``, ``crd/criterion.py``):

* :class:`Embed`: linear map to the contrast space followed by L2 normalisation.
* :class:`ContrastMemory`: two banks (student view, teacher view) of ``num_train × dim``, initialised
  uniformly in ±1/√(dim/3) as in the reference code, then L2-normalised row-wise (here, so every key is on
  the unit sphere from the start); the negative sampler; the scores of both directions; the momentum update.
* :class:`NCECritic`: CRD's NCE objective with the constant Z estimated once, from the first batch.
* :func:`softmax_contrast`: CMC's (K+1)-way softmax cross-entropy (its L_contrast, "NCE-softmax").

Negatives are drawn i.i.d. and uniformly (with replacement, as NCE's noise distribution assumes) from the
training set minus the anchor itself, through torch's global RNG, so a run reseeded per epoch is
deterministic. K is capped at ``num_train − 1``. With ``negatives="other-classes"`` they are drawn only from
samples whose label is not known to be the anchor's; labels are learnt as indices are seen.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdbench.contracts import UNLABELLED
from kdbench.errors import KdbenchError

NegativePolicy = Literal["other-samples", "other-classes"]


class Embed(nn.Module):
    """Linear projection to the contrast space, then L2 normalisation (RepDistiller's ``Embed``)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)

    def forward(self, x: Tensor) -> Tensor:
        # at least float32 before normalising: under CUDA autocast the linear output is fp16 (a float64
        # module, as in the float64 tests, stays float64)
        z = self.linear(x.flatten(1))
        return F.normalize(z.to(torch.promote_types(z.dtype, torch.float32)), dim=1)


class ContrastMemory(nn.Module):
    """Two momentum memory banks over the training set and the sampler of negatives.

    ``forward(z_s, z_t, index, label)`` returns ``(sim_s, sim_t)``, each ``(B, 1 + K)`` cosine
    similarities with the positive in column 0: ``sim_s`` scores the student anchors against the *teacher*
    bank, ``sim_t`` the teacher anchors against the *student* bank, with the same negatives for both (as in
    the reference code). The banks are updated afterwards, so a sample's positive is its bank row from
    before this step.
    """

    def __init__(self, num_train: int, dim: int, num_negatives: int, momentum: float,
                 negatives: NegativePolicy = "other-samples") -> None:
        super().__init__()
        if num_train < 2:
            raise KdbenchError(f"contrastive distillation needs at least 2 training samples, got {num_train}")
        self.num_train = num_train
        self.k = min(num_negatives, num_train - 1)
        self.momentum = momentum
        self.negatives = negatives
        bound = 1.0 / math.sqrt(dim / 3)
        for name in ("bank_student", "bank_teacher"):
            init = torch.rand(num_train, dim).mul_(2 * bound).sub_(bound)
            self.register_buffer(name, F.normalize(init, dim=1))
        if negatives == "other-classes":
            # label of every training sample, −1 until its index has appeared in a batch
            self.register_buffer("labels", torch.full((num_train,), -1, dtype=torch.long))

    def sample(self, index: Tensor, label: Tensor | None = None) -> Tensor:
        """(B, K) indices of negatives: never the anchor's own index; with "other-classes", never a sample
        whose known label is the anchor's (samples not seen yet, label −1, and unscored ones remain eligible;
        an unscored anchor takes any other sample)."""
        b, n, device = index.shape[0], self.num_train, self.bank_student.device
        if self.negatives == "other-samples":
            # uniform over the n − 1 others: draw from [0, n−1) and step over the anchor's own index
            draw = torch.randint(0, n - 1, (b, self.k), device=device)
            return draw + (draw >= index[:, None]).long()
        out = torch.empty(b, self.k, dtype=torch.long, device=device)
        for c in torch.unique(label).tolist():
            rows = label == c
            if c == UNLABELLED:  # an unscored anchor has no known class: any other sample is a negative
                draw = torch.randint(0, n - 1, (int(rows.sum()), self.k), device=device)
                out[rows] = draw + (draw >= index[rows][:, None]).long()
                continue
            pool = torch.nonzero(self.labels != c).squeeze(1)
            if pool.numel() == 0:
                raise KdbenchError(f"negatives='other-classes' found no sample outside class {c}; "
                                   "use negatives='other-samples' for a single-class training set")
            out[rows] = pool[torch.randint(0, pool.numel(), (int(rows.sum()), self.k), device=device)]
        return out

    def forward(self, z_s: Tensor, z_t: Tensor, index: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        if int(index.min()) < 0 or int(index.max()) >= self.num_train:
            raise KdbenchError(f"sample index {int(index.max())} is outside the training split's 0..{self.num_train - 1}: "
                               "the dataset must give each sample its position in the split (Batch.index)")
        with torch.autocast(z_s.device.type, enabled=False):
            # the banks' dtype: float32 unless the module was cast (fp16 anchors under autocast are widened)
            z_s, z_t = z_s.to(self.bank_student.dtype), z_t.to(self.bank_student.dtype)
            if self.negatives == "other-classes" and self.training:
                self.labels[index] = label
            idx = torch.cat([index[:, None], self.sample(index, label)], dim=1)
            product = use_product(self.num_train, idx.shape[0], idx.shape[1], z_s.shape[1])
            sim_s = scores(self.bank_teacher, z_s, idx, product)
            sim_t = scores(self.bank_student, z_t, idx, product)
            # the product path keeps the whole bank for backward: replace it instead of writing into it
            if self.training:  # evaluating must never move the training set's memory
                self.update(z_s, z_t, index, in_place=not product)
        return sim_s, sim_t

    @torch.no_grad()
    def update(self, z_s: Tensor, z_t: Tensor, index: Tensor, in_place: bool = True) -> None:
        """m ← normalize(momentum·m + (1 − momentum)·z) at ``index``; every other row is left as it was."""
        for name, z in (("bank_student", z_s), ("bank_teacher", z_t)):
            bank = getattr(self, name)
            rows = F.normalize(bank[index].mul(self.momentum).add_(z.detach(), alpha=1 - self.momentum), dim=1)
            if in_place:
                bank.index_copy_(0, index, rows)
            else:
                setattr(self, name, bank.index_copy(0, index, rows))


def use_product(n: int, b: int, k1: int, d: int) -> bool:
    """Whether one ``B × N`` product (plus a copy of the ``N × D`` bank at update time) takes less memory than
    gathering ``B × (1+K) × D`` bank rows, the reference code's way. True unless N is in the hundreds of
    thousands (about 700 k at B = 64 and the defaults), and always when K is capped at N − 1 (B ≥ 2)."""
    return n * (b + d) <= b * k1 * d


def scores(bank: Tensor, anchors: Tensor, idx: Tensor, product: bool) -> Tensor:
    """Cosine similarities ``anchors[b] · bank[idx[b, j]]``; both ways give the same values and gradients."""
    if product:
        return (anchors @ bank.T).gather(1, idx)
    return torch.einsum("bkd,bd->bk", bank[idx], anchors)


class NCECritic(nn.Module):
    """CRD's NCE loss over scores whose column 0 is the positive (RepDistiller's ``ContrastLoss``).

    The critic is P = exp(s/τ)/Z, an unnormalised estimate of the probability of a sample among the
    ``num_train``; the noise distribution is uniform, Pn = 1/num_train. With K negatives,
    h = P / (P + K·Pn) and the loss per anchor is −log h(positive) − Σ_negatives log(1 − h), summed over
    the negatives and averaged over the batch. Z is set once, at the first call, to
    mean(exp(s/τ)) · num_train over the whole first batch (positive column included), exactly as the
    reference code does, and kept in the buffer ``z`` so a resumed run reuses it. The loss is computed in
    log space (the reference's eps = 1e-7 guard is not needed there).
    """

    def __init__(self, num_train: int, temperature: float) -> None:
        super().__init__()
        self.num_train = num_train
        self.temperature = temperature
        self.register_buffer("z", torch.tensor(-1.0))  # < 0: not estimated yet

    def forward(self, sims: Tensor) -> Tensor:
        logits = sims / self.temperature
        z = self.z
        if z.item() < 0:
            with torch.no_grad():
                log_mean = torch.logsumexp(logits.flatten(), 0) - math.log(logits.numel())
                z = torch.exp(log_mean) * self.num_train
                if self.training:  # fixed by the first *training* batch only
                    self.z.fill_(float(z))
        log_p = logits - torch.log(z)
        log_k_pn = math.log((sims.shape[1] - 1) / self.num_train)
        positive = F.softplus(log_k_pn - log_p[:, 0])         # −log( P / (P + K·Pn) )
        negative = F.softplus(log_p[:, 1:] - log_k_pn).sum(1)  # −Σ log( K·Pn / (P + K·Pn) )
        return (positive + negative).mean()


def softmax_contrast(sims: Tensor, temperature: float) -> Tensor:
    """−log softmax(s/τ)[positive], the positive in column 0: CMC's L_contrast with the exact (K+1)-way
    normaliser (its code's ``NCESoftmaxLoss``), averaged over the batch."""
    target = torch.zeros(sims.shape[0], dtype=torch.long, device=sims.device)
    return F.cross_entropy(sims / temperature, target)
