"""The ``s3ve`` dataset end to end: generate -> check -> run, every kind of damaged file reported by
``kdbench data check`` as one line naming the file, runs refused on damaged data unless --skip-bad, and the
prepared clip cache (used by later runs, resumable after an interruption)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from kdbench_plugins.datasets.sleep import synth
from kdbench_plugins.datasets.sleep.common import SleepSplit
from kdbench_plugins.datasets.sleep.s3ve import S3VE, S3VEOptions

from kdbench.cli import main
from kdbench.data import prepare
from kdbench.errors import KdbenchError

SMALL = {"frames": 4, "height": 32, "width": 32}
SETS = [a for k, v in SMALL.items() for a in ("--set", f"dataset.{k}={v}")]
RUN = ["--distiller", "baseline", "--teacher", "tiny-eeg", "--student", "tiny-3dcnn", "--epochs", "1",
       "--set", "teacher_training.epochs=1", "--set", "batch_size=8", "--no-progress", *SETS]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("s3ve") / "data"
    code = main(["data", "synth", "s3ve", "--root", str(root), "--subjects", "4", "--seed", "3",
                 "--set", "epochs=12", "--set", "csv_every=2"])
    assert code == 0
    return root


@pytest.fixture
def data(generated, tmp_path) -> Path:
    """A private copy of the generated dataset, to damage."""
    return Path(shutil.copytree(generated, tmp_path / "s3ve"))


def _student_run(workdir):
    runs = workdir.runs()
    assert all(r.info.status == "FINISHED" for r in runs)
    [run] = [r for r in runs if r.data.tags.get("kdbench.role") == "student"]
    return run


def _dataset(root: Path, seed: int = 0) -> S3VE:
    return S3VE(S3VEOptions(root=str(root), **SMALL), seed)


def test_generated_files_are_the_real_layout(generated):
    assert sorted(p.name for p in generated.iterdir()) == ["S001", "S002", "S003", "S004", "subjects.csv"]
    assert sorted(p.name for p in (generated / "S001").iterdir()) == ["hypnogram.edf", "psg.edf", "video.avi"]
    assert (generated / "S002" / "hypnogram.csv").exists()       # both hypnogram forms are exercised
    table = (generated / "subjects.csv").read_text().splitlines()
    assert table[0] == "subject,sex,age,ahi,video_offset"
    offsets = [float(line.split(",")[-1]) for line in table[1:]]
    assert all(o < 0 for o in offsets) and len(set(offsets)) == 4  # the camera starts first, differently each night


def test_synth_check_run(generated, workdir, cli, one_thread):
    checked = cli("data", "check", "s3ve", "--root", str(generated), *SETS)
    assert checked.code == 0, checked.out + checked.err
    report = checked.out
    assert "no problems: usable" in report
    rows = {line.split()[0]: [int(x) for x in line.split()[1:]] for line in report.splitlines()
            if line.split() and line.split()[0] in ("train", "val", "test")}
    assert set(rows) == {"train", "val", "test"} and all(r[-1] == sum(r[:-1]) > 0 for r in rows.values())
    assert sum(r[-1] for r in rows.values()) == sum(len(_dataset(generated).split(s)) for s in ("train", "val", "test"))
    assert "dropped by design:" in report and "movement-time epochs" in report

    ran = cli("run", "--dataset", "s3ve", "--data-root", str(generated), *RUN, "--tracking-uri", workdir.uri)
    assert ran.code == 0, ran.err
    run = _student_run(workdir)
    assert "accuracy" in run.data.metrics and "teacher_accuracy" in run.data.metrics


def test_samples_have_the_documented_shapes(generated):
    split = _dataset(generated).split("train")
    sample = split[0]
    assert sample["student"].shape == (1, 4, 32, 32) and 0.0 <= float(sample["student"].min()) <= 1.0
    assert sample["teacher"].shape == (1, 3000)
    assert abs(float(sample["teacher"].mean())) < 1e-4 and abs(float(sample["teacher"].std()) - 1) < 1e-3  # z-score
    stored = split.decode(0, ("student", "teacher"))
    assert stored["student"].dtype == np.uint8 and stored["teacher"].dtype == np.float32


# --------------------------------------------------------------------------- damaged files


def _rewrite_psg_without(path: Path, channel: str) -> None:
    import mne

    raw = mne.io.read_raw_edf(str(path), preload=True, verbose="error")
    keep = [c for c in raw.ch_names if c != channel]
    signals = {c: raw.get_data(picks=[c])[0] * 1e6 for c in keep}
    synth.write_psg(path, signals, raw.info["sfreq"], raw.info["meas_date"].replace(tzinfo=None))


def _lengthen_hypnogram(path: Path, epochs: int) -> None:
    import edfio
    import mne

    ann = mne.read_annotations(str(path))
    end = float(ann.onset[-1] + ann.duration[-1])
    items = [edfio.EdfAnnotation(o, d, t) for o, d, t in zip(ann.onset, ann.duration, ann.description)]
    edfio.Edf([], annotations=items + [edfio.EdfAnnotation(end, 30.0 * epochs, "Sleep stage 2")]).write(path)


def _truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


def _set_offset(root: Path, subject: str, value: str) -> None:
    table = root / "subjects.csv"
    rows = [line.rsplit(",", 1)[0] + f",{value}" if line.startswith(f"{subject},") else line
            for line in table.read_text().splitlines()]
    table.write_text("\n".join(rows) + "\n")


DAMAGE = {
    "zero-byte EDF": (lambda r: (r / "S002/psg.edf").write_bytes(b""), "S002/psg.edf", "empty file (0 bytes)"),
    "hypnogram longer": (lambda r: _lengthen_hypnogram(r / "S001/hypnogram.edf", 3), "S001/hypnogram.edf",
                         "hypnogram is 3 epochs longer than the recording (15 vs 12)"),
    "hypnogram shorter": (lambda r: (r / "S002/hypnogram.csv").write_text(
        "\n".join((r / "S002/hypnogram.csv").read_text().splitlines()[:-2]) + "\n"), "S002/hypnogram.csv",
        "hypnogram is 2 epochs shorter than the recording (10 vs 12)"),
    "truncated AVI": (lambda r: _truncate(r / "S003/video.avi", 0.6), "S003/video.avi", "truncated video: header promises"),
    "EDF without the channel": (lambda r: _rewrite_psg_without(r / "S004/psg.edf", "EEG C4-M1"), "S004/psg.edf",
                                "no EEG channel 'C4-M1' (set dataset.channel to one of: EEG F4-M1, EEG C3-M2"),
    "missing video": (lambda r: (r / "S001/video.avi").unlink(), "S001/video.avi", "missing"),
    "label outside the classes": (lambda r: (r / "S004/hypnogram.csv").write_text(
        (r / "S004/hypnogram.csv").read_text().replace("\n5,", "\n5,N5 ", 1)), "S004/hypnogram.csv",
        "1 epoch(s) with labels outside the classes (e.g. line 7: 'N5 "),
    "folder missing from the table": (lambda r: shutil.copytree(r / "S001", r / "S009"), "S009",
                                      "folder not listed in subjects.csv"),
    # a PSG cut short is the PSG's fault, not the hypnogram's (MNE reads what is left without an error)
    "truncated PSG": (lambda r: _truncate(r / "S001/psg.edf", 0.5), "S001/psg.edf",
                      "truncated: the header promises 360 data records, the file holds 179 (179 of 360 s); "),
    "PSG cut to 5000 bytes": (lambda r: _truncate(r / "S001/psg.edf", 5000 / (r / "S001/psg.edf").stat().st_size),
                              "S001/psg.edf", "truncated: the header promises 360 data records, the file holds 1 "),
    "hypnogram in place of the PSG": (lambda r: shutil.copy(r / "S001/hypnogram.edf", r / "S001/psg.edf"),
                                      "S001/psg.edf", "no signal channels, only EDF+ annotations (is it a hypnogram?)"),
    # a night whose epochs are unknown is one placeholder item: the message says the whole night goes
    "junk hypnogram": (lambda r: (r / "S001/hypnogram.edf").write_text("junk\n"), "S001/hypnogram.edf",
                       ("not a readable EDF+ file (Bad EDF file provided.); --skip-bad leaves out the whole night "
                        "[1 item]")),
    "hypnogram cut to 400 bytes": (lambda r: _truncate(r / "S003/hypnogram.edf", 400 / (r / "S003/hypnogram.edf")
                                                       .stat().st_size), "S003/hypnogram.edf",
                                   "not a readable EDF+ file ("),
    "PSG in place of the hypnogram": (lambda r: shutil.copy(r / "S001/psg.edf", r / "S001/hypnogram.edf"),
                                      "S001/hypnogram.edf", ("not a hypnogram: an EDF with 5 signal channel(s) "
                                      "(EEG F4-M1, EEG C4-M1, EEG C3-M2, EEG O2-M1, ...) and no annotations")),
    "infinite video_offset": (lambda r: _set_offset(r, "S002", "inf"), "subjects.csv",
                              "line 3, subject 'S002': video_offset 'inf' is not a finite number"),
    "NaN video_offset": (lambda r: _set_offset(r, "S004", "nan"), "subjects.csv",
                         "line 5, subject 'S004': video_offset 'nan' is not a finite number"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_check_reports_each_damage_as_one_line(kind, data, workdir, cli):
    damage, file, message = DAMAGE[kind]
    damage(data)
    checked = cli("data", "check", "s3ve", "--root", str(data), *SETS)
    assert checked.code == 1
    assert "Traceback" not in checked.out + checked.err
    lines = [line.strip() for line in checked.out.splitlines() if line.strip().startswith(f"{file}:")]
    assert len(lines) == 1 and message in lines[0], checked.out
    assert "1 problem:" in checked.out and lines[0].endswith("]")     # the scope: [n items] or [dataset]


def test_subjects_table_naming_a_missing_folder(data, workdir, cli):
    shutil.rmtree(data / "S003")
    checked = cli("data", "check", "s3ve", "--root", str(data), *SETS)
    assert checked.code == 1
    assert "subjects.csv: subject 'S003' has no folder S003/; --skip-bad leaves out the whole night [1 item]" \
        in checked.out


def test_truncated_psg_spoils_only_the_epochs_it_lost(data):
    _truncate(data / "S001/psg.edf", 0.5)                                # 179 of 360 s: epochs 0-4 remain whole
    dataset = _dataset(data)
    [problem] = dataset.problems
    [night] = [n for n in dataset.nights if n.name == "S001"]
    assert problem.file == "S001/psg.edf" and night.usable
    assert problem.items == night.keys(night.epochs[night.epochs >= 5]) and len(problem.items) < len(night.epochs)
    assert not dataset._deep_problems(False)[0]                          # the epochs it holds still read
    n = dataset.nights.index(night)
    assert dataset.reader.eeg(n, int(night.epochs[night.epochs < 5][-1])).shape == (1, 3000)


def test_run_on_damaged_data_stops_and_skip_bad_trains(data, workdir, cli, one_thread):
    train = sorted(s for s, side in _dataset(data).assignment.items() if side == "train")
    (data / train[0] / "video.avi").unlink()
    _truncate(data / train[1] / "video.avi", 0.6)
    args = ["run", "--dataset", "s3ve", "--data-root", str(data), *RUN, "--tracking-uri", workdir.uri]

    refused = cli(*args)
    assert refused.code == 2
    assert f"{train[0]}/video.avi: missing" in refused.err and f"{train[1]}/video.avi: truncated video" in refused.err
    assert "--skip-bad" in refused.err and "Traceback" not in refused.err
    assert workdir.runs() == []                                       # stopped before any MLflow run began

    skipped = cli(*args, "--skip-bad")
    assert skipped.code == 0, skipped.err
    run = _student_run(workdir)
    import mlflow

    path = mlflow.MlflowClient(workdir.uri).download_artifacts(run.info.run_id, "skipped_items.json", str(workdir.path))
    listed = json.loads(Path(path).read_text())["problems"]
    assert {p["file"] for p in listed} == {f"{train[0]}/video.avi", f"{train[1]}/video.avi"}
    missing = next(p for p in listed if p["file"] == f"{train[0]}/video.avi")
    assert missing["items"] and all(k.startswith(f"{train[0]}/") for k in missing["items"])
    assert run.data.metrics["data_skipped_items"] == sum(len(p["items"]) for p in listed)


# --------------------------------------------------------------------------- prepared clips


def test_prepare_writes_the_cache_that_later_runs_read(generated, workdir, cli):
    prepared = cli("data", "prepare", "s3ve", "--root", str(generated), *SETS)
    assert prepared.code == 0, prepared.err
    assert "train:" in prepared.out and "test:" in prepared.out
    dataset = _dataset(generated)
    for name in dataset.splits:
        split = dataset.split(name)
        assert split._prepared()
        for i in (0, len(split) - 1):
            decoded = split.decode(i, ("student", "teacher"))
            sample = split[i]
            np.testing.assert_array_equal(sample["student"].numpy(), decoded["student"] / np.float32(255))
            np.testing.assert_allclose(sample["teacher"].numpy(), split.to_tensor("teacher", decoded["teacher"]).numpy())
    assert cli("data", "check", "s3ve", "--root", str(generated), *SETS).code == 0


def test_interrupted_prepare_resumes(generated, workdir, monkeypatch):
    split = _dataset(generated).split("train")
    real = SleepSplit.decode
    calls = {"n": 0}

    def flaky(self, i, fields):
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("power cut")
        return real(self, i, fields)

    monkeypatch.setattr(SleepSplit, "decode", flaky)
    with pytest.raises(KdbenchError, match="power cut"):
        prepare(split)
    monkeypatch.setattr(SleepSplit, "decode", real)
    said: list[str] = []
    path = prepare(split, echo=said.append)
    assert said == [f"resuming {split.key}: 5 of {len(split)} items already prepared"]
    teacher = np.load(path / "teacher.npy")
    for i in range(len(split)):
        np.testing.assert_array_equal(teacher[i], split.decode(i, ("teacher",))["teacher"])


def test_fingerprint_follows_options_files_and_skips(data):
    import os

    base = _dataset(data)
    before = base.fingerprint()
    assert _dataset(data).fingerprint() == before
    assert _dataset(data, seed=1).fingerprint() != before                    # seeded splits
    assert S3VE(S3VEOptions(root=str(data), **{**SMALL, "frames": 5}), 0).fingerprint() != before
    assert S3VE(S3VEOptions(root=str(data), **SMALL, eeg_norm="none"), 0).fingerprint() != before
    key = base.split("train").keys[0]
    base.skip(frozenset({key}))
    assert base.fingerprint() != before and key not in base.split("train").keys
    os.utime(data / "S001" / "hypnogram.edf", ns=(1, 1))
    assert _dataset(data).fingerprint() != before
