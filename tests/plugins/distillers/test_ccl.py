"""CCL (Chen et al., CVPR 2021), as released: composition, label-aware contrast, symmetric KL, two-side routing."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdbench.contracts import Batch, ModelOutput
from kdbench_plugins.distillers.ccl import CCL, label_contrast, same_label_mask, symmetric_kl

from .conftest import ABS64, REL64, assert_gradients_flow, make_pair, one_step, total

DISTILL_TERMS = ("ce_composition", "contrast_student_composition", "contrast_student_teacher",
                 "contrast_composition_teacher", "sym_kl")


def build(pair, **options):
    torch.manual_seed(1)
    return CCL(CCL.Options(**options), pair.ctx).to(pair.dtype)


def grads(params):
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]


# --------------------------------------------------------------------------- contract


def test_returns_the_named_terms_and_gradients_reach_student_and_composition(pair):
    losses = assert_gradients_flow(build(pair), pair)
    assert set(losses) == {"ce", *DISTILL_TERMS}
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("s_stages,t_stages", [((16, 24, 48), (12, 36, 48)),   # equal embedding widths
                                               ((16, 32), (12, 24, 36, 64))])  # other widths, 2 vs 4 stages
def test_works_for_equal_and_different_widths_and_stage_counts(s_stages, t_stages):
    pair = make_pair(s_stages=s_stages, t_stages=t_stages)
    distiller = build(pair)
    assert isinstance(distiller.student_proj, torch.nn.Identity) == (s_stages[-1] == t_stages[-1])
    assert distiller.mix.in_features == 2 * t_stages[-1] and distiller.mix.out_features == t_stages[-1]
    assert_gradients_flow(distiller, pair)


# --------------------------------------------------------------------------- the contrastive loss


def test_positive_pairs_are_exactly_the_same_label_pairs():
    label = torch.tensor([0, 1, 0, 2, 1])
    expected = torch.tensor([[1, 0, 1, 0, 0],
                             [0, 1, 0, 0, 1],
                             [1, 0, 1, 0, 0],
                             [0, 0, 0, 1, 0],
                             [0, 1, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(same_label_mask(label), expected)


def test_contrast_equals_the_released_formula_written_as_loops():
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(6, 5, generator=gen, dtype=torch.float64), torch.randn(6, 5, generator=gen, dtype=torch.float64)
    label = torch.tensor([0, 1, 0, 2, 1, 1])
    tau = 0.5
    rows = []
    for i in range(6):
        cos = [float(F.cosine_similarity(x[i], y[j], dim=0)) for j in range(6)]
        z = sum(math.exp(c / tau) for c in cos)
        p = [math.exp(c / tau) / z for c in cos]
        pos = [-math.log(p[j]) for j in range(6) if label[j] == label[i]]
        neg = [-math.log(1 - p[j]) for j in range(6) if label[j] != label[i]]
        rows.append(sum(pos) / len(pos) + sum(neg) / len(neg))
    assert float(label_contrast(x, y, label, tau)) == pytest.approx(sum(rows) / 6, rel=1e-9)
    # the direction matters: anchors x against candidates y is not y against x
    assert float(label_contrast(y, x, label, tau)) != pytest.approx(sum(rows) / 6, rel=1e-6)


@pytest.mark.parametrize("labels", [[0, 0, 1, 2, 2, 3, 3, 4],   # classes 1 and 4 appear once
                                    [2, 2, 2, 2, 2, 2],         # one class: no negatives at all
                                    [3]])                       # a single sample
def test_finite_when_a_class_appears_once_or_negatives_are_missing(labels):
    pair = make_pair(labels=labels)
    losses = assert_gradients_flow(build(pair), pair)
    assert all(torch.isfinite(v) for v in losses.values()), losses


def test_contrast_rewards_class_structure():
    """Same-label embeddings pointing together, other labels apart, give a lower loss than a random layout."""
    label = torch.tensor([0, 0, 1, 1, 2, 2])
    clustered = F.one_hot(label, 4).float() + 0.01 * torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    scattered = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    assert label_contrast(clustered, clustered, label, 0.5) < label_contrast(scattered, scattered, label, 0.5)


# --------------------------------------------------------------------------- symmetric KL


def test_symmetric_kl_is_symmetric_zero_on_equal_predictions_and_the_sum_of_both_kls():
    gen = torch.Generator().manual_seed(4)
    p, q = torch.randn(7, 5, generator=gen, dtype=torch.float64), torch.randn(7, 5, generator=gen, dtype=torch.float64)
    assert float(symmetric_kl(p, q)) == pytest.approx(float(symmetric_kl(q, p)), rel=REL64)
    assert float(symmetric_kl(p, p)) == 0.0  # every term is 0·0
    assert float(symmetric_kl(p, q)) > 0.01
    kl = lambda a, b: F.kl_div(F.log_softmax(b, 1), F.log_softmax(a, 1), reduction="batchmean", log_target=True)
    assert float(symmetric_kl(p, q)) == pytest.approx(float(kl(p, q) + kl(q, p)), rel=REL64)


def test_sym_kl_term_is_the_released_jsd_loss_with_weight_one_half(pair64):
    pair = pair64
    distiller = build(pair)
    s_out, t_out = pair.outputs()
    losses = distiller(s_out, t_out, pair.batch)
    with torch.no_grad():
        q = F.softmax(distiller.classifier(distiller.compose(t_out.embedding, distiller.student_proj(s_out.embedding))), 1)
        p = F.softmax(s_out.logits, 1)
        released = ((p * torch.log(p / q + 1e-10)).sum(1) + (q * torch.log(q / p + 1e-10)).sum(1)).mean() * 0.5
    # the released 1e-10 inside each log adds p·1e-10·q/p per term, i.e. ½·(Σq + Σp)·1e-10 = 1e-10 per
    # sample (to first order; the rest is below 1e-19), and nothing else differs
    assert losses["sym_kl"].item() == pytest.approx(released.item() - 1e-10, rel=REL64)


# --------------------------------------------------------------------------- samples without a teacher embedding


def test_zero_teacher_embeddings_contribute_nothing_to_the_distillation_terms():
    pair = make_pair(batch=10, seed=5)
    distiller = build(pair)
    s_out, t_out = pair.outputs()
    s_out.embedding.retain_grad()
    s_out.logits.retain_grad()
    dropped = torch.tensor([1, 4, 7])
    t_out.embedding[dropped] = 0.0
    keep = torch.ones(10, dtype=torch.bool)
    keep[dropped] = False

    full = distiller(s_out, t_out, pair.batch)
    b = pair.batch
    sub = distiller(ModelOutput(s_out.logits[keep], s_out.embedding[keep]),
                    ModelOutput(t_out.logits[keep], t_out.embedding[keep]),
                    Batch(b.student_input[keep], b.teacher_input[keep], b.label[keep], b.index[keep]))
    for key in DISTILL_TERMS:
        assert full[key].item() == pytest.approx(sub[key].item(), rel=1e-6), key
    # the student's own cross-entropy still uses every sample
    assert full["ce"].item() == pytest.approx(F.cross_entropy(s_out.logits, b.label).item(), rel=1e-6)

    sum(full[k] for k in DISTILL_TERMS).backward()
    assert s_out.embedding.grad[dropped].abs().max() == 0 and s_out.logits.grad[dropped].abs().max() == 0
    assert s_out.embedding.grad[keep].abs().max() > 0


def test_zero_teacher_samples_are_kept_when_dropping_is_off():
    pair = make_pair(batch=10, seed=5)
    s_out, t_out = pair.outputs()
    t_out.embedding[[1, 4, 7]] = 0.0
    on = build(pair)(s_out, t_out, pair.batch)
    off = build(pair, drop_zero_teacher=False)(s_out, t_out, pair.batch)
    assert on["contrast_student_teacher"].item() != pytest.approx(off["contrast_student_teacher"].item(), rel=1e-4)


def test_a_batch_without_any_teacher_embedding_trains_the_student_on_ce_only(pair):
    distiller = build(pair)
    s_out, t_out = pair.outputs()
    t_out.embedding.zero_()
    losses = distiller(s_out, t_out, pair.batch)
    assert all(losses[k].item() == 0.0 for k in DISTILL_TERMS)
    assert torch.isfinite(losses["ce"]) and losses["ce"] > 0
    total(losses).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pair.student.parameters())


# --------------------------------------------------------------------------- two optimisers, one loss


def _sides(distiller, pair):
    video = [*pair.student.parameters(), *distiller.student_proj.parameters()]
    composition = [*distiller.mix.parameters(), *distiller.classifier.parameters()]
    return video, composition


@pytest.mark.parametrize("term", ["ce_composition", "contrast_composition_teacher"])
def test_composition_only_terms_do_not_move_the_student(pair, term):
    distiller = build(pair)
    video, composition = _sides(distiller, pair)
    s_out, t_out = pair.outputs()
    distiller(s_out, t_out, pair.batch)[term].backward()
    assert all(g.abs().max() == 0 for g in grads(video)), term
    assert any(g.abs().max() > 0 for g in grads(composition)), term


@pytest.mark.parametrize("term", ["ce", "contrast_student_teacher"])
def test_student_only_terms_do_not_move_the_composition(pair, term):
    distiller = build(pair)
    video, composition = _sides(distiller, pair)
    s_out, t_out = pair.outputs()
    distiller(s_out, t_out, pair.batch)[term].backward()
    assert all(g.abs().max() == 0 for g in grads(composition)), term
    assert any(g.abs().max() > 0 for g in grads(video)), term


def test_one_summed_loss_gives_each_side_the_gradient_of_its_own_released_objective():
    """Video side ← ∇ of CE_v + NCE(v,m)² + NCE(v,t)² + ½symKL; composition ← ∇ of CE_m + NCE(v,m)² + NCE(m,t)² + ½symKL."""
    pair = make_pair(batch=12, seed=2, dtype=torch.float64)
    distiller = build(pair)
    video, composition = _sides(distiller, pair)
    s_out, t_out = pair.outputs()
    label, tau = pair.batch.label, distiller.options.temperature

    v, t = distiller.student_proj(s_out.embedding), t_out.embedding
    m = distiller.compose(t, v)                      # no detaching anywhere: the released graph
    logits_m = distiller.classifier(m)

    def nce(x, y):
        return label_contrast(x, y, label, tau) + label_contrast(y, x, label, tau)

    shared = nce(v, m) + 0.5 * symmetric_kl(s_out.logits, logits_m)
    video_objective = F.cross_entropy(s_out.logits, label) + nce(v, t) + shared
    composition_objective = F.cross_entropy(logits_m, label) + nce(m, t) + shared
    want_video = torch.autograd.grad(video_objective, video, retain_graph=True)
    want_composition = torch.autograd.grad(composition_objective, composition, retain_graph=True)

    total(distiller(s_out, t_out, pair.batch)).backward(retain_graph=True)
    for want, got in zip([*want_video, *want_composition], grads(video) + grads(composition)):
        assert torch.allclose(want, got, rtol=REL64, atol=ABS64)
    # ...and a naive single sum (nothing detached) would not: the composition terms would move the student
    naive = torch.autograd.grad(video_objective + composition_objective - shared, video)
    assert not all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(naive, want_video))


def test_one_step_lowers_the_composition_cross_entropy(pair):
    """The composition learns its own classifier (golden values: test_golden.py)."""
    before, after = one_step(build(pair), pair)
    assert after["ce_composition"] < before["ce_composition"]


def test_an_unscored_sample_is_its_own_only_positive():
    from kdbench.contracts import UNLABELLED

    label = torch.tensor([1, UNLABELLED, 1, UNLABELLED, 2])
    mask = same_label_mask(label)
    expected = torch.eye(5, dtype=torch.bool)
    expected[0, 2] = expected[2, 0] = True
    assert torch.equal(mask, expected)


def test_a_pair_with_an_unscored_sample_is_neither_positive_nor_negative():
    """Moving an unscored candidate changes only the softmax of the positive term, never a negative term: the
    loss equals the formula with the negatives restricted to scored pairs of different labels."""
    from kdbench.contracts import UNLABELLED

    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 4, generator=gen, dtype=torch.float64), torch.randn(5, 4, generator=gen, dtype=torch.float64)
    label = torch.tensor([0, UNLABELLED, 1, 0, UNLABELLED])
    log_p = torch.log_softmax(F.normalize(x, dim=1) @ F.normalize(y, dim=1).T / 0.5, dim=1)
    known = [0, 2, 3]
    total = 0.0
    for i in range(5):
        pos = [j for j in range(5) if j == i or (i in known and j in known and label[i] == label[j])]
        neg = [j for j in range(5) if i in known and j in known and label[i] != label[j]]
        term = -sum(log_p[i, j] for j in pos) / len(pos)
        if neg:
            term = term - sum(torch.log(1 - log_p[i, j].exp()) for j in neg) / len(neg)
        total = total + term
    assert label_contrast(x, y, label, 0.5).item() == pytest.approx((total / 5).item(), rel=1e-12)
