"""CRD (Tian et al., ICLR 2020) and the memory-bank machinery it shares with CMC (plugins/distillers/contrast.py)."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from kdbench.errors import KdbenchError
from kdbench_plugins.distillers import contrast
from kdbench_plugins.distillers.contrast import ContrastMemory, NCECritic
from kdbench_plugins.distillers.crd import CRD

from .conftest import ABS64, REL64, assert_gradients_flow, make_pair, state_dict_round_trip


def unit(*shape, dtype=torch.float32):
    return F.normalize(torch.randn(*shape, dtype=dtype), dim=-1)


def test_gradients_reach_the_student_and_both_heads_never_the_teacher(pair):
    losses = assert_gradients_flow(CRD(CRD.Options(), pair.ctx), pair)
    assert set(losses) == {"ce", "crd"}
    with_kd = assert_gradients_flow(CRD(CRD.Options(kd_weight=1.0), make_pair().ctx), make_pair())
    assert set(with_kd) == {"ce", "crd", "kd"} and with_kd["kd"] > 0


def test_different_widths_and_stage_counts():
    pair = make_pair(s_stages=(16,), t_stages=(8, 16, 64))
    distiller = CRD(CRD.Options(), pair.ctx)
    assert distiller.embed_s.linear.in_features == 16 and distiller.embed_t.linear.in_features == 64
    assert_gradients_flow(distiller, pair)


def test_k_is_capped_by_the_training_set_size(pair):
    distiller = CRD(CRD.Options(), pair.ctx)  # num_train = 64 < 16384
    assert distiller.memory.k == 63
    s_out, t_out = pair.outputs()
    sim_s, sim_t = distiller.memory(distiller.embed_s(s_out.embedding), distiller.embed_t(t_out.embedding),
                                    pair.batch.index, pair.batch.label)
    assert sim_s.shape == sim_t.shape == (8, 64)
    assert CRD(CRD.Options(num_negatives=10), pair.ctx).memory.k == 10


def test_negatives_are_uniform_over_other_samples_and_never_the_anchor():
    torch.manual_seed(0)
    memory = ContrastMemory(num_train=7, dim=4, num_negatives=6, momentum=0.5)
    index = torch.arange(7)
    draws = torch.cat([memory.sample(index) for _ in range(200)], dim=1)  # (7, 1200)
    assert not (draws == index[:, None]).any()
    for i in range(7):  # every other sample is drawn, roughly equally often (1200/6 = 200 each)
        counts = torch.bincount(draws[i], minlength=7)
        assert counts[i] == 0 and (counts[torch.arange(7) != i] > 120).all()


def test_negative_sampling_follows_the_global_rng():
    memory = ContrastMemory(num_train=50, dim=4, num_negatives=20, momentum=0.5)
    index = torch.tensor([3, 9])
    torch.manual_seed(11)
    a = memory.sample(index)
    torch.manual_seed(11)
    assert torch.equal(a, memory.sample(index))
    assert not torch.equal(a, memory.sample(index))


def test_other_classes_negatives_never_share_a_known_label():
    torch.manual_seed(0)
    n, true_label = 12, torch.arange(12) % 3
    memory = ContrastMemory(num_train=n, dim=4, num_negatives=40, momentum=0.5, negatives="other-classes")
    assert (memory.labels == -1).all()
    seen = torch.tensor([0, 1, 2, 4])
    memory(unit(4, 4), unit(4, 4), seen, true_label[seen])
    assert memory.labels[seen].tolist() == true_label[seen].tolist() and (memory.labels[[3, 5, 6]] == -1).all()
    # before every label is known: never a sample known to share the anchor's class, unseen ones are eligible
    negs = memory.sample(seen, true_label[seen])
    known_same = (memory.labels[negs] == true_label[seen][:, None])
    assert not known_same.any()
    assert (memory.labels[negs] == -1).any()
    # once every label is known: negatives come from other classes only
    memory(unit(n, 4), unit(n, 4), torch.arange(n), true_label)
    index = torch.arange(n)
    negs = memory.sample(index, true_label)
    assert (true_label[negs] != true_label[:, None]).all()
    assert not (negs == index[:, None]).any()


def test_other_classes_refuses_a_single_class_training_set():
    memory = ContrastMemory(num_train=4, dim=4, num_negatives=3, momentum=0.5, negatives="other-classes")
    with pytest.raises(KdbenchError, match="other-classes"):  # the whole (4-sample) set is seen, all class 0
        memory(unit(4, 4), unit(4, 4), torch.arange(4), torch.zeros(4, dtype=torch.long))


def test_banks_update_by_momentum_at_the_batch_indices_only(pair):
    distiller = CRD(CRD.Options(), pair.ctx)
    before_s, before_t = distiller.memory.bank_student.clone(), distiller.memory.bank_teacher.clone()
    assert torch.allclose(before_s.norm(dim=1), torch.ones(64))  # initialised on the unit sphere
    s_out, t_out = pair.outputs()
    distiller(s_out, t_out, pair.batch)
    idx = pair.batch.index
    rest = torch.ones(64, dtype=torch.bool)
    rest[idx] = False
    for before, after, z in ((before_s, distiller.memory.bank_student, distiller.embed_s(s_out.embedding)),
                             (before_t, distiller.memory.bank_teacher, distiller.embed_t(t_out.embedding))):
        expected = F.normalize(0.5 * before[idx] + 0.5 * z.detach(), dim=1)
        assert torch.allclose(after[idx], expected, atol=1e-6)
        assert torch.equal(after[rest], before[rest])
        assert not torch.allclose(after[idx], before[idx])


def test_z_is_estimated_from_the_first_batch_then_fixed():
    torch.manual_seed(0)
    critic = NCECritic(num_train=500, temperature=0.07).double()
    assert critic.z.item() < 0
    first = unit(8, 33, 16, dtype=torch.float64).sum(-1) / 4  # any scores in [-1, 1]
    critic(first)
    expected = torch.exp(first / 0.07).mean().item() * 500
    assert critic.z.item() == pytest.approx(expected, rel=REL64)
    z = critic.z.item()
    critic(unit(8, 33, 16, dtype=torch.float64).sum(-1) / 2)
    assert critic.z.item() == z


def test_z_of_the_distiller_survives_later_batches(pair):
    distiller = CRD(CRD.Options(), pair.ctx)
    s_out, t_out = pair.outputs()
    distiller(s_out, t_out, pair.batch)
    z = (distiller.critic_s.z.item(), distiller.critic_t.z.item())
    assert min(z) > 0
    other = make_pair(seed=3)
    distiller(*other.outputs(), other.batch)
    assert (distiller.critic_s.z.item(), distiller.critic_t.z.item()) == z


def test_nce_equals_the_reference_formula():
    torch.manual_seed(0)
    n, k, t = 1000, 31, 0.07
    sims = unit(6, k + 1, 8, dtype=torch.float64)[..., 0]
    critic = NCECritic(num_train=n, temperature=t).double()
    critic.z.fill_(123.0)
    p = torch.exp(sims / t) / 123.0
    kpn = k / n
    manual = -(torch.log(p[:, 0] / (p[:, 0] + kpn)).sum() + torch.log(kpn / (p[:, 1:] + kpn)).sum()) / 6
    assert torch.allclose(critic(sims), manual, rtol=REL64, atol=ABS64)


def test_moving_the_student_toward_the_teacher_lowers_the_loss():
    torch.manual_seed(0)
    memory = ContrastMemory(num_train=200, dim=16, num_negatives=64, momentum=0.5)
    index = torch.tensor([5, 17, 42, 99])
    z_s, z_t = unit(4, 16), unit(4, 16)
    memory.bank_teacher[index] = z_t  # the teacher's embedding is the student anchor's positive
    critic = NCECritic(num_train=200, temperature=0.07)
    critic.z.fill_(float(torch.exp(torch.tensor(1.0)) * 200))

    def loss(anchor):
        torch.manual_seed(1)  # same negatives for both
        sim_s, _ = copy.deepcopy(memory)(anchor, z_t, index, torch.zeros(4, dtype=torch.long))
        log_p = sim_s / 0.07 - math.log(critic.z.item())
        positive = F.softplus(math.log(64 / 200) - log_p[:, 0]).mean()
        return critic(sim_s), positive

    (full, pos), (full_moved, pos_moved) = loss(z_s), loss(F.normalize(z_s + 0.5 * (z_t - z_s), dim=1))
    assert pos_moved < pos
    assert full_moved < full


def test_product_and_gather_paths_agree_in_values_gradients_and_updates():
    torch.manual_seed(0)
    memory = ContrastMemory(num_train=30, dim=8, num_negatives=5, momentum=0.5).double()
    index = torch.tensor([2, 7, 11])
    anchors, results = (unit(3, 8, dtype=torch.float64), unit(3, 8, dtype=torch.float64)), []
    for product in (True, False):
        mem = copy.deepcopy(memory)
        z_s, z_t = (a.clone().requires_grad_() for a in anchors)
        torch.manual_seed(3)
        idx = torch.cat([index[:, None], mem.sample(index)], dim=1)
        sim_s = contrast.scores(mem.bank_teacher, z_s, idx, product)
        sim_t = contrast.scores(mem.bank_student, z_t, idx, product)
        mem.update(z_s, z_t, index, in_place=not product)
        (sim_s.exp().sum() + (2 * sim_t).exp().sum()).backward()  # backward after the banks were updated
        results.append((sim_s.detach(), sim_t.detach(), z_s.grad, z_t.grad, mem.bank_student, mem.bank_teacher))
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=REL64, atol=ABS64)
    assert not contrast.use_product(10**6, 64, 16385, 128) and contrast.use_product(50_000, 64, 16385, 128)


@pytest.mark.parametrize("negatives", ["other-samples", "other-classes"])
def test_state_dict_round_trip_gives_identical_losses(negatives):
    pair = make_pair(seed=5)
    state, a, b = state_dict_round_trip(CRD, CRD.Options(negatives=negatives), pair, "memory.bank_student")
    buffers = {"memory.bank_student", "memory.bank_teacher", "critic_s.z", "critic_t.z"}
    assert buffers <= set(state)
    assert ("memory.labels" in state) == (negatives == "other-classes")
    assert state["critic_s.z"] > 0
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_other_classes_lets_an_unscored_anchor_take_any_other_sample():
    from kdbench.contracts import UNLABELLED

    torch.manual_seed(0)
    n = 10
    label = torch.tensor([0, 1, UNLABELLED, 0, 1, UNLABELLED, 0, 1, 0, 1])
    memory = ContrastMemory(num_train=n, dim=4, num_negatives=200, momentum=0.5, negatives="other-classes")
    memory(unit(n, 4), unit(n, 4), torch.arange(n), label)
    negs = torch.cat([memory.sample(torch.tensor([2, 0]), torch.tensor([UNLABELLED, 0])) for _ in range(30)], 1)
    assert set(negs[0].tolist()) == set(range(n)) - {2}          # any sample but itself, unscored ones included
    assert not (label[negs[1]] == 0).any() and (label[negs[1]] == UNLABELLED).any()
