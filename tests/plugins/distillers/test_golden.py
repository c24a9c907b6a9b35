"""Golden loss values of every built-in distiller, frozen from the code under test, in float64.

For each registered built-in distiller, ``CASES`` names one or more runs (options, epoch). A run builds
``make_pair(seed=0, dtype=float64)``, seeds torch with 1, builds the distiller with those options, calls
``on_epoch_start(epoch)`` and records every loss term before and after one SGD step (lr 0.1) on student +
distiller (``one_step``), all with float64 as torch's default dtype, so that every weight, buffer and random
draw (memory banks included) is made in float64. The values are compared with ``tests/plugins/distillers/golden/<name>.json``.

Why float64: float32 reductions round differently on different CPU instruction sets, and values frozen on
one CPU failed on another (PKT: 5e-5 relative); so do seeded float32 draws (see conftest.py). In float64
the same computations agree to ~1e-13 across CPUs, so the tolerance can be REL64 = 1e-9 (justified in
conftest.py): far below any change of a method's arithmetic, and below float32 precision, so a method that
quietly computes in float32 fails too.

Freezing: ``KDBENCH_FREEZE_GOLDEN=1 pytest tests/plugins/distillers/test_golden.py`` rewrites the files from the code
under test (never by hand); each file records the reason, the runs and that it was computed in float64.
A registered built-in distiller without a case or without a golden file fails, as does a golden file of
no registered distiller.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
import torch

from kdbench.plugins import load_plugins

from .conftest import ABS64, REL64, default_dtype, make_pair, one_step

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
FREEZE = os.environ.get("KDBENCH_FREEZE_GOLDEN") == "1"
DTYPE = torch.float64
SEEDS = "make_pair(seed=0) (student 20→16→24→32, teacher 30→12→36→48, 5 classes, batch 8, num_train 64), " \
        "torch.manual_seed(1) before the distiller is built, every weight, buffer and random draw made in float64"

REGISTRY = load_plugins()["distillers"]
# built-ins only: a third-party distiller installed next to kdbench brings its own tests
BUILTIN = [e.name for e in REGISTRY.entries() if e.cls.__module__.split(".")[0] == "kdbench_plugins"]


@dataclass(frozen=True)
class Run:
    options: dict = field(default_factory=dict)
    epoch: int = 0


@dataclass(frozen=True)
class Case:
    reason: str
    runs: dict[str, Run] = field(default_factory=lambda: {"": Run()})  # label → run; "" = unlabelled keys


FROZEN = "; frozen so that a refactor cannot change the method silently"
CASES = {
    "baseline": Case(
        "the student's cross-entropy alone (no distillation term): pins the shared fixture every other golden "
        "file builds on (the networks, the batch, the SGD step)" + FROZEN),
    "kd": Case(
        "Hinton et al. 2015 Sec. 2 at the defaults: 0.1·CE + 0.9·T²·KL(softmax(t/T) ‖ softmax(s/T)), T = 4" + FROZEN),
    "fitnet": Case(
        "Romero et al. 2015: 'single' = CE + 100·MSE(r(student stage 1), teacher stage 1) (Eq. 3 as an "
        "element-wise mean, RepDistiller's form); two-stage with hint_epochs 3 of 10: epoch 0 is stage 1 "
        "(hint only, CE and KD are constant zeros), epoch 5 stage 2, CE + λ·KL at τ = 3 with λ annealed "
        "4 → 1 (Eq. 2, λ = 3 at epoch 5)" + FROZEN,
        {"single": Run(),
         "two_stage.epoch0": Run({"schedule": "two-stage", "hint_epochs": 3}, 0),
         "two_stage.epoch5": Run({"schedule": "two-stage", "hint_epochs": 3}, 5)}),
    "pkt": Case(
        "Passalis & Tefas 2018 Sec. 3: CE + 30000·mean KL(P_teacher ‖ P_student) of the cosine-kernel "
        "conditional probabilities of the embeddings, self-pairs included" + FROZEN),
    "rkd": Case(
        "Park et al. 2019 Sec. 3.2: CE + 25·Huber(distance potentials) + 50·Huber(angle potentials) of the "
        "embeddings, means over B² pairs and B³ triplets" + FROZEN),
    "crd": Case(
        "Tian et al. 2020 Eqs. 18–19: CE + 0.8·(NCE of student anchors vs the teacher bank + teacher anchors "
        "vs the student bank), Z estimated from the first batch, momentum-0.5 banks, num_train 64 so K is "
        "capped at 63, negatives drawn from the seeded global RNG" + FROZEN),
    "ifd": Case(
        "Passalis, Tzelepi & Tefas 2020: CE + Jeffreys divergences of cosine and Student-t kernel "
        "probabilities at the embedding (weight 1) and at the depth-paired stages (weight 100·0.7^epoch), "
        "at epochs 0 and 3" + FROZEN,
        {"epoch0": Run(epoch=0), "epoch3": Run(epoch=3)}),
    "cmc": Case(
        "Tian, Krishnan & Isola 2020 Sec. 3: CE + the two-view (K+1)-way softmax contrast in both directions, "
        "τ = 0.07, momentum-0.5 banks, num_train 64 so K is capped at 63" + FROZEN),
    "ccl": Case(
        "Chen et al. 2021 as released: student CE, composition m = f_t + W[f_t/‖f_t‖; f_v/‖f_v‖] + b with its "
        "own CE, label-aware in-batch contrast (τ = 0.5) between student, composition and teacher, and "
        "0.5·symmetric KL (student vs composition), embeddings 32-d and 48-d (so the student is projected)"
        + FROZEN),
    "sacd": Case(
        "Han et al. 2022 eq. 5 at the defaults: CE + CE of C_s + 0.5·L_D (batch-graph vectors, GMN margin loss, "
        "eq. 11) + 1·L_C (hinge against the K hardest other-class negatives of both queues, eq. 13) + "
        "1·JSD (eq. 4)" + FROZEN),
}


def compute(name: str, case: Case) -> dict[str, float]:
    """Every loss term of every run of the case, before and after one SGD step, in float64."""
    entry = REGISTRY.get(name)
    values = {}
    for label, run in case.runs.items():
        with default_dtype(DTYPE):
            pair = make_pair(seed=0, dtype=DTYPE)
            torch.manual_seed(1)
            distiller = entry.cls(entry.options(**run.options), pair.ctx)
            distiller.on_epoch_start(run.epoch)
            assert_dtype(distiller)
            before, after = one_step(distiller, pair)
            assert_dtype(distiller)
        prefix = f"{label}." if label else ""
        values.update({f"{prefix}before.{k}": v for k, v in before.items()})
        values.update({f"{prefix}after.{k}": v for k, v in after.items()})
    return values


def assert_dtype(distiller: torch.nn.Module) -> None:
    """No float32 weight or buffer hides in a float64 run (it would round to ~1e-7 on some CPU or other)."""
    tensors = [*distiller.named_parameters(), *distiller.named_buffers()]
    wrong = [name for name, t in tensors if t.is_floating_point() and t.dtype != DTYPE]
    assert not wrong, f"not {DTYPE}: {wrong}"


def describe(case: Case) -> dict:
    return {"dtype": str(DTYPE).removeprefix("torch."), "inputs": SEEDS,
            "runs": {label: asdict(run) for label, run in case.runs.items()}}


@pytest.mark.parametrize("name", BUILTIN)
def test_golden_values(name):
    assert name in CASES, f"built-in distiller {name!r} has no golden case: add it to CASES and freeze its file"
    case, path = CASES[name], GOLDEN_DIR / f"{name}.json"
    values = compute(name, case)
    assert all(math.isfinite(v) for v in values.values()), values
    if FREEZE:
        GOLDEN_DIR.mkdir(exist_ok=True)
        path.write_text(json.dumps({"reason": case.reason, "computed": describe(case), "values": values},
                                   indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    assert path.exists(), f"no golden file {path}; freeze it with KDBENCH_FREEZE_GOLDEN=1"
    frozen = json.loads(path.read_text())
    assert frozen.get("computed") == describe(case), \
        f"{path} was computed from other runs or in another dtype; re-freeze it with KDBENCH_FREEZE_GOLDEN=1"
    assert set(frozen["values"]) == set(values), (sorted(frozen["values"]), sorted(values))
    off = {k: (v, frozen["values"][k]) for k, v in values.items()
           if not math.isclose(v, frozen["values"][k], rel_tol=REL64, abs_tol=ABS64)}
    assert not off, f"{name}: (computed, frozen) differ beyond rel {REL64}: {off}"


def test_every_case_and_golden_file_belongs_to_a_registered_distiller():
    assert BUILTIN, "no built-in distiller registered"
    assert set(CASES) <= set(BUILTIN), sorted(set(CASES) - set(BUILTIN))
    files = {p.stem for p in GOLDEN_DIR.glob("*.json")}
    assert files <= set(BUILTIN), f"golden files of no registered distiller: {sorted(files - set(BUILTIN))}"
