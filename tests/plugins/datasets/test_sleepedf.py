"""The ``sleepedf`` dataset end to end: generate -> check -> run (EEG teacher and EEG student), damaged files
reported one per line naming the file, and runs refused on them unless --skip-bad."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from kdbench_plugins.datasets.sleep.sleepedf import SleepEDF, SleepEDFOptions

from kdbench.cli import main

RUN = ["--distiller", "baseline", "--teacher", "tiny-eeg", "--student", "tiny-eeg", "--epochs", "1",
       "--set", "teacher_training.epochs=1", "--no-progress"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sleepedf") / "data"
    code = main(["data", "synth", "sleepedf", "--root", str(root), "--subjects", "4", "--seed", "1",
                 "--set", "epochs=16", "--set", "wake_edge=64", "--set", "unscored_tail=4"])
    assert code == 0
    return root


@pytest.fixture
def data(generated, tmp_path) -> Path:
    return Path(shutil.copytree(generated, tmp_path / "sleepedf"))


def test_generated_files_follow_physionet_naming(generated):
    names = sorted(p.name for p in generated.iterdir())
    assert names[:2] == ["SC4001E0-PSG.edf", "SC4001EH-Hypnogram.edf"]
    assert len(names) == 14 and sum(n.endswith("-PSG.edf") for n in names) == 7   # 2 + 1 + 2 + 2 nights
    assert "SC4012E0-PSG.edf" not in names                                         # subject 01 has one night


def test_synth_check_run(generated, workdir, cli, one_thread):
    checked = cli("data", "check", "sleepedf", "--root", str(generated))
    assert checked.code == 0, checked.out
    assert "no problems: usable" in checked.out
    assert "dropped by design:" in checked.out and "wake epochs more than 30 min from sleep" in checked.out
    counts = {line.split()[0]: int(line.split()[-1]) for line in checked.out.splitlines()
              if line.split() and line.split()[0] in ("train", "val", "test")}
    assert all(n > 0 for n in counts.values()) and len(counts) == 3

    ran = cli("run", "--dataset", "sleepedf", "--data-root", str(generated), *RUN, "--tracking-uri", workdir.uri)
    assert ran.code == 0, ran.err
    student = [r for r in workdir.runs() if r.data.tags.get("kdbench.role") == "student"]
    assert len(student) == 1 and student[0].info.status == "FINISHED"


def test_student_and_teacher_read_the_same_epoch(generated):
    dataset = SleepEDF(SleepEDFOptions(root=str(generated)), 0)
    assert dataset.info.student_input_shape == dataset.info.teacher_input_shape == (1, 3000)
    sample = dataset.split("test")[3]
    assert sample["student"].shape == (1, 3000)
    np.testing.assert_array_equal(sample["student"].numpy(), sample["teacher"].numpy())


def _lengthen(path: Path, epochs: int) -> None:
    import edfio
    import mne

    ann = mne.read_annotations(str(path))
    end = float(ann.onset[-1] + ann.duration[-1])
    items = [edfio.EdfAnnotation(o, d, t) for o, d, t in zip(ann.onset, ann.duration, ann.description)]
    edfio.Edf([], annotations=items + [edfio.EdfAnnotation(end, 30.0 * epochs, "Sleep stage W")]).write(path)


DAMAGE = {
    "zero-byte EDF": (lambda r: (r / "SC4001E0-PSG.edf").write_bytes(b""), "SC4001E0-PSG.edf",
                      "empty file (0 bytes)"),
    "unreadable EDF": (lambda r: (r / "SC4001E0-PSG.edf").write_bytes(b"not an EDF" * 100), "SC4001E0-PSG.edf",
                       "not a readable EDF"),
    "missing hypnogram": (lambda r: (r / "SC4011EJ-Hypnogram.edf").unlink(), "SC4011E0-PSG.edf",
                          "no SC4011??-Hypnogram.edf beside it"),
    "hypnogram longer": (lambda r: _lengthen(r / "SC4002EJ-Hypnogram.edf", 2), "SC4002EJ-Hypnogram.edf",
                         "epochs longer than the recording"),
    "PSG cut to half its size": (lambda r: _halve(r / "SC4002E0-PSG.edf"), "SC4002E0-PSG.edf",
                                 "truncated: the header promises "),
    "two hypnograms": (lambda r: shutil.copy(r / "SC4011EJ-Hypnogram.edf", r / "SC4011EX-Hypnogram.edf"),
                       "SC4011EJ-Hypnogram.edf", ("2 hypnograms for one night: SC4011EJ-Hypnogram.edf and "
                       "SC4011EX-Hypnogram.edf; remove one [")),
}


def _halve(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_check_reports_each_damage_as_one_line(kind, data, workdir, cli):
    damage, file, message = DAMAGE[kind]
    damage(data)
    checked = cli("data", "check", "sleepedf", "--root", str(data))
    assert checked.code == 1 and "Traceback" not in checked.out + checked.err
    lines = [line.strip() for line in checked.out.splitlines() if line.strip().startswith(f"{file}:")]
    assert len(lines) == 1 and message in lines[0], checked.out


def test_two_hypnograms_make_the_whole_night_bad(data):
    shutil.copy(data / "SC4011EJ-Hypnogram.edf", data / "SC4011EX-Hypnogram.edf")
    dataset = SleepEDF(SleepEDFOptions(root=str(data)), 0)
    [problem] = dataset.problems
    [night] = [n for n in dataset.nights if n.name == "SC4011"]
    assert problem.items == night.keys() and len(night.epochs) > 0       # which scorer's is right is not guessed
    assert "used" not in problem.message and "SC4011EX-Hypnogram.edf" in problem.message


def test_truncated_psg_is_not_blamed_on_the_hypnogram(data):
    _halve(data / "SC4002E0-PSG.edf")
    dataset = SleepEDF(SleepEDFOptions(root=str(data)), 0)
    [problem] = dataset.problems
    [night] = [n for n in dataset.nights if n.name == "SC4002"]
    n = dataset.nights.index(night)
    held = dataset.reader.whole_epochs(n)
    assert problem.file == "SC4002E0-PSG.edf" and night.usable
    assert problem.items == night.keys(night.epochs[night.epochs >= held])
    assert 0 < len(problem.items) < len(night.epochs)                 # the epochs it holds stay usable
    assert not dataset._deep_problems(False)[0]


def test_missing_channel_in_every_file_is_one_line(generated, workdir, cli):
    checked = cli("data", "check", "sleepedf", "--root", str(generated), "--set", "dataset.channel=EEG C3-M2")
    assert checked.code == 1
    [line] = [line for line in checked.out.splitlines() if "no EEG channel" in line]
    assert line.strip().startswith("SC4001E0-PSG.edf: no EEG channel 'EEG C3-M2' (set dataset.channel to one of: "
                                   "EEG Fpz-Cz, EEG Pz-Oz, EOG horizontal); 6 more files have this kind of problem")


def test_wake_trimming_is_an_option(generated):
    trimmed = SleepEDF(SleepEDFOptions(root=str(generated)), 0)
    everything = SleepEDF(SleepEDFOptions(root=str(generated), trim_wake=None), 0)
    n = lambda d: sum(len(d.split(s)) for s in d.splits)
    removed = sum(v for k, v in trimmed.dropped.items() if k.startswith("wake epochs"))
    assert removed > 0 and n(everything) == n(trimmed) + removed


def test_run_on_damaged_data_stops_and_skip_bad_trains(data, workdir, cli, one_thread):
    dataset = SleepEDF(SleepEDFOptions(root=str(data)), 0)
    night = next(n.name for n in dataset.nights if dataset.assignment[n.subject] == "train")
    (data / f"{night}E0-PSG.edf").write_bytes(b"")
    args = ["run", "--dataset", "sleepedf", "--data-root", str(data), *RUN, "--tracking-uri", workdir.uri]
    refused = cli(*args)
    assert refused.code == 2 and f"{night}E0-PSG.edf: empty file (0 bytes)" in refused.err
    assert workdir.runs() == []
    ran = cli(*args, "--skip-bad")
    assert ran.code == 0, ran.err
    [student] = [r for r in workdir.runs() if r.data.tags.get("kdbench.role") == "student"]
    [bad] = [n for n in dataset.nights if n.name == night]
    assert student.data.metrics["data_skipped_items"] == len(bad.epochs) > 0
