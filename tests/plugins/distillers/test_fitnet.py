"""FitNet (Romero et al. 2015): hint regression, stage choice, and the two-stage schedule."""

import pytest
import torch
import torch.nn.functional as F

from kdbench.errors import KdbenchError
from kdbench_plugins.distillers.fitnet import FitNet

from .conftest import ABS64, REL64, assert_gradients_flow, make_pair


def build(pair, **options):
    torch.manual_seed(1)
    return FitNet(FitNet.Options(**options), pair.ctx).to(pair.dtype)


def test_gradients_reach_student_and_regressor_only(pair):
    losses = assert_gradients_flow(build(pair), pair)
    assert set(losses) == {"ce", "hint"}


@pytest.mark.parametrize("options", [{}, {"hint": "embedding"}, {"student_stage": -1, "teacher_stage": 0}])
def test_works_with_different_widths_and_stage_counts(options):
    pair = make_pair(s_stages=(16, 24), t_stages=(12, 36, 40, 48))
    assert_gradients_flow(build(pair, **options), pair)


def test_middle_stages_are_chosen_per_network():
    pair = make_pair(s_stages=(8, 16, 24, 32, 40), t_stages=(12, 36, 40, 48))
    d = build(pair)
    assert (d.student_stage, d.teacher_stage) == (2, 1)  # (5 - 1) // 2 and (4 - 1) // 2
    assert (d.regressor.in_features, d.regressor.out_features) == (24, 36)
    d = build(pair, hint="embedding")
    assert (d.student_stage, d.teacher_stage) == (None, None)
    assert (d.regressor.in_features, d.regressor.out_features) == (40, 48)


def test_stage_index_out_of_range_is_refused(pair):
    with pytest.raises(KdbenchError, match="student_stage=3"):
        build(pair, student_stage=3)


def test_hint_is_the_weighted_mse_of_the_regressed_feature(pair64):
    pair = pair64
    d = build(pair, hint_weight=7.0)
    s_out, t_out = pair.outputs()
    losses = d(s_out, t_out, pair.batch)
    manual = 7.0 * ((d.regressor(s_out.stages[1]) - t_out.stages[1]) ** 2).mean()
    assert torch.allclose(losses["hint"], manual, rtol=REL64, atol=ABS64)
    assert torch.allclose(losses["ce"], F.cross_entropy(s_out.logits, pair.batch.label))


def test_hint_vanishes_when_the_regressor_maps_the_student_onto_the_hint(pair):
    d = build(pair)
    s_out, t_out = pair.outputs()
    stages = list(t_out.stages)
    with torch.no_grad():
        stages[1] = d.regressor(s_out.stages[1])  # the hint is exactly what the regressor predicts
    t_out.stages = tuple(stages)
    assert d(s_out, t_out, pair.batch)["hint"].item() < 1e-10
    assert build(pair)(*pair.outputs(), pair.batch)["hint"].item() > 1e-3


def test_two_stage_schedule_switches_at_hint_epochs():
    pair = make_pair(epochs=10)
    d = build(pair, schedule="two-stage", hint_epochs=3)
    for epoch in range(10):
        d.on_epoch_start(epoch)
        for p in [*pair.student.parameters(), *d.parameters()]:
            p.grad = None
        losses = d(*pair.outputs(), pair.batch)
        assert set(losses) == {"ce", "hint", "kd"}
        if epoch < 3:  # stage 1: hint only
            assert losses["ce"].item() == 0 and losses["kd"].item() == 0 and losses["hint"].item() > 0
        else:          # stage 2: CE + λ·KD, the regressor is idle
            assert losses["hint"].item() == 0 and losses["ce"].item() > 0 and losses["kd"].item() > 0
        sum(losses.values()).backward()
        # stage 1 trains only up to the guided layer (stage index 1 = blocks[0..1]) plus the regressor
        assert (pair.student.fc.weight.grad is None) == (epoch < 3)
        assert (pair.student.blocks[2][0].weight.grad is None) == (epoch < 3)
        assert pair.student.blocks[1][0].weight.grad is not None
        assert (d.regressor.weight.grad is None) == (epoch >= 3)


def test_stage_two_weight_anneals_linearly_from_4_to_1():
    pair = make_pair(epochs=10, dtype=torch.float64)
    d = build(pair, schedule="two-stage", hint_epochs=4)
    weights = []
    for epoch in range(4, 10):
        d.on_epoch_start(epoch)
        weights.append(d.kd_weight())
    assert weights == pytest.approx([4.0, 3.4, 2.8, 2.2, 1.6, 1.0])
    s_out, t_out = pair.outputs()
    d.on_epoch_start(6)
    t = 3.0
    manual = F.kl_div(F.log_softmax(s_out.logits / t, 1), F.softmax(t_out.logits / t, 1), reduction="batchmean")
    assert torch.allclose(d(s_out, t_out, pair.batch)["kd"], 2.8 * manual, rtol=REL64, atol=ABS64)


def test_two_stage_needs_a_classification_stage():
    with pytest.raises(KdbenchError, match="hint_epochs"):
        build(make_pair(epochs=5), schedule="two-stage", hint_epochs=5)
