"""Shared fixtures for distiller tests: a cross-modal pair of tiny networks and a batch, in float32 or float64.

The teacher and student are small networks over *different* inputs with *different* widths (the
cross-modal case): the student reads a 20-d "video" vector, the teacher a 30-d "EEG" vector.

``make_pair(dtype=torch.float64)`` builds the pair in float64: weights and inputs are drawn in float64
(under ``default_dtype``). Tests that compare a loss with a value computed another way (a formula written
out, a permuted or padded batch, a frozen golden value) run in float64: float32 reductions round differently
on different CPU instruction sets (seen: 5e-5 relative on a PKT loss between two x86 machines), float64 ones
agree to ~1e-13. Drawing in float64 matters for values compared across machines (``test_golden.py``):
float32 ``randn`` has its own kernel per instruction set (the AVX2 one uses vectorised log/sin/cos), so
seeded float32 inputs differ in the last bit between CPUs, and that moves the losses by ~1e-7.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from kdbench.contracts import Batch, DistillContext, FeatureSpec, ModelOutput

#: Relative tolerance of float64 comparisons between two computations of one quantity (e.g. a loss and its
#: golden value frozen on another CPU). float64's unit roundoff is 1.1e-16; the reductions here sum at most
#: ~1e4 terms (blocked/pairwise: error ≲ 15·1.1e-16 each) and the most ill-conditioned losses (KD, PKT: a
#: small KL left over from terms ~100× larger, then one SGD step) amplify that ~1e2–1e3-fold: CPUs should
#: agree to ~1e-12. Measured on the golden values: ≤ 1.4e-13 between ATen's DEFAULT, AVX2 and AVX512 kernels
#: (ATEN_CPU_CAPABILITY), 1 or 2 threads. 1e-9 keeps a margin of ~1e3 over that and stays ~1e4 below the
#: float32 error of the same computations (eps 1.2e-7; seen 5e-5 on PKT), so a method that silently drops
#: to float32 somewhere fails.
REL64 = 1e-9
#: absolute floor for quantities that are 0 in exact arithmetic (e.g. an inactive schedule stage, KL(p‖p))
ABS64 = 1e-12


@contextmanager
def default_dtype(dtype: torch.dtype):
    """Create floating tensors (parameters, buffers, random draws) in ``dtype`` inside the block."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


class TinyNet(nn.Module):
    """in → stage widths (ReLU MLP), pooled 'stages' are the hidden layers, embedding the last one."""

    def __init__(self, d_in: int, stages: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        dims = (d_in, *stages)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(dims, dims[1:]))
        self.fc = nn.Linear(stages[-1], num_classes)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return ModelOutput(self.fc(x), x, tuple(feats))


@dataclass
class Pair:
    student: TinyNet
    teacher: TinyNet
    batch: Batch
    ctx: DistillContext
    dtype: torch.dtype = torch.float32

    def outputs(self) -> tuple[ModelOutput, ModelOutput]:
        with torch.no_grad():
            t = self.teacher(self.batch.teacher_input)
        return self.student(self.batch.student_input), t.detach()


def make_pair(seed: int = 0, batch: int = 8, num_classes: int = 5, s_stages=(16, 24, 32), t_stages=(12, 36, 48),
              num_train: int = 64, epochs: int = 10, labels: list[int] | None = None,
              dtype: torch.dtype = torch.float32) -> Pair:
    """A seeded student/teacher pair and batch, weights and inputs drawn in ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    with default_dtype(dtype):
        student = TinyNet(20, tuple(s_stages), num_classes)
        teacher = TinyNet(30, tuple(t_stages), num_classes).eval().requires_grad_(False)
    label = torch.tensor(labels) if labels is not None else torch.randint(0, num_classes, (batch,), generator=gen)
    n = len(label)
    b = Batch(torch.randn(n, 20, generator=gen, dtype=dtype), torch.randn(n, 30, generator=gen, dtype=dtype), label,
              torch.randperm(num_train, generator=gen)[:n])
    with torch.no_grad():
        s_spec, t_spec = FeatureSpec.of(student(b.student_input)), FeatureSpec.of(teacher(b.teacher_input))
    return Pair(student, teacher, b, DistillContext(s_spec, t_spec, num_classes, num_train, epochs), dtype)


@pytest.fixture
def pair() -> Pair:
    return make_pair()


@pytest.fixture
def pair64() -> Pair:
    """``pair`` in float64, for comparisons with tolerance REL64."""
    return make_pair(dtype=torch.float64)


def total(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(losses.values())


def assert_gradients_flow(distiller: nn.Module, pair: Pair) -> dict[str, torch.Tensor]:
    """The summed loss is finite; it reaches the student and the distiller's parameters, never the teacher."""
    s_out, t_out = pair.outputs()
    losses = distiller(s_out, t_out, pair.batch)
    loss = total(losses)
    assert torch.isfinite(loss), losses
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pair.student.parameters())
    for name, p in distiller.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"distiller parameter {name} gets no gradient"
    assert all(p.grad is None for p in pair.teacher.parameters())
    return losses


def one_step(distiller: nn.Module, pair: Pair, lr: float = 0.1) -> tuple[dict[str, float], dict[str, float]]:
    """Loss terms before and after one SGD step on student + distiller (both evaluated in train mode)."""
    params = [*pair.student.parameters(), *(p for p in distiller.parameters() if p.requires_grad)]
    opt = torch.optim.SGD(params, lr=lr)
    s_out, t_out = pair.outputs()
    before = distiller(s_out, t_out, pair.batch)
    opt.zero_grad()
    total(before).backward()
    opt.step()
    s_out, t_out = pair.outputs()
    after = distiller(s_out, t_out, pair.batch)
    return ({k: float(v.detach()) for k, v in before.items()}, {k: float(v.detach()) for k, v in after.items()})


def state_dict_round_trip(cls, options, pair: Pair, differs: str):
    """Run a distiller on two batches, then load its state into a differently seeded fresh one (which must
    start different at the state key ``differs``); return (state, losses of the first, losses of the
    fresh one), both computed on ``pair`` under the same RNG seed."""
    torch.manual_seed(1)
    first = cls(options, pair.ctx)
    for seed in (0, 4):
        other = make_pair(seed=seed)
        first(*other.outputs(), other.batch)
    state = copy.deepcopy(first.state_dict())
    torch.manual_seed(2)
    fresh = cls(options, pair.ctx)
    assert not torch.equal(fresh.state_dict()[differs], state[differs])
    fresh.load_state_dict(state)
    s_out, t_out = pair.outputs()
    torch.manual_seed(7)
    a = first(s_out, t_out, pair.batch)
    torch.manual_seed(7)
    b = fresh(s_out, t_out, pair.batch)
    return state, a, b

