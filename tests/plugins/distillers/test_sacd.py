"""SACD (Han et al. 2022): structure loss over batch graphs, K-hard-negative memory contrast, JSD."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from kdbench.contracts import Batch, ModelOutput
from kdbench_plugins.distillers.sacd import SACD, jensen_shannon
from kdbench_plugins.distillers.sacd_graph import graph_margin_loss
from kdbench_plugins.distillers.sacd_memory import MemoryBank, hardest_negatives, hinge

from .conftest import ABS64, REL64, assert_gradients_flow, make_pair

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def build(pair, seed=0, **options):
    torch.manual_seed(seed)
    return SACD(SACD.Options(**options), pair.ctx).to(pair.dtype)


def permuted(out: ModelOutput, perm) -> ModelOutput:
    return ModelOutput(out.logits[perm], out.embedding[perm], tuple(s[perm] for s in out.stages))


# --------------------------------------------------------------------------- whole method


def test_gradients_reach_student_and_distiller_never_teacher(pair):
    losses = assert_gradients_flow(build(pair), pair)
    assert set(losses) == {"ce", "ce_eeg", "jsd", "structure", "contrast"}


@pytest.mark.parametrize("s_stages,t_stages", [((16, 24), (12, 36, 48, 40)), ((8, 8, 8, 96), (64,))])
def test_differing_widths_and_stage_counts(s_stages, t_stages):
    pair = make_pair(seed=3, s_stages=s_stages, t_stages=t_stages)
    assert pair.ctx.student.embedding != pair.ctx.teacher.embedding
    losses = assert_gradients_flow(build(pair), pair)
    assert all(torch.isfinite(v) for v in losses.values())


def test_ce_terms_are_both_classifiers_cross_entropies(pair):
    distiller = build(pair)
    s_out, t_out = pair.outputs()
    losses = distiller(s_out, t_out, pair.batch)
    assert torch.allclose(losses["ce"], F.cross_entropy(s_out.logits, pair.batch.label))
    eeg_logits = distiller.eeg_classifier(t_out.embedding)
    assert torch.allclose(losses["ce_eeg"], F.cross_entropy(eeg_logits, pair.batch.label))
    assert torch.allclose(losses["jsd"], 1.0 * jensen_shannon(s_out.logits, eeg_logits))


@pytest.mark.parametrize("option,key,modules", [
    ("lambda_d", "structure", ("graph_v", "graph_s")),
    ("lambda_c", "contrast", ("proj_v", "proj_s", "bank_v", "bank_s")),
    ("lambda_jsd", "jsd", ("eeg_classifier",)),
])
def test_zero_weight_removes_the_term_and_its_modules(pair, option, key, modules):
    full, ablated = build(pair), build(pair, **{option: 0.0})
    s_out, t_out = pair.outputs()
    losses = ablated(s_out, t_out, pair.batch)
    assert key not in losses and "ce" in losses
    if option == "lambda_jsd":
        assert "ce_eeg" not in losses  # C_s exists only for the JSD
    state = ablated.state_dict()
    if option == "lambda_d":
        assert not any("prev_graph" in k for k in state)
    for name in modules:
        assert getattr(full, name) is not None
        assert getattr(ablated, name) is None
        assert not any(k.startswith(name + ".") for k in state)
    n_full = sum(p.numel() for p in full.parameters())
    assert sum(p.numel() for p in ablated.parameters()) < n_full


def test_all_weights_zero_is_the_baseline(pair):
    distiller = build(pair, lambda_d=0.0, lambda_c=0.0, lambda_jsd=0.0)
    assert list(distiller.parameters()) == [] and list(distiller.buffers()) == []
    s_out, t_out = pair.outputs()
    assert set(distiller(s_out, t_out, pair.batch)) == {"ce"}


def test_one_way_contrast_builds_only_the_eeg_queue(pair):
    distiller = build(pair, two_way=False)
    assert distiller.bank_v is None and distiller.bank_s is not None
    s_out, t_out = pair.outputs()
    assert torch.isfinite(distiller(s_out, t_out, pair.batch)["contrast"])


def test_whole_loss_is_invariant_to_the_order_of_the_batch(pair64):
    pair = pair64
    a, b = build(pair), build(pair)
    s_out, t_out = pair.outputs()
    perm = torch.randperm(len(pair.batch), generator=torch.Generator().manual_seed(5))
    bp = pair.batch
    shuffled = Batch(bp.student_input[perm], bp.teacher_input[perm], bp.label[perm], bp.index[perm])
    for _ in range(2):  # the second call also exercises the stored negatives (previous graphs, full queues)
        plain, perm_losses = a(s_out, t_out, bp), b(permuted(s_out, perm), permuted(t_out, perm), shuffled)
        for key in plain:
            assert torch.allclose(plain[key], perm_losses[key], rtol=REL64, atol=ABS64), key


def test_state_survives_a_checkpoint(pair):
    first = build(pair)
    s_out, t_out = pair.outputs()
    first(s_out, t_out, pair.batch)  # fills the queues and the stored graph vectors
    second = build(pair, seed=1)
    second.load_state_dict(first.state_dict())
    assert int(second.bank_s.ptr) == len(pair.batch) and bool(second.has_prev_graph)
    x, y = first(s_out, t_out, pair.batch), second(s_out, t_out, pair.batch)
    assert all(torch.allclose(x[k], y[k]) for k in x)


# --------------------------------------------------------------------------- L_D: graphs


def test_graph_vectors_are_1024_d_and_permutation_invariant(pair64):
    pair = pair64
    distiller = build(pair)
    s_out, t_out = pair.outputs()
    perm = torch.randperm(len(pair.batch), generator=torch.Generator().manual_seed(1))
    for graph, x in ((distiller.graph_v, s_out.embedding), (distiller.graph_s, t_out.embedding)):
        o = graph(x)
        assert o.shape == (1024,)
        assert torch.allclose(o, graph(x[perm]), rtol=REL64, atol=ABS64)
        assert not torch.allclose(o, graph(x[:-1]), atol=1e-4)  # …but it does depend on which samples


def test_graph_margin_loss_pulls_positives_and_pushes_negatives():
    v = torch.zeros(4)
    far = torch.tensor([2.0, 0.0, 0.0, 0.0])                 # squared distance 4 ≥ 1 + γ
    near = torch.tensor([0.5, 0.0, 0.0, 0.0])                # squared distance 0.25
    assert graph_margin_loss(v, v, [], 1.0) == 0
    assert graph_margin_loss(v, near, [], 1.0) == pytest.approx(0.25)          # y=+1, γ=1: d
    assert graph_margin_loss(v, v, [(v, far), (far, v)], 1.0) == 0
    # y=−1: relu(γ + 1 − d) = 1.75 for each negative; balanced mean: ½(0 + 1.75)
    assert graph_margin_loss(v, v, [(v, near), (near, v)], 1.0) == pytest.approx(0.875)


def test_structure_term_uses_the_previous_batch_as_negatives(pair):
    distiller = build(pair)
    s_out, t_out = pair.outputs()
    o_v, o_s = distiller.graph_v(s_out.embedding), distiller.graph_s(t_out.embedding)
    first = distiller(s_out, t_out, pair.batch)["structure"]
    assert torch.allclose(first, 0.5 * ((o_v - o_s) ** 2).sum())       # no negatives yet
    other = make_pair(seed=7)
    s2, t2 = other.student(other.batch.student_input).detach(), other.teacher(other.batch.teacher_input).detach()
    distiller(ModelOutput(s2.logits, s2.embedding), ModelOutput(t2.logits, t2.embedding), other.batch)
    p_v, p_s = distiller.prev_graph_v.clone(), distiller.prev_graph_s.clone()
    second = distiller(s_out, t_out, pair.batch)["structure"]
    d = lambda a, b: ((a - b) ** 2).sum()  # noqa: E731
    expected = 0.5 * (d(o_v, o_s) + 0.5 * (F.relu(2 - d(o_v, p_s)) + F.relu(2 - d(p_v, o_s))))
    assert torch.allclose(second, 0.5 * expected, rtol=1e-5)


# --------------------------------------------------------------------------- L_C: memory banks


def test_bank_is_a_fifo_queue_of_256_with_labels(pair):
    bank = build(pair).bank_s
    width = pair.ctx.teacher.embedding
    assert bank.size == 256 and bank.features.shape == (256, width)
    assert (bank.labels == -1).all() and int(bank.ptr) == 0
    ids = torch.arange(272)
    for chunk in ids.split(16):  # 17 batches of 16: the first 16 entries are overwritten
        bank.push(chunk[:, None].float().expand(-1, width), chunk % 5)
    assert int(bank.ptr) == 16
    stored = bank.features[:, 0].long()
    assert torch.equal(stored[:16], torch.arange(256, 272)) and torch.equal(stored[16:], torch.arange(16, 256))
    assert torch.equal(bank.labels, stored % 5)
    bank.push(torch.full((250, width), -1.0), torch.zeros(250, dtype=torch.long))  # wraps: slots 16..255, 0..9
    assert int(bank.ptr) == 10
    assert torch.equal(bank.features[10:16, 0].long(), torch.arange(266, 272))  # the 6 youngest survivors


def test_bank_keeps_the_tail_of_an_oversized_batch():
    bank = MemoryBank(4, 1)
    bank.push(torch.arange(6.0)[:, None], torch.arange(6))
    assert sorted(bank.features[:, 0].tolist()) == [2.0, 3.0, 4.0, 5.0] and int(bank.ptr) == 0


def brute_force_negatives(anchors, labels, features, stored_labels, k):
    chosen = []
    for a, y in zip(anchors, labels):
        candidates = [(float(a @ f), slot) for slot, (f, z) in enumerate(zip(features, stored_labels))
                      if z >= 0 and z != y]
        chosen.append(sorted(candidates, reverse=True)[:k])
    return chosen


@pytest.mark.parametrize("filled", [256, 40])
def test_selected_negatives_are_the_k_most_similar_of_other_classes(filled):
    gen = torch.Generator().manual_seed(0)
    bank = MemoryBank(256, 16).double()
    f64 = torch.float64
    bank.push(F.normalize(torch.randn(filled, 16, generator=gen, dtype=f64), dim=1),
              torch.randint(0, 5, (filled,), generator=gen))
    anchors = F.normalize(torch.randn(8, 16, generator=gen, dtype=f64), dim=1)
    labels = torch.randint(0, 5, (8,), generator=gen)
    sim, valid, slot = hardest_negatives(anchors, labels, bank.features, bank.labels, 64)
    expected = brute_force_negatives(anchors, labels, bank.features, bank.labels, 64)
    for n in range(8):
        assert int(valid[n].sum()) == len(expected[n])
        assert set(slot[n][valid[n]].tolist()) == {s for _, s in expected[n]}
        assert torch.allclose(sim[n][valid[n]], torch.tensor([v for v, _ in expected[n]], dtype=f64),
                              rtol=REL64, atol=ABS64)
        assert (bank.labels[slot[n][valid[n]]] != labels[n]).all()
    if filled == 40:
        assert int(valid.sum(1).max()) < 40  # fewer than K entries of other classes: only those are used


def test_hinge_is_zero_when_positives_beat_negatives_by_the_margin():
    pos = torch.tensor([1.0, 0.9])
    valid = torch.ones(2, 3, dtype=torch.bool)
    assert hinge(pos, pos[:, None] - 0.2 - torch.rand(2, 3), valid, 0.2) == 0
    neg = torch.tensor([[0.85, 0.5, 0.9], [0.0, 0.8, 0.75]])
    # violations: 0.2 − 1 + 0.85 = 0.05, 0.1; 0.2 − 0.9 + 0.8 = 0.1, 0.05 → sum 0.3 over 6 pairs
    assert hinge(pos, neg, valid, 0.2) == pytest.approx(0.3 / 6)
    assert hinge(pos, neg, valid, 0.2, "sum") == pytest.approx(0.3)
    masked = valid.clone()
    masked[0, 2] = False  # an invalid (empty / same-class) slot neither counts nor contributes
    assert hinge(pos, neg, masked, 0.2) == pytest.approx(0.2 / 5)


def test_contrast_term_vanishes_for_class_aligned_features():
    pair = make_pair(batch=10, s_stages=(16, 5), t_stages=(12, 5), labels=[0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    distiller = build(pair, feature_dim=5, lambda_d=0.0, lambda_jsd=0.0)
    for layer in (distiller.proj_v, distiller.proj_s):
        layer.weight.data.copy_(torch.eye(5))
        layer.bias.data.zero_()
    onehot = F.one_hot(pair.batch.label, 5).float()
    out = ModelOutput(torch.zeros(10, 5), onehot)
    # each modality's positive has cosine 1, every other-class entry cosine 0: 1 − 0 ≥ α, so no violation
    assert distiller(out, out, pair.batch)["contrast"] == 0
    # tilt each EEG feature towards the next class: its positive cosine drops to 0.64 while the EEG entry of
    # the previous class reaches 0.77 for the video anchor, a violation of the margin
    tilted = F.normalize(onehot + 1.2 * torch.roll(onehot, 1, dims=1), dim=1)
    value = distiller(out, ModelOutput(torch.zeros(10, 5), tilted), pair.batch)["contrast"]
    assert value > 0


# --------------------------------------------------------------------------- queue contents


def test_queues_hold_the_batch_embeddings_and_change_only_in_training(pair):
    distiller = build(pair)
    s_out, t_out = pair.outputs()
    distiller(s_out, t_out, pair.batch)
    n = len(pair.batch)
    assert torch.equal(distiller.bank_s.features[:n], t_out.embedding)
    assert torch.equal(distiller.bank_v.features[:n], s_out.embedding.detach())
    assert torch.equal(distiller.bank_v.labels[:n], pair.batch.label) and (distiller.bank_v.labels[n:] == -1).all()
    assert not distiller.bank_v.features.requires_grad
    state = copy.deepcopy(distiller.state_dict())
    distiller.eval()
    distiller(s_out, t_out, pair.batch)
    assert all(torch.equal(v, distiller.state_dict()[k]) for k, v in state.items())


def test_negatives_are_scored_with_the_current_projection(pair):
    """Keys are the live projection of the stored embeddings: the projection also learns from negatives."""
    distiller = build(pair, lambda_d=0.0, lambda_jsd=0.0, contrast_margin=2.0)  # α = 2: every pair violates
    s_out, t_out = pair.outputs()
    distiller(s_out, t_out, pair.batch)["contrast"].backward()
    grad_with = distiller.proj_s.weight.grad.clone()
    distiller.zero_grad()
    f_v = F.normalize(distiller.proj_v(s_out.embedding), dim=1).detach()
    f_s = F.normalize(distiller.proj_s(t_out.embedding), dim=1)
    keys_s = F.normalize(distiller.proj_s(distiller.bank_s.features), dim=1).detach()  # keys as constants
    neg, valid, _ = hardest_negatives(f_v, pair.batch.label, keys_s, distiller.bank_s.labels, 64)
    keys_v = F.normalize(distiller.proj_v(distiller.bank_v.features), dim=1).detach()
    neg2, valid2, _ = hardest_negatives(f_s, pair.batch.label, keys_v, distiller.bank_v.labels, 64)
    pos = (f_v * f_s).sum(1)
    (hinge(pos, neg, valid, 2.0) + hinge(pos, neg2, valid2, 2.0)).backward()
    assert not torch.allclose(grad_with, distiller.proj_s.weight.grad)


# --------------------------------------------------------------------------- JSD


def test_jsd_is_symmetric_zero_on_equal_inputs_and_at_most_ln2():
    gen = torch.Generator().manual_seed(0)
    p, q = (torch.randn(64, 5, generator=gen, dtype=torch.float64) * 3 for _ in range(2))
    assert torch.allclose(jensen_shannon(p, q), jensen_shannon(q, p), rtol=REL64, atol=ABS64)
    assert jensen_shannon(p, p).abs() < ABS64  # 0 up to the rounding of log M = log P + log 2 − log 2
    assert 0 < jensen_shannon(p, q) <= math.log(2)
    disjoint = jensen_shannon(torch.tensor([[60.0, 0.0]]), torch.tensor([[0.0, 60.0]]))
    assert disjoint <= math.log(2) and disjoint == pytest.approx(math.log(2), abs=1e-6)
    pp, qq = F.softmax(p, 1), F.softmax(q, 1)
    m = (pp + qq) / 2
    manual = 0.5 * ((pp * (pp / m).log()).sum(1) + (qq * (qq / m).log()).sum(1))
    assert torch.allclose(jensen_shannon(p, q), manual.mean(), rtol=REL64, atol=ABS64)


def test_unscored_keys_and_anchors_have_no_known_class():
    """An unscored key is a negative for every anchor; an unscored anchor takes any filled slot; empty slots never."""
    from kdbench.contracts import UNLABELLED

    keys = torch.eye(6, dtype=torch.float64)
    key_labels = torch.tensor([0, 1, UNLABELLED, 0, UNLABELLED, -1])   # the last slot is empty
    anchors = torch.ones(2, 6, dtype=torch.float64)
    _, valid, slot = hardest_negatives(anchors, torch.tensor([0, UNLABELLED]), keys, key_labels, 6)
    chosen = [set(slot[i][valid[i]].tolist()) for i in range(2)]
    assert chosen[0] == {1, 2, 4}              # class 0's anchor: the other class and the unscored keys
    assert chosen[1] == {0, 1, 2, 3, 4}        # the unscored anchor: every filled slot
