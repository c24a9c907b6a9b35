"""KD (Hinton et al. 2015), its softened KL (shared with CRD and FitNet) and the baseline."""

import pytest
import torch
import torch.nn.functional as F

from kdbench_plugins.distillers.baseline import Baseline
from kdbench_plugins.distillers.kd import KD
from kdbench_plugins.distillers.soft import softened_kl

from .conftest import ABS64, REL64, assert_gradients_flow, make_pair


def test_gradients_reach_the_student_only(pair):
    assert_gradients_flow(KD(KD.Options(), pair.ctx), pair)
    assert_gradients_flow(Baseline(Baseline.Options(), pair.ctx), make_pair())


def test_kd_term_vanishes_when_student_matches_teacher(pair):
    s_out, t_out = pair.outputs()
    t_out.logits = s_out.logits.detach().clone()
    losses = KD(KD.Options(), pair.ctx)(s_out, t_out, pair.batch)
    assert losses["kd"].abs().item() < 1e-6


def test_kd_equals_the_formula(pair64):
    pair = pair64
    opts = KD.Options(temperature=2.0, ce_weight=0.3, kd_weight=0.7)
    s_out, t_out = pair.outputs()
    losses = KD(opts, pair.ctx)(s_out, t_out, pair.batch)
    p_t = F.softmax(t_out.logits / 2, dim=1)
    manual = (p_t * (p_t.log() - F.log_softmax(s_out.logits / 2, dim=1))).sum(1).mean() * 4 * 0.7
    assert torch.allclose(losses["kd"], manual, rtol=REL64, atol=ABS64)
    assert torch.allclose(losses["ce"], 0.3 * F.cross_entropy(s_out.logits, pair.batch.label))


def test_softened_kl_is_the_weighted_t_squared_kl_of_the_softened_distributions():
    gen = torch.Generator().manual_seed(2)
    s, t = (torch.randn(6, 5, generator=gen, dtype=torch.float64) for _ in range(2))
    p_t = F.softmax(t / 3, dim=1)
    kl = float((p_t * (p_t.log() - F.log_softmax(s / 3, dim=1))).sum(1).mean())  # KL(teacher ‖ student)
    assert kl > 0.01
    assert softened_kl(s, t, 3.0).item() == pytest.approx(9 * kl, rel=REL64)
    assert softened_kl(s, t, 3.0, weight=0.5).item() == pytest.approx(4.5 * kl, rel=REL64)
    assert softened_kl(s, t, 3.0, weight=0.5, t_squared=False).item() == pytest.approx(0.5 * kl, rel=REL64)
    assert softened_kl(t, s, 3.0).item() != pytest.approx(9 * kl, rel=1e-3)  # the direction matters
    assert softened_kl(s, s, 3.0).item() == 0.0
