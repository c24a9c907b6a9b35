"""Reverse distillation (``direction = "reverse"``): the dataset's two modalities swap roles."""

from __future__ import annotations

import torch

from kdbench.config import config_hash
from kdbench.data.reverse import ReversedModalities
from kdbench.engine import fit, prepare
from kdbench.plugins import plugins
from kdbench.tracking import MemoryTracker
from kdbench_plugins.datasets.synthetic import SyntheticSleep
from tests.core.test_engine import cache, config, quiet  # noqa: F401  (cache is a fixture)


def test_reverse_swaps_the_default_networks_and_enters_the_hash_only_when_set(tmp_path):
    forward, reverse = config(tmp_path, "kd"), config(tmp_path, "kd", "direction=reverse")
    assert (forward.teacher.name, forward.student.name) == ("tiny-eeg", "tiny-3dcnn")
    assert (reverse.teacher.name, reverse.student.name) == ("tiny-3dcnn", "tiny-eeg")
    assert config_hash(reverse) != config_hash(forward)
    # "forward" leaves the hash as it was before the option existed
    assert config_hash(config(tmp_path, "kd", "direction=forward")) == config_hash(forward)


def test_the_view_gives_the_student_the_teachers_modality_and_vice_versa():
    base = SyntheticSleep(SyntheticSleep.Options(train_size=12, test_size=6, eeg_seconds=10), 0)
    view = ReversedModalities(base)
    assert view.info.student_input_shape == base.info.teacher_input_shape == (1, 1000)
    assert view.info.teacher_input_shape == base.info.student_input_shape
    assert view.info.class_names == base.info.class_names and view.name == base.name
    assert view.fingerprint() != base.fingerprint()
    for name in ("train", "test"):
        mine, theirs = view.split(name), base.split(name)
        assert len(mine) == len(theirs)
        for i in (0, len(mine) - 1):
            a, b = mine[i], theirs[i]
            assert torch.equal(a["student"], b["teacher"]) and torch.equal(a["teacher"], b["student"])
            assert (a["label"], a["index"]) == (b["label"], b["index"])
        assert torch.equal(mine.labels, theirs.labels)       # other attributes are the split's own
    assert view.fixed_teacher_inputs is SyntheticSleep.fixed_student_inputs is True


def test_a_reversed_run_trains_the_video_teacher_and_the_eeg_student(tmp_path, cache):  # noqa: F811
    run = config(tmp_path, "kd", "direction=reverse")
    prepared = prepare(run, plugins(), progress=False, echo=quiet)
    assert type(prepared.student).name == "tiny-eeg" and type(prepared.teacher).name == "tiny-3dcnn"
    batch = next(iter(prepared.training.train_data))
    assert batch.student_input.shape[1:] == (1, 3000)          # the EEG reaches the student
    assert batch.teacher_input.shape[1:] == (1, 8, 16, 16)     # the video reaches the teacher
    tracker = MemoryTracker()
    result = fit(prepared, tracker=tracker, progress=False, echo=quiet)
    assert 0.0 <= result.scores.accuracy <= 1.0
    student = [r for r in tracker.runs.values() if r["tags"].get("kdbench.role") != "teacher"][-1]
    assert student["tags"]["kdbench.direction"] == "reverse" and student["status"] == "FINISHED"


def test_a_dataset_with_one_modality_is_refused_in_one_line(cli):
    out = cli("run", "--dataset", "sleepedf", "--set", "direction=reverse", "--set", "dataset.root=/nonexistent")
    assert out.code != 0
    assert "direction = reverse" in out.err and "sleepedf" in out.err and "one modality (eeg)" in out.err
    assert "Traceback" not in out.err and len(out.err.strip().splitlines()) == 1


def test_each_network_is_built_on_the_shape_of_the_input_it_reads():
    """A video model reads `student_input_shape`; as the teacher of a reversed run it must still get the clip's
    shape (the EEG's would build a wrong network, or none)."""
    from kdbench.contracts import DatasetInfo
    from kdbench.engine.build import build_model

    info = DatasetInfo(class_names=("a", "b"), teacher_input_shape=(3, 4, 32, 32), student_input_shape=(1, 3000))
    run = config_for_reverse_r3d18()
    teacher = build_model("teacher", run, plugins(), info)
    assert teacher.in_channels == 3
    out = teacher(torch.zeros(2, 3, 4, 32, 32))
    assert out.logits.shape == (2, 2)


def config_for_reverse_r3d18():
    from kdbench.config import resolve

    return resolve([{"dataset": {"name": "synthetic"}, "direction": "reverse", "teacher": {"name": "r3d18"},
                     "distiller": {"name": "baseline"}}], plugins())


def test_teacher_train_in_reverse_trains_and_caches_the_video_network(workdir, cli):
    """`kdbench teacher train --set direction=reverse` trains the student-modality network as a teacher, cached
    under the reversed data's fingerprint, where a reversed run then finds it."""
    common = ("--dataset", "synthetic", "--set", "dataset.train_size=60", "--set", "dataset.test_size=30",
              "--set", "direction=reverse", "--no-progress")
    trained = cli("teacher", "train", *common, "--epochs", "1")
    assert trained.code == 0, trained.err
    assert "tiny-3dcnn" in trained.out + trained.err
    run = cli("run", *common, "--distiller", "kd", "--epochs", "1", "--set", "teacher_training.epochs=1")
    assert run.code == 0, run.err
    assert "teacher: reusing" in run.out + run.err
