"""The engine on its own: prepare, then fit, with an in-memory tracker (no CLI, no MLflow store).

What is tested here is the run's flow: everything refusable is refused by ``prepare`` before anything is
tracked; the teacher's source is decided once; one epoch loop trains the teacher and then the student; a run
interrupted after an epoch resumes to exactly the metrics of an uninterrupted one.
"""

from __future__ import annotations

import pytest

from kdbench.config import parse_set, resolve
from kdbench.engine import fit, prepare
from kdbench.errors import KdbenchError
from kdbench.plugins import plugins
from kdbench.tracking import MemoryTracker

TINY = {"dataset": {"name": "synthetic", "train_size": 60, "test_size": 30}, "epochs": 2, "batch_size": 16,
        "teacher_training": {"epochs": 1, "batch_size": 32}}


def config(tmp_path, distiller="kd", *sets):
    return resolve([TINY, {"distiller": {"name": distiller}, "output_dir": str(tmp_path / "runs")},
                    *map(parse_set, sets)], plugins())


def quiet(message):
    pass


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_CACHE_DIR", str(tmp_path / "cache"))


def test_prepare_decides_the_teacher_once_and_fit_trains_it_then_the_student(tmp_path, cache):
    prepared = prepare(config(tmp_path), plugins(), progress=False, echo=quiet)
    assert prepared.source.kind == "train" and prepared.teacher_fit is not None and prepared.stored == {}
    tracker = MemoryTracker()
    result = fit(prepared, tracker=tracker, progress=False, echo=quiet)
    teacher_run, student_run = tracker.runs.values()
    assert teacher_run["tags"]["kdbench.role"] == "teacher" and student_run["tags"]["kdbench.role"] == "student"
    assert teacher_run["status"] == student_run["status"] == "FINISHED"
    assert [step for step, _ in student_run["metrics"]["accuracy"]] == [1, 2]
    assert student_run["tags"]["kdbench.teacher_source"].startswith("trained:")
    assert student_run["tags"]["kdbench.teacher_run_id"] == "memory-0"
    assert result.scores.accuracy == student_run["metrics"]["final_accuracy"][0][1]
    assert "confusion_matrix.json" in student_run["dicts"] and "teacher/teacher.pt" in teacher_run["files"]
    # the second time, the cached weights and the stored outputs are found while preparing
    again = prepare(config(tmp_path, "crd"), plugins(), progress=False, echo=quiet)
    assert again.source.kind == "cache" and again.teacher_fit is None and set(again.stored) == {"train", "test"}
    assert not any(p.requires_grad for p in again.teacher.parameters())


def test_everything_refusable_is_refused_before_anything_is_tracked(tmp_path, cache):
    # the distiller needs the networks' widths: refused while preparing, with the teacher still untrained
    bad = config(tmp_path, "fitnet", "distiller.student_stage=7")
    with pytest.raises(KdbenchError, match=r"fitnet: student_stage=7 is out of range; the student has 3 stages"):
        prepare(bad, plugins(), progress=False, echo=quiet)
    with pytest.raises(KdbenchError, match="does not exist"):
        prepare(config(tmp_path, "kd", "teacher.checkpoint='missing.pt'"), plugins(), progress=False, echo=quiet)
    assert not (tmp_path / "cache" / "teachers").exists()


class StopAfter(MemoryTracker):
    """Interrupts the student's run while its second epoch is logged, after the first one's checkpoint (as
    Ctrl-C would)."""

    def log_metrics(self, metrics, step=None):
        super().log_metrics(metrics, step)
        if step == 2 and "lr" in metrics:
            raise KeyboardInterrupt


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, cache):
    whole = fit(prepare(config(tmp_path), plugins(), progress=False, echo=quiet), tracker=MemoryTracker(),
                progress=False, echo=quiet)
    tracker = StopAfter()
    with pytest.raises(KeyboardInterrupt):
        fit(prepare(config(tmp_path), plugins(), progress=False, echo=quiet), tracker=tracker, progress=False,
            echo=quiet)
    [run_id] = [r for r, run in tracker.runs.items() if run["tags"]["kdbench.role"] == "student"]
    assert tracker.runs[run_id]["status"] == "KILLED"
    resumed = prepare(config(tmp_path), plugins(), resume=True, progress=False, echo=quiet)
    assert resumed.training.start[0] == 1
    tracker.__class__ = MemoryTracker  # let the second half run
    result = fit(resumed, tracker=tracker, progress=False, echo=quiet)
    assert result.run_id == run_id and tracker.runs[run_id]["status"] == "FINISHED"
    assert result.scores.confusion.tolist() == whole.scores.confusion.tolist()
    assert [h["loss"] for h in result.history] == [h["loss"] for h in whole.history]


class StopTeacherAt(MemoryTracker):
    """Interrupts the teacher's training while its given epoch is logged (its previous epoch is checkpointed)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def log_metrics(self, metrics, step=None):
        super().log_metrics(metrics, step)
        if step == self.epoch and "lr" not in metrics and self._current["tags"]["kdbench.role"] == "teacher":
            raise KeyboardInterrupt


def test_an_interrupted_teacher_training_continues_where_it_stopped(tmp_path, monkeypatch):
    from kdbench.engine.teacher import cached_path, progress_path

    three = ("teacher_training.epochs=3",)
    monkeypatch.setenv("KDBENCH_CACHE_DIR", str(tmp_path / "whole"))
    whole = prepare(config(tmp_path, "kd", *three), plugins(), progress=False, echo=quiet)
    fit(whole, tracker=MemoryTracker(), progress=False, echo=quiet)
    monkeypatch.setenv("KDBENCH_CACHE_DIR", str(tmp_path / "cut"))
    tracker = StopTeacherAt(2)
    with pytest.raises(KeyboardInterrupt):
        fit(prepare(config(tmp_path, "kd", *three), plugins(), progress=False, echo=quiet), tracker=tracker,
            progress=False, echo=quiet)
    assert tracker.runs["memory-0"]["status"] == "KILLED"
    again = prepare(config(tmp_path, "kd", *three), plugins(), progress=False, echo=quiet)
    assert again.teacher_fit.start[:2] == (1, "memory-0")
    tracker.__class__ = MemoryTracker
    fit(again, tracker=tracker, progress=False, echo=quiet)
    assert tracker.runs["memory-0"]["status"] == "FINISHED"  # the same teacher run, continued
    # epoch 2 was logged before the interruption and again when it was run in full
    assert [step for step, _ in tracker.runs["memory-0"]["metrics"]["accuracy"]] == [1, 2, 2, 3]
    import torch

    cached = cached_path(again.config, again.dataset)
    assert not progress_path(cached).exists()
    resumed_weights = torch.load(cached, weights_only=False)["state_dict"]
    whole_weights = torch.load(cached_path(whole.config, whole.dataset).as_posix().replace("/cut/", "/whole/"),
                               weights_only=False)["state_dict"]
    assert all(torch.equal(resumed_weights[k], whole_weights[k]) for k in whole_weights)


def test_an_unusable_output_folder_is_refused_before_training(tmp_path, cache):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(KdbenchError, match=r"output folder .*a-file/.* is not writable \(.*\); choose another with "
                                           r"--set output_dir=DIR"):
        prepare(config(tmp_path, "kd", f"output_dir='{tmp_path / 'a-file'}'"), plugins(), progress=False,
                echo=quiet)
    assert not (tmp_path / "cache" / "teachers").exists()


def test_a_full_disk_is_refused_with_what_is_free_and_needed(tmp_path):
    import shutil

    from kdbench.engine.checkpoint import check_writable

    need = shutil.disk_usage(tmp_path).free * 4
    with pytest.raises(KdbenchError, match=r"MiB free, and a checkpoint needs about .* MiB; free space"):
        check_writable(tmp_path, need, "output folder", "free space")
    check_writable(tmp_path / "new", 1, "output folder", "free space")  # a creatable folder with room passes


class OtherStore(MemoryTracker):
    uri = "memory://another-store"


def test_a_teacher_interrupted_in_another_store_continues_in_a_new_run(tmp_path, cache):
    three = ("teacher_training.epochs=3",)
    with pytest.raises(KeyboardInterrupt):
        fit(prepare(config(tmp_path, "kd", *three), plugins(), progress=False, echo=quiet), tracker=StopTeacherAt(2),
            progress=False, echo=quiet)
    other = OtherStore()
    fit(prepare(config(tmp_path, "kd", *three), plugins(), progress=False, echo=quiet), tracker=other,
        progress=False, echo=quiet)
    teacher = other.runs["memory-0"]
    assert teacher["status"] == "FINISHED" and teacher["tags"]["kdbench.role"] == "teacher"
    assert teacher["tags"]["kdbench.continued_from"] == "run memory-0 in None, after epoch 1"
    assert [step for step, _ in teacher["metrics"]["accuracy"]] == [2, 3] and teacher["params"]
