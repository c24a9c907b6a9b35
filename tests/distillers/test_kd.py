"""KD (Hinton et al. 2015) and the baseline."""

import torch
import torch.nn.functional as F

from kdbench_plugins.distillers.baseline import Baseline
from kdbench_plugins.distillers.kd import KD

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
