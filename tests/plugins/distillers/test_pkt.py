"""PKT (Passalis & Tefas 2018): cosine-kernel conditional probabilities, KL teacher → student."""

import pytest
import torch
import torch.nn.functional as F

from kdbench_plugins.distillers.kernels import conditional, cosine_affinity
from kdbench_plugins.distillers.pkt import PKT

from .conftest import ABS64, REL64, assert_gradients_flow, make_pair


def pkt(pair, **options):
    return PKT(PKT.Options(**options), pair.ctx).to(pair.dtype)


def test_gradients_reach_the_student_only(pair):
    losses = assert_gradients_flow(pkt(pair), pair)
    assert set(losses) == {"ce", "pkt"} and losses["pkt"].item() > 0


def test_works_with_different_widths_and_stage_counts():
    pair = make_pair(s_stages=(16, 8), t_stages=(12, 36, 40, 300))
    assert_gradients_flow(pkt(pair), pair)


def test_equals_the_formula(pair64):
    pair = pair64
    s_out, t_out = pair.outputs()
    losses = pkt(pair, weight=3.0, ce_weight=0.5)(s_out, t_out, pair.batch)

    def probs(x):
        x = x / x.norm(dim=1, keepdim=True)
        k = (x @ x.T + 1) / 2
        return k / k.sum(1, keepdim=True)

    p_t, p_s = probs(t_out.embedding), probs(s_out.embedding)
    manual = 3.0 * (p_t * torch.log((p_t + 1e-7) / (p_s + 1e-7))).mean()
    assert torch.allclose(losses["pkt"], manual, rtol=REL64, atol=ABS64)
    assert torch.allclose(losses["ce"], 0.5 * F.cross_entropy(s_out.logits, pair.batch.label))


@pytest.mark.parametrize("include_self", [True, False])
def test_zero_for_identical_features(pair, include_self):
    s_out, t_out = pair.outputs()
    t_out.embedding = s_out.embedding.detach().clone()
    assert pkt(pair, include_self=include_self)(s_out, t_out, pair.batch)["pkt"].abs().item() < 1e-9


@pytest.mark.parametrize("side,scale", [("teacher", 13.0), ("teacher", 0.02), ("student", 40.0), ("student", 0.1)])
def test_invariant_to_scaling_either_feature_set(pair64, side, scale):
    pair = pair64
    d = pkt(pair)
    s_out, t_out = pair.outputs()
    reference = d(s_out, t_out, pair.batch)["pkt"]
    out = t_out if side == "teacher" else s_out
    out.embedding = out.embedding * scale
    assert reference.item() > 0
    assert d(s_out, t_out, pair.batch)["pkt"].item() == pytest.approx(reference.item(), rel=REL64)


def test_only_batch_relations_count_not_the_width(pair64):
    """Padding the teacher's embedding with zero columns changes its width, not its B×B kernel."""
    pair = pair64
    d = pkt(pair)
    s_out, t_out = pair.outputs()
    reference = d(s_out, t_out, pair.batch)["pkt"]
    t_out.embedding = torch.cat([t_out.embedding, t_out.embedding.new_zeros(len(t_out.embedding), 77)], dim=1)
    assert d(s_out, t_out, pair.batch)["pkt"].item() == pytest.approx(reference.item(), rel=REL64)


def test_self_pairs_are_optional(pair):
    s_out, _ = pair.outputs()
    k = cosine_affinity(s_out.embedding.detach())
    with_self, without = conditional(k, True), conditional(k, False)
    assert torch.allclose(with_self.sum(1), torch.ones(8)) and torch.allclose(without.sum(1), torch.ones(8))
    assert torch.all(without.diagonal() == 0) and torch.all(with_self.diagonal() > 0)
    a = pkt(pair)(*pair.outputs(), pair.batch)["pkt"].item()
    b = pkt(pair, include_self=False)(*pair.outputs(), pair.batch)["pkt"].item()
    assert a > 0 and b > 0 and a != pytest.approx(b)
