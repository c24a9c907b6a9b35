"""RKD (Park et al. 2019): distance-wise and angle-wise relational losses on the embeddings."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from kdbench_plugins.distillers.rkd import RKD, normalized_distances, triplet_cosines

from .conftest import ABS64, REL64, assert_gradients_flow, make_pair


def rkd(pair, **options):
    return RKD(RKD.Options(**options), pair.ctx).to(pair.dtype)


def test_gradients_reach_the_student_only(pair):
    losses = assert_gradients_flow(rkd(pair), pair)
    assert set(losses) == {"ce", "rkd_distance", "rkd_angle"}


def test_works_with_different_widths_and_stage_counts():
    pair = make_pair(s_stages=(16, 8), t_stages=(12, 36, 40, 300))
    losses = assert_gradients_flow(rkd(pair), pair)
    assert losses["rkd_distance"].item() > 0 and losses["rkd_angle"].item() > 0


def test_relations_match_a_direct_computation():
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    d = torch.tensor([[float((x[i] - x[j]).norm()) for j in range(5)] for i in range(5)], dtype=torch.float64)
    mu = d.sum() / 20  # mean over the 5·4 ordered pairs i ≠ j
    assert torch.allclose(normalized_distances(x), d / mu, rtol=REL64, atol=ABS64)
    cos = triplet_cosines(x)
    for i, j, k in itertools.product(range(5), repeat=3):
        if i in (j, k):
            expected = 0.0  # a degenerate triplet has no angle; it compares 0 with 0
        else:
            expected = float(F.cosine_similarity(x[j] - x[i], x[k] - x[i], dim=0))
        assert cos[i, j, k].item() == pytest.approx(expected, rel=REL64, abs=ABS64)


def test_equals_the_weighted_huber_losses(pair):
    s_out, t_out = pair.outputs()
    losses = rkd(pair, distance_weight=2.0, angle_weight=3.0, ce_weight=0.5)(s_out, t_out, pair.batch)
    s, t = s_out.embedding, t_out.embedding
    assert torch.allclose(losses["rkd_distance"],
                          2.0 * F.smooth_l1_loss(normalized_distances(s), normalized_distances(t)))
    assert torch.allclose(losses["rkd_angle"], 3.0 * F.smooth_l1_loss(triplet_cosines(s), triplet_cosines(t)))
    assert torch.allclose(losses["ce"], 0.5 * F.cross_entropy(s_out.logits, pair.batch.label))


def test_zero_when_student_equals_teacher(pair):
    s_out, t_out = pair.outputs()
    t_out.embedding = s_out.embedding.detach().clone()
    losses = rkd(pair)(s_out, t_out, pair.batch)
    assert losses["rkd_distance"].item() < 1e-8 and losses["rkd_angle"].item() < 1e-8


def _transformed(t, how):
    if how == "scale":
        return t * 3.7
    if how == "shift":
        return t + 5.0
    q, _ = torch.linalg.qr(torch.randn(t.shape[1], t.shape[1], generator=torch.Generator().manual_seed(1),
                                       dtype=t.dtype))
    return t @ q  # a random rotation/reflection


@pytest.mark.parametrize("how", ["scale", "shift", "rotate"])
def test_invariant_to_scaling_shifting_and_rotating_the_teacher(pair64, how):
    pair = pair64
    d = rkd(pair)
    s_out, t_out = pair.outputs()
    reference = d(s_out, t_out, pair.batch)
    t_out.embedding = _transformed(t_out.embedding, how)
    moved = d(s_out, t_out, pair.batch)
    for key in ("rkd_distance", "rkd_angle"):
        assert reference[key].item() > 0
        assert moved[key].item() == pytest.approx(reference[key].item(), rel=REL64), key
