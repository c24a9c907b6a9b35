"""IFD (Passalis, Tzelepi & Tefas 2020): per-layer Jeffreys divergences with critical-period weights."""

import itertools

import pytest
import torch

from kdbench.contracts import DistillContext, FeatureSpec, ModelOutput
from kdbench_plugins.distillers.kernels import conditional, cosine_affinity, jeffreys_divergence, student_t_affinity
from kdbench_plugins.distillers.ifd import IFD, layer_divergence, pair_stages

from .conftest import REL64, assert_gradients_flow, make_pair


def ifd(pair, **options):
    return IFD(IFD.Options(**options), pair.ctx).to(pair.dtype)


def test_gradients_reach_the_student_only(pair):
    losses = assert_gradients_flow(ifd(pair), pair)
    assert set(losses) == {"ce", "ifd_final", "ifd_flow"}
    assert losses["ifd_final"].item() > 0 and losses["ifd_flow"].item() > 0


@pytest.mark.parametrize("s_stages,t_stages", [((16, 24), (12, 36, 40, 48)), ((8, 16, 24, 32, 40), (12, 36))])
def test_works_with_different_widths_and_stage_counts(s_stages, t_stages):
    pair = make_pair(s_stages=s_stages, t_stages=t_stages)
    assert len(ifd(pair).pairs) == 2
    assert_gradients_flow(ifd(pair), pair)


def test_a_teacher_without_stages_leaves_the_embedding_pair():
    pair = make_pair()
    d = IFD(IFD.Options(), DistillContext(pair.ctx.student, FeatureSpec(5, 48, ()), 5, 64, 10))
    s_out, t_out = pair.outputs()
    losses = d(s_out, ModelOutput(t_out.logits, t_out.embedding), pair.batch)
    assert d.pairs == [] and losses["ifd_flow"].item() == 0 and losses["ifd_final"].item() > 0


def test_stage_pairing_is_one_to_one_by_relative_depth():
    assert pair_stages(3, 3) == [(0, 0), (1, 1), (2, 2)]
    assert pair_stages(3, 4) == [(0, 1), (1, 2), (2, 3)]
    assert pair_stages(4, 3) == [(1, 0), (2, 1), (3, 2)]
    assert pair_stages(2, 5) == [(0, 2), (1, 4)]
    assert pair_stages(0, 4) == [] and pair_stages(3, 0) == []
    for n_s, n_t in itertools.product(range(1, 8), repeat=2):
        pairs = pair_stages(n_s, n_t)
        s_idx, t_idx = zip(*pairs)
        assert len(pairs) == min(n_s, n_t) and pairs[-1] == (n_s - 1, n_t - 1)
        assert all(a < b for a, b in zip(s_idx, s_idx[1:])) and all(a < b for a, b in zip(t_idx, t_idx[1:]))
        assert 0 <= min(s_idx) and 0 <= min(t_idx)


def test_weights_follow_the_critical_period_schedule(pair):
    d = ifd(pair, alpha_init=100.0, gamma=0.7)
    s_out, t_out = pair.outputs()
    d.on_epoch_start(0)
    first = d(s_out, t_out, pair.batch)
    for k in range(25):
        d.on_epoch_start(k)
        assert d.alpha == 100.0 * 0.7 ** k
        losses = d(s_out, t_out, pair.batch)
        # the final layer keeps weight 1; the intermediate ones carry α_init·γ^k
        assert losses["ifd_final"].item() == pytest.approx(first["ifd_final"].item(), rel=1e-6)
        assert losses["ifd_flow"].item() == pytest.approx(first["ifd_flow"].item() * 0.7 ** k, rel=1e-5)
    d.on_epoch_start(0)
    assert d.alpha == 100.0


def test_flow_term_is_the_sum_over_paired_stages(pair):
    s_out, t_out = pair.outputs()
    d = ifd(pair, weight=2.0)
    d.on_epoch_start(2)
    losses = d(s_out, t_out, pair.batch)
    flow = sum(layer_divergence(t_out.stages[i], s_out.stages[i]) for i in range(3))
    assert torch.allclose(losses["ifd_flow"], 2.0 * 100 * 0.7 ** 2 * flow)
    assert torch.allclose(losses["ifd_final"], 2.0 * layer_divergence(t_out.embedding, s_out.embedding))


@pytest.mark.parametrize("include_self", [True, False])
def test_zero_divergence_for_identical_features(pair, include_self):
    s_out, _ = pair.outputs()
    losses = ifd(pair, include_self=include_self)(s_out, s_out.detach(), pair.batch)
    assert abs(losses["ifd_final"].item()) < 1e-9 and abs(losses["ifd_flow"].item()) < 1e-7


@pytest.mark.parametrize("include_self", [True, False])
def test_divergence_is_symmetric(pair64, include_self):
    s_out, t_out = pair64.outputs()
    a, b = s_out.embedding.detach(), t_out.embedding
    ab, ba = layer_divergence(a, b, include_self), layer_divergence(b, a, include_self)
    assert ab.item() > 0 and ab.item() == pytest.approx(ba.item(), rel=REL64)
    for kernel in (cosine_affinity, student_t_affinity):
        p, q = conditional(kernel(a), include_self), conditional(kernel(b), include_self)
        assert jeffreys_divergence(p, q, include_self).item() == pytest.approx(
            jeffreys_divergence(q, p, include_self).item(), rel=REL64)
        kl_pq = (p * (p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())).sum()
        kl_qp = (q * (q.clamp_min(1e-12).log() - p.clamp_min(1e-12).log())).sum()
        n = p.numel() if include_self else p.numel() - len(p)
        assert jeffreys_divergence(p, q, include_self).item() == pytest.approx((kl_pq + kl_qp).item() / n, rel=REL64)
