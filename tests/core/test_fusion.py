"""Late fusion (``late-fusion``, SACD Table IV A–D): a student reading both modalities through two trained
encoders — the run's teacher and the network a reversed run caches — and a head on their joined embeddings."""

from __future__ import annotations

import pytest
import torch

from kdbench.engine import fit, fit_teacher_only, prepare, prepare_teacher
from kdbench.errors import KdbenchError
from kdbench.plugins import plugins
from kdbench.tracking import MemoryTracker
from tests.core.test_engine import cache, config, quiet  # noqa: F401  (cache is a fixture)

FUSION = ("student.name=late-fusion", "student.project_to=16")


def train_teacher(tmp_path, *sets) -> None:
    prepared = prepare_teacher(config(tmp_path, "baseline", *sets), plugins(), progress=False, echo=quiet)
    fit_teacher_only(prepared, tracker=MemoryTracker(), progress=False, echo=quiet)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_fusion_is_refused_until_both_encoders_are_trained(tmp_path, cache):  # noqa: F811
    with pytest.raises(KdbenchError, match="kdbench teacher train --dataset synthetic --teacher tiny-eeg"):
        prepare(config(tmp_path, "baseline", *FUSION), plugins(), progress=False, echo=quiet)
    train_teacher(tmp_path)                                  # the EEG encoder: the run's teacher
    with pytest.raises(KdbenchError, match="tiny-3dcnn.*direction=reverse"):
        prepare(config(tmp_path, "baseline", *FUSION), plugins(), progress=False, echo=quiet)
    train_teacher(tmp_path, "direction=reverse")             # the video encoder: a reversed run's teacher
    prepared = prepare(config(tmp_path, "baseline", *FUSION), plugins(), progress=False, echo=quiet)
    batch = next(iter(prepared.training.train_data))
    out = prepared.student(batch.student_input, batch.teacher_input)
    assert out.logits.shape == (len(batch), 5) and out.embedding.shape == (len(batch), 32)
    # the encoders are the trained networks: the EEG one equals the run's (frozen) teacher
    eeg = prepared.student.encoders["teacher"]
    assert all(torch.equal(a, b) for a, b in zip(eeg.state_dict().values(), prepared.teacher.state_dict().values()))
    assert eeg is not prepared.teacher                       # a copy: the frozen teacher is not shared


def test_widths_that_differ_need_a_projection(tmp_path, cache):  # noqa: F811
    train_teacher(tmp_path)
    train_teacher(tmp_path, "direction=reverse")
    with pytest.raises(KdbenchError, match=r"32 \(tiny-3dcnn\) and 64 \(tiny-eeg\) wide; set student.project_to"):
        prepare(config(tmp_path, "baseline", "student.name=late-fusion"), plugins(), progress=False, echo=quiet)


@pytest.mark.parametrize("frozen", [True, False])
def test_frozen_encoders_stay_bitwise_equal_and_released_ones_train(tmp_path, cache, frozen):  # noqa: F811
    train_teacher(tmp_path)
    train_teacher(tmp_path, "direction=reverse")
    sets = (*FUSION, f"student.freeze_encoders={str(frozen).lower()}", "student.head=mlp")
    prepared = prepare(config(tmp_path, "baseline", *sets), plugins(), progress=False, echo=quiet)
    student = prepared.student
    encoders, head = snapshot(student.encoders), snapshot(student.head)
    fit(prepared, tracker=MemoryTracker(), progress=False, echo=quiet)
    after = snapshot(student.encoders)
    moved = [k for k in encoders if not torch.equal(encoders[k], after[k])]
    if frozen:
        assert moved == []                                   # weights and BatchNorm statistics alike
    else:
        assert any("weight" in k for k in moved)
    assert any(not torch.equal(v, student.head.state_dict()[k]) for k, v in head.items())   # the head trained
    assert [m for m in student.head if isinstance(m, torch.nn.Linear)][0].in_features == 32   # 16 + 16
    assert len([m for m in student.head if isinstance(m, torch.nn.Linear)]) == 3             # 32 → 256 → 64 → 5


def test_a_reversed_fusion_run_is_refused(tmp_path, cache):  # noqa: F811
    with pytest.raises(KdbenchError, match="reads both modalities; run it with direction = forward"):
        train_teacher(tmp_path, "direction=reverse")
        prepare(config(tmp_path, "baseline", *FUSION, "direction=reverse"), plugins(), progress=False, echo=quiet)


def test_pretrained_student_of_a_reversed_run_trains_its_classifier_only(tmp_path, cache):  # noqa: F811
    """Table IV E: the EEG student is the forward runs' trained EEG teacher, its encoder frozen."""
    sets = ("direction=reverse", "student.name=pretrained")
    with pytest.raises(KdbenchError, match="needs a trained 'tiny-eeg' on the student's modality.*--seed 0`"):
        prepare(config(tmp_path, "kd", *sets), plugins(), progress=False, echo=quiet)
    train_teacher(tmp_path)                                  # the forward runs' EEG teacher
    prepared = prepare(config(tmp_path, "kd", *sets), plugins(), progress=False, echo=quiet)
    network = prepared.student.network
    assert type(network).name == "tiny-eeg"
    before = snapshot(network)
    fit(prepared, tracker=MemoryTracker(), progress=False, echo=quiet)
    moved = {k for k, v in snapshot(network).items() if not torch.equal(v, before[k])}
    assert moved == {"classifier.weight", "classifier.bias"}
