"""CMC (Tian et al., ECCV 2020) as a distiller; the shared bank/sampler/Z properties are tested in test_crd.py."""

import copy

import pytest
import torch
import torch.nn.functional as F

from kdbench_plugins.distillers.contrast import ContrastMemory, softmax_contrast
from kdbench_plugins.distillers.cmc import CMC

from .conftest import ABS64, REL64, assert_gradients_flow, make_pair, state_dict_round_trip


def test_gradients_reach_the_student_and_both_heads_never_the_teacher(pair):
    losses = assert_gradients_flow(CMC(CMC.Options(), pair.ctx), pair)
    assert set(losses) == {"ce", "cmc"}
    assert_gradients_flow(CMC(CMC.Options(objective="nce"), make_pair().ctx), make_pair())


def test_different_widths_and_stage_counts():
    pair = make_pair(s_stages=(40, 8), t_stages=(12, 36, 48, 20))
    distiller = CMC(CMC.Options(), pair.ctx)
    assert distiller.embed_s.linear.in_features == 8 and distiller.embed_t.linear.in_features == 20
    assert_gradients_flow(distiller, pair)


def test_cmc_uses_other_samples_and_caps_k(pair):
    distiller = CMC(CMC.Options(), pair.ctx)
    assert distiller.memory.negatives == "other-samples" and distiller.memory.k == 63
    assert "memory.labels" not in distiller.state_dict()


def test_softmax_objective_equals_the_two_view_formula(pair64):
    pair = pair64
    distiller = CMC(CMC.Options(temperature=0.1), pair.ctx).double()
    reference = copy.deepcopy(distiller)
    s_out, t_out = pair.outputs()
    index = pair.batch.index
    torch.manual_seed(3)
    losses = distiller(s_out, t_out, pair.batch)
    torch.manual_seed(3)
    idx = torch.cat([index[:, None], reference.memory.sample(index)], dim=1)
    z_s, z_t = reference.embed_s(s_out.embedding), reference.embed_t(t_out.embedding)
    manual = 0.0
    for anchor, bank in ((z_s, reference.memory.bank_teacher), (z_t, reference.memory.bank_student)):
        logits = torch.einsum("bkd,bd->bk", bank[idx], anchor) / 0.1
        manual = manual + (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()
    assert torch.allclose(losses["cmc"], manual, rtol=REL64, atol=ABS64)
    assert torch.allclose(losses["ce"], F.cross_entropy(s_out.logits, pair.batch.label))


def test_nce_objective_keeps_a_fixed_z(pair):
    distiller = CMC(CMC.Options(objective="nce"), pair.ctx)
    s_out, t_out = pair.outputs()
    distiller(s_out, t_out, pair.batch)
    z = distiller.critic_s.z.item()
    assert z > 0
    other = make_pair(seed=2)
    distiller(*other.outputs(), other.batch)
    assert distiller.critic_s.z.item() == z
    assert "critic_s.z" not in CMC(CMC.Options(), pair.ctx).state_dict()


def test_moving_the_student_toward_the_teacher_lowers_the_loss():
    torch.manual_seed(0)
    memory = ContrastMemory(num_train=300, dim=16, num_negatives=128, momentum=0.5)
    index = torch.tensor([1, 50, 120, 299])
    z_s, z_t = F.normalize(torch.randn(4, 16), dim=1), F.normalize(torch.randn(4, 16), dim=1)
    memory.bank_teacher[index] = z_t

    def loss(anchor):
        torch.manual_seed(1)
        sim_s, _ = copy.deepcopy(memory)(anchor, z_t, index, torch.zeros(4, dtype=torch.long))
        return softmax_contrast(sim_s, 0.07)

    assert loss(F.normalize(z_s + 0.5 * (z_t - z_s), dim=1)) < loss(z_s)


def test_banks_move_toward_the_new_embeddings(pair):
    distiller = CMC(CMC.Options(), pair.ctx)
    before = distiller.memory.bank_student.clone()
    s_out, t_out = pair.outputs()
    distiller(s_out, t_out, pair.batch)
    idx = pair.batch.index
    expected = F.normalize(0.5 * before[idx] + 0.5 * distiller.embed_s(s_out.embedding).detach(), dim=1)
    assert torch.allclose(distiller.memory.bank_student[idx], expected, atol=1e-6)


@pytest.mark.parametrize("objective", ["softmax", "nce"])
def test_state_dict_round_trip_gives_identical_losses(objective):
    pair, options = make_pair(seed=6), CMC.Options(objective=objective)
    _, a, b = state_dict_round_trip(CMC, options, pair, "memory.bank_teacher")
    assert all(torch.equal(a[k], b[k]) for k in ("ce", "cmc"))
