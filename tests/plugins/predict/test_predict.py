"""``kdbench predict`` end to end on a generated ``s3ve`` dataset and a student trained there by ``kdbench run``:
the clips are the dataset's own (same code, same arrays), every output reads back with the tool it is meant
for (MNE for the EDF+ annotations, the ``s3ve`` dataset for the hypnogram), and each kind of bad input is one
line, a non-zero exit and no output."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kdbench.cli import main
from kdbench.data.clips import model_input
from kdbench.metrics import score
from kdbench_plugins.datasets.sleep.hypnogram import CLASS_NAMES, read_hypnogram
from kdbench_plugins.datasets.sleep.s3ve import S3VE, S3VEOptions, night_clips
from kdbench_plugins.predict import outputs
from kdbench_plugins.predict.sleepstats import sleep_statistics
from kdbench_plugins.predict.timeline import Timeline
from kdbench_plugins.shared import media

SMALL = {"frames": 4, "height": 32, "width": 32}
SETS = [a for k, v in SMALL.items() for a in ("--set", f"dataset.{k}={v}")]
RUN = ["--distiller", "kd", "--teacher", "tiny-eeg", "--student", "tiny-3dcnn", "--epochs", "1",
       "--set", "teacher_training.epochs=1", "--set", "batch_size=8", "--no-progress", *SETS]


class Trained:
    """The module's generated dataset, its tracking store and the finished student run."""

    def __init__(self, root: Path, data: Path, uri: str, run_id: str, checkpoint: Path) -> None:
        self.root, self.data, self.uri, self.run_id, self.checkpoint = root, data, uri, run_id, checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mlflow_template) -> Trained:
    root = tmp_path_factory.mktemp("predict")
    shutil.copy(mlflow_template, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDBENCH_CACHE_DIR", str(root / "cache"))
        mp.chdir(root)
        assert main(["data", "synth", "s3ve", "--root", str(root / "data"), "--subjects", "4", "--seed", "5",
                     "--set", "epochs=12", "--set", "csv_every=2"]) == 0
        torch.manual_seed(0)
        assert main(["run", "--dataset", "s3ve", "--data-root", str(root / "data"), *RUN, "--tracking-uri", uri]) == 0
    import mlflow

    client = mlflow.MlflowClient(uri)
    [run] = [r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
             if r.data.tags.get("kdbench.role") == "student"]
    [checkpoint] = (root / "kdbench-runs").glob("*/checkpoint.pt")
    return Trained(root, root / "data", uri, run.info.run_id, checkpoint)


@pytest.fixture
def predict(trained, cli, tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_CACHE_DIR", str(trained.root / "cache"))
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str, student: tuple[str, ...] | None = None):
        student = ("--run", trained.run_id) if student is None else student
        return cli("predict", *student, "--tracking-uri", trained.uri, "--no-progress", *args)

    return invoke


def _dataset(trained) -> S3VE:
    return S3VE(S3VEOptions(root=str(trained.data), **SMALL), 0)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _one_line(result) -> str:
    assert result.code == 2, (result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    return lines[0]


# --------------------------------------------------------------------------- the clips are the dataset's


def test_night_clips_are_the_training_clips(trained):
    """Streaming a whole night gives, epoch by epoch, exactly the arrays the dataset gives its training items."""
    ds = _dataset(trained)
    for n, night in enumerate(ds.nights[:2]):
        t = Timeline.aligned(night.offset, 30.0)
        clips = list(night_clips(night.video, t.start, ds.options))
        assert len(clips) >= len(night.epochs) > 0
        for j, clip in enumerate(clips):
            k = t.first_psg_epoch + j
            if k * 30.0 + 30.0 - night.offset <= night.video_frames / night.video_fps:
                assert np.array_equal(clip, ds.reader.frames(n, k)), (night.name, k)


def test_timeline_aligns_on_the_psg_grid():
    assert Timeline.aligned(-4.98, 30.0).start == pytest.approx(4.98, abs=1e-12)
    assert Timeline.aligned(-4.98, 30.0).first_psg_epoch == 0
    assert Timeline.aligned(5.0, 30.0).start == 25.0 and Timeline.aligned(5.0, 30.0).first_psg_epoch == 1
    assert Timeline(7.0, 0.0, 30.0, None).first_psg_epoch is None      # off the grid by 7 s
    assert Timeline(60.5, 0.0, 30.0, None).first_psg_epoch == 2        # within the reader's 1-s slack
    camera_first = Timeline.aligned(-65.0, 30.0)                       # the camera ran 65 s before the PSG
    assert camera_first.start == 65.0 and camera_first.first_psg_epoch == 0
    assert Timeline(5.0, -65.0, 30.0, None).first_psg_epoch is None    # PSG time -60 s: before the PSG


# --------------------------------------------------------------------------- a night, staged


def test_predict_stages_a_night_and_every_output_reads_back(trained, predict, tmp_path):
    night = trained.data / "S001"
    done = predict("--video", str(night / "video.avi"), "--psg-hypnogram", str(night / "hypnogram.edf"),
                   "--out", "night")
    assert done.code == 0, done.err
    out = tmp_path / "night"
    assert sorted(p.name for p in out.iterdir()) == sorted(outputs.ALL)
    assert "Total sleep time (TST)" in done.out and "Cohen's kappa" in done.out and "video offset" in done.out

    # every epoch the header promises, each the student's answer on the dataset's own clip of that epoch
    ds = _dataset(trained)
    n = [k for k, x in enumerate(ds.nights) if x.name == "S001"][0]
    info = media.probe(night / "video.avi")
    t = Timeline.aligned(ds.nights[n].offset, 30.0)
    rows = _rows(out / outputs.EPOCHS_CSV)
    assert len(rows) == int((info.frames / info.fps - t.start) // 30.0)
    from kdbench.plugins import plugins
    from kdbench_plugins.predict.student import read_checkpoint, rebuild

    model = rebuild(*read_checkpoint(str(trained.checkpoint)), plugins(), torch.device("cpu")).model
    clips = np.stack([ds.reader.frames(n, t.first_psg_epoch + j) for j in range(len(rows))])
    with torch.inference_mode():
        expected = torch.softmax(model(model_input(clips)).logits.double(), 1).numpy()
    probs = np.array([[float(r[f"p_{c}"]) for c in CLASS_NAMES] for r in rows])
    stages = np.array([CLASS_NAMES.index(r["stage"]) for r in rows])
    np.testing.assert_allclose(probs, expected, atol=1e-6)   # the CSV holds 6 decimals
    assert (stages == probs.argmax(1)).all()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)

    # EDF+ annotations, read by MNE: one per run of equal stages, on the PSG's clock
    import mne

    annotations = mne.read_annotations(str(out / outputs.HYPNOGRAM_EDF))
    per_epoch = []
    for onset, duration, text in zip(annotations.onset, annotations.duration, annotations.description):
        assert onset % 30.0 == 0 and duration % 30.0 == 0
        per_epoch += [text] * int(duration // 30.0)
    names = {"W": "Sleep stage W", "N1": "Sleep stage 1", "N2": "Sleep stage 2", "N3": "Sleep stage 3",
             "REM": "Sleep stage R"}
    assert per_epoch[t.first_psg_epoch:] == [names[r["stage"]] for r in rows]

    # both hypnogram files, read by the s3ve dataset's reader, give the predicted stages at their PSG epochs
    for name in (outputs.HYPNOGRAM_EDF, outputs.HYPNOGRAM_CSV):
        hyp = read_hypnogram(out / name)
        assert not hyp.error and (hyp.codes[t.first_psg_epoch:] == stages).all(), name

    # ... and as the night's hypnogram of an s3ve folder: the dataset's labels are the prediction
    copy = Path(shutil.copytree(trained.data, tmp_path / "relabelled"))
    (copy / "S001" / "hypnogram.edf").unlink()
    shutil.copy(out / outputs.HYPNOGRAM_CSV, copy / "S001" / "hypnogram.csv")
    relabelled = S3VE(S3VEOptions(root=str(copy), **SMALL), 0)
    [again] = [x for x in relabelled.nights if x.name == "S001"]
    kept = again.epochs - t.first_psg_epoch
    assert len(kept) and (again.labels == stages[kept]).all()

    # statistics of both hypnograms over the same epochs, agreement over the PSG's scored ones
    stats = json.loads((out / outputs.STATS_JSON).read_text())
    psg = read_hypnogram(night / "hypnogram.edf").codes[t.first_psg_epoch:t.first_psg_epoch + len(rows)]
    assert stats["statistics"]["predicted"] == sleep_statistics(stages)
    assert stats["statistics"]["PSG"] == sleep_statistics(psg)
    agreement = json.loads((out / outputs.AGREEMENT_JSON).read_text())
    scored = psg >= 0
    expected_scores = score(psg[scored], stages[scored], CLASS_NAMES)
    assert agreement["epochs_compared"] == int(scored.sum())
    assert agreement["confusion"]["matrix"] == expected_scores.confusion.tolist()
    assert agreement["accuracy"] == expected_scores.accuracy and agreement["kappa"] == expected_scores.kappa
    assert [r["psg_stage"] for r in rows] == [CLASS_NAMES[c] if c >= 0 else "?" for c in psg]

    import matplotlib.image

    picture = matplotlib.image.imread(out / outputs.PLOT)
    assert picture.shape[0] > 400 and picture.shape[1] > 1000 and picture[..., :3].std() > 0.05


def test_checkpoint_gives_the_run_s_prediction(trained, predict, tmp_path):
    video = str(trained.data / "S002" / "video.avi")
    assert predict("--video", video, "--out", "a").code == 0
    assert predict("--video", video, "--out", "b", student=("--checkpoint", str(trained.checkpoint))).code == 0
    assert (tmp_path / "a" / outputs.EPOCHS_CSV).read_text() == (tmp_path / "b" / outputs.EPOCHS_CSV).read_text()
    assert not (tmp_path / "a" / outputs.AGREEMENT_JSON).exists()      # no PSG hypnogram, no agreement


def test_a_truncated_video_gives_the_epochs_before_the_damage(trained, predict, tmp_path):
    video = tmp_path / "cut.avi"
    data = (trained.data / "S003" / "video.avi").read_bytes()
    video.write_bytes(data[:len(data) // 2])
    done = predict("--video", str(video), "--video-offset", "0", "--out", "cut")
    assert done.code == 0, done.err
    warning = [line for line in done.err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and ("truncated" in warning[0] or "decoding failed" in warning[0]), done.err
    rows = _rows(tmp_path / "cut" / outputs.EPOCHS_CSV)
    whole = int(media.probe(trained.data / "S003" / "video.avi").duration // 30)
    assert 0 < len(rows) < whole
    assert json.loads((tmp_path / "cut" / outputs.STATS_JSON).read_text())["warnings"] == [warning[0][9:]]


# --------------------------------------------------------------------------- bad input: one line, no output


def _doctored(trained, tmp_path, **config) -> str:
    """The run's checkpoint with its config changed (what another run's file would hold)."""
    payload = torch.load(trained.checkpoint, map_location="cpu", weights_only=False)
    for key, value in config.items():
        section, _, field = key.partition("__")
        if field:
            payload["config"][section][field] = value
        else:
            payload["config"][section] = value
    path = tmp_path / "doctored.pt"
    torch.save(payload, path)
    return str(path)


def test_bad_input_is_one_line_and_writes_nothing(trained, predict, tmp_path):
    video = str(trained.data / "S001" / "video.avi")
    (tmp_path / "notes.avi").write_text("not a video\n")
    media.write_avi(tmp_path / "short.avi", np.zeros((20, 32, 32), np.uint8), 1.0)   # 20 s
    cases = {
        "no run 'nope'": ("--video", video),
        "--run RUN_ID": ("--video", video),
        "does not exist": ("--video", str(tmp_path / "missing.avi")),
        "not a readable video": ("--video", str(tmp_path / "notes.avi")),
        "less than one 30-s epoch": ("--video", str(tmp_path / "short.avi")),
        "off the PSG hypnogram's 30-s grid": ("--video", video, "--start", "7",
                                              "--psg-hypnogram", str(trained.data / "S001" / "hypnogram.edf")),
        "--psg-hypnogram": ("--video", video, "--psg-hypnogram", str(tmp_path / "notes.avi")),
    }
    cases["--device 'tpu'"] = ("--video", video, "--device", "tpu")
    cases["is a file, not a folder"] = ("--video", video, "--out", str(tmp_path / "notes.avi"))
    students = {"no run 'nope'": ("--run", "nope"), "--run RUN_ID": ()}
    for expected, args in cases.items():
        line = _one_line(predict("--out", "o", *args, student=students.get(expected)))
        assert expected in line, line
        assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir()), expected

    trained_on = {
        "trained on eeg (direction = reverse)": {"direction": "reverse"},
        "has no nights of video": {"dataset__name": "synthetic"},
    }
    nan = predict("--video", video, "--start", "nan", "--out", "o")
    assert nan.code == 2 and "'nan' is not a finite number" in nan.err and "Traceback" not in nan.err

    for expected, change in trained_on.items():
        line = _one_line(predict("--video", video, "--out", "o", student=("--checkpoint",
                                                                           _doctored(trained, tmp_path, **change))))
        assert expected in line, line
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_an_earlier_prediction_is_kept_unless_overwrite(trained, predict, tmp_path):
    video = str(trained.data / "S004" / "video.avi")
    assert predict("--video", video, "--out", "o").code == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()}
    line = _one_line(predict("--video", video, "--out", "o"))
    assert "--overwrite" in line
    assert {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()} == before
    assert predict("--video", video, "--out", "o", "--overwrite").code == 0
    # a prediction with a PSG hypnogram, replaced by one without: its agreement files go with it
    psg = str(trained.data / "S004" / "hypnogram.csv")   # this generator writes every second night's as CSV
    assert predict("--video", video, "--psg-hypnogram", psg, "--out", "o", "--overwrite").code == 0
    assert (tmp_path / "o" / outputs.AGREEMENT_JSON).exists()
    assert predict("--video", video, "--out", "o", "--overwrite").code == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(set(outputs.ALL) - {outputs.AGREEMENT_JSON,
                                                                                             outputs.AGREEMENT_TXT})


def test_a_night_folder_is_never_an_output_folder(trained, predict, tmp_path):
    night = Path(shutil.copytree(trained.data / "S001", tmp_path / "S001"))
    before = {p.name: p.read_bytes() for p in night.iterdir()}
    for extra in ((), ("--overwrite",)):
        line = _one_line(predict("--video", str(night / "video.avi"), "--psg-hypnogram", str(night / "hypnogram.edf"),
                                 "--out", str(night), *extra))
        assert "would replace the --psg-hypnogram file itself" in line, line
    (night / "hypnogram.edf").rename(night / "scored.edf")
    (night / "hypnogram.csv").write_text("epoch,stage\n0,W\n")
    line = _one_line(predict("--video", str(night / "video.avi"), "--out", str(night), "--overwrite"))
    assert "which no prediction wrote" in line, line
    assert (night / "hypnogram.csv").read_text() == "epoch,stage\n0,W\n"
    assert set(p.name for p in night.iterdir()) == set(before) - {"hypnogram.edf"} | {"scored.edf", "hypnogram.csv"}


def test_a_failure_while_writing_leaves_no_file(trained, predict, tmp_path, monkeypatch):
    from kdbench_plugins.predict import report

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "plot_night", broken)
    with pytest.raises(OSError):
        predict("--video", str(trained.data / "S004" / "video.avi"), "--out", "o")
    assert not (tmp_path / "o").exists()          # the folder the command made is gone too

    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "mine.txt").write_text("mine")
    with pytest.raises(OSError):
        predict("--video", str(trained.data / "S004" / "video.avi"), "--out", "kept")
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["mine.txt"]   # no partial folder, no file


def test_epochs_off_the_psg_grid_start_the_hypnogram_files_at_the_first_epoch(trained, predict, tmp_path):
    done = predict("--video", str(trained.data / "S002" / "video.avi"), "--start", "7", "--out", "off")
    assert done.code == 0, done.err
    assert "off the PSG's 30-s grid" in done.out
    rows = _rows(tmp_path / "off" / outputs.EPOCHS_CSV)
    assert float(rows[0]["video_s"]) == 7.0 and float(rows[1]["video_s"]) == 37.0
    stages = np.array([CLASS_NAMES.index(r["stage"]) for r in rows])
    hyp = read_hypnogram(tmp_path / "off" / outputs.HYPNOGRAM_CSV)
    assert not hyp.error and (hyp.codes == stages).all()      # no leading unscored epochs: epoch 0 is video 7 s


def _write_timed(path: Path, times, codec: str) -> None:
    """A 64 x 64 video whose frames carry the given timestamps (s): a moving bar over light noise."""
    from fractions import Fraction

    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=5)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for t in times:
            image = np.full((64, 64), 60, np.uint8)
            x = int(20 + 15 * np.sin(t / 7))
            image[20:40, x:x + 12] = 220
            image = np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="gray").reformat(format="yuv420p")
            frame.pts, frame.time_base = int(round(t * 1000)), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_gaps_and_undecodable_packets_are_staged_through_and_reported(predict, tmp_path):
    times = np.arange(0.0, 500.0, 0.2)
    _write_timed(tmp_path / "gap.mkv", [t for t in times if t < 100 or t >= 400], "mpeg4")   # nothing 100-400 s
    done = predict("--video", str(tmp_path / "gap.mkv"), "--out", "gap")
    assert done.code == 0, done.err
    [warning] = [line for line in done.err.splitlines() if line.startswith("warning:")]
    # epochs 3 (90-120 s) to 13 (390-420 s) sample frames shown since 99.8 s; the stalest sample is epoch 13's
    # third (4 per clip, at 390 + 7.5 * (k + 0.5) s): 393.75 - 99.8 = 293.95 s
    assert "11 epochs (3, 4, 5, 6, 7, 8, 9, 10, ...)" in warning and "up to 294 s" in warning, warning
    assert len(_rows(tmp_path / "gap" / outputs.EPOCHS_CSV)) == 16

    _write_timed(tmp_path / "clean.mp4", times, "libx264")
    data = bytearray((tmp_path / "clean.mp4").read_bytes())
    at = int(len(data) * 0.3)
    data[at:at + 2000] = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    (tmp_path / "glitch.mp4").write_bytes(bytes(data))
    done = predict("--video", str(tmp_path / "glitch.mp4"), "--out", "glitch")
    assert done.code == 0, done.err
    [warning] = [line for line in done.err.splitlines() if line.startswith("warning:")]
    assert "undecodable packet" in warning and "may show damaged frames" in warning, warning
    assert len(_rows(tmp_path / "glitch" / outputs.EPOCHS_CSV)) == 16     # the night goes on past the damage
    stats = json.loads((tmp_path / "glitch" / outputs.STATS_JSON).read_text())
    assert stats["warnings"] == [warning[len("warning: "):]]


def test_a_killed_prediction_s_scratch_folder_is_removed_by_the_next(trained, predict, tmp_path):
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()                                                  # a pid that has exited
    out = tmp_path / "o"
    dead, live = out / f".predict-{gone.pid}.partial", out / f".predict-{os.getppid()}.partial"
    for folder in (dead, live):
        folder.mkdir(parents=True)
        (folder / outputs.EPOCHS_CSV).write_text("half")
    assert predict("--video", str(trained.data / "S003" / "video.avi"), "--out", "o").code == 0
    assert not dead.exists() and (live / outputs.EPOCHS_CSV).read_text() == "half"   # a live process's is kept
