"""Properties every registered distiller must have, checked through the registry (so a new one is covered)."""

import pytest
import torch

from kdbench.plugins import load_plugins

from .conftest import make_pair

REGISTRY = load_plugins()["distillers"]
NAMES = [e.name for e in REGISTRY.entries()]


def build(name, pair):
    entry = REGISTRY.get(name)
    return entry.cls(entry.options(), pair.ctx)


def test_the_zoo_is_complete():
    assert set(NAMES) >= {"baseline", "kd", "fitnet", "pkt", "rkd", "crd", "ifd", "cmc", "ccl", "sacd"}


@pytest.mark.parametrize("name", NAMES)
def test_evaluation_mode_leaves_state_alone(name):
    """Memory banks, queues and estimated constants may move only while training."""
    pair = make_pair(seed=3)
    distiller = build(name, pair)
    distiller.on_epoch_start(0)
    s_out, t_out = pair.outputs()
    distiller(s_out, t_out, pair.batch)  # one training call fills lazily initialised state
    before = {k: v.clone() for k, v in distiller.state_dict().items()}
    distiller.eval()
    with torch.no_grad():
        s_out, t_out = pair.outputs()
        losses = distiller(s_out, t_out, make_pair(seed=4).batch)
    after = distiller.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), f"{name}: {key} changed in eval mode"
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("name", NAMES)
def test_ce_is_always_a_term(name):
    pair = make_pair(seed=5)
    distiller = build(name, pair)
    distiller.on_epoch_start(0)
    losses = distiller(*pair.outputs(), pair.batch)
    assert "ce" in losses and all(v.ndim == 0 for v in losses.values())


@pytest.mark.parametrize("name", NAMES)
def test_batch_of_two(name):
    pair = make_pair(seed=6, batch=2, labels=[0, 1])
    distiller = build(name, pair)
    distiller.on_epoch_start(0)
    losses = distiller(*pair.outputs(), pair.batch)
    assert all(torch.isfinite(v) for v in losses.values()), losses


@pytest.mark.parametrize("name", NAMES)
def test_unscored_samples_train_on_everything_but_the_hard_label_terms(name):
    """A batch with unscored samples (label UNLABELLED) gives finite losses and gradients; a wholly unscored batch
    has a zero cross-entropy (not NaN) and still trains the student through the teacher's terms where the
    method has any. Labels from a scored batch with the unscored samples removed give the same cross-entropy."""
    from kdbench.contracts import UNLABELLED

    scored = [0, 3, 1, 4, 2, 0, 1, 3]
    some = [UNLABELLED if i % 2 else c for i, c in enumerate(scored)]
    for labels in (some, [UNLABELLED] * 8):
        pair = make_pair(seed=7, labels=labels)
        distiller = build(name, pair)
        distiller.on_epoch_start(0)
        s_out, t_out = pair.outputs()
        losses = distiller(s_out, t_out, pair.batch)
        assert all(torch.isfinite(v) for v in losses.values()), (labels, losses)
        sum(losses.values()).backward()
        grads = [p.grad for p in pair.student.parameters() if p.grad is not None]
        assert all(torch.isfinite(g).all() for g in grads)
        if labels[0] == UNLABELLED:
            assert losses["ce"].item() == 0.0
            assert (name == "baseline") == (not any(g.abs().sum() > 0 for g in grads)), name
