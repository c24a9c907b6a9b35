"""The ``ucf51`` dataset on generated data: synth -> check -> prepare -> CRD run, the audio teacher input,
official split lists, and every kind of damaged file reported in one line (run refused / --skip-bad)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from kdbench.cli import main
from kdbench.data.clips import FIELDS
from kdbench_plugins.shared import media
from kdbench_plugins.datasets.ucf51 import UCF51, UCF51Options, UCF51Split
from kdbench_plugins.datasets.ucf51.index import FILE_KINDS
from kdbench_plugins.datasets.ucf51.layout import EMBEDDINGS, LISTS, UCF51_CLASSES, VIDEOS, group_of

TINY = ("--set", "frames=4", "--set", "height=32", "--set", "width=32")
RUN_TINY = ("--set", "dataset.frames=4", "--set", "dataset.height=32", "--set", "dataset.width=32",
            "--set", "teacher_training.epochs=1", "--epochs", "1", "--no-progress")


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ucf51") / "data"
    assert main(["data", "synth", "ucf51", "--root", str(root), "--clips-per-class", "2", "--seed", "1"]) == 0
    return root


@pytest.fixture
def data(generated, tmp_path) -> Path:
    """A private copy of the generated dataset, to damage."""
    return Path(shutil.copytree(generated, tmp_path / "copy"))


def dataset(root: Path, **options) -> UCF51:
    return UCF51(UCF51Options(root=str(root), frames=4, height=32, width=32, **options), 0)


def avis(root: Path) -> list[Path]:
    return sorted((root / VIDEOS).glob("*/*.avi"))


def rows(out: str) -> dict[str, int]:
    """Split -> total of the report's counts table (51 classes: a row per class, then the totals row)."""
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("  class ")).split()[1:]
    totals = next(line for line in lines if line.startswith("  total ")).split()[1:]
    return {split: int(n) for split, n in zip(header, totals)}


# --------------------------------------------------------------------------- the generator


def test_generator_writes_the_real_layout_and_formats(generated):
    videos = avis(generated)
    assert len(videos) == 2 * 51 and {v.parent.name for v in videos} == set(UCF51_CLASSES)
    assert list((generated / VIDEOS / "HandstandPushups").glob("v_HandStandPushups_g*_c*.avi"))  # UCF101's spelling
    header = media.probe(videos[0])
    assert header.audio_rate is not None and header.frames == 10 and (header.width, header.height) == (64, 48)
    import av

    with av.open(str(videos[0])) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"
        assert container.streams.video[0].codec_context.codec_tag == "XVID"
        assert container.streams.audio[0].codec_context.name.startswith("mp3")
    embedding = np.load(generated / EMBEDDINGS / videos[0].parent.name / f"{videos[0].stem}.npy")
    assert embedding.dtype == np.float32 and embedding.shape == (512,) and 0.6 < (embedding == 0).mean() < 0.9
    lists = generated / LISTS
    assert (lists / "classInd.txt").read_text().splitlines()[0] == "1 ApplyEyeMakeup"
    train_line = (lists / "trainlist01.txt").read_bytes().split(b"\r\n")[0].decode()
    test_line = (lists / "testlist01.txt").read_bytes().split(b"\r\n")[0].decode()
    assert train_line.endswith(".avi 1") and test_line.endswith(".avi") and test_line.count(" ") == 0
    groups = {group_of(v.stem) for v in videos}
    for split in (1, 2, 3):  # every split has test and train clips
        tested = {g for g in groups if 7 * split - 6 <= g <= 7 * split}
        assert tested and groups - tested


def test_generator_is_deterministic_in_the_seed(generated, tmp_path):
    """Each clip's content depends on (seed, class, clip) only, so a 1-clip dataset of seed 1 repeats the first
    clip of every class of the 2-clip fixture (seed 1) byte for byte, and seed 2 changes them."""
    for name, seed in (("same", 1), ("other", 2)):
        assert main(["data", "synth", "ucf51", "--root", str(tmp_path / name), "--clips-per-class", "1",
                     "--seed", str(seed)]) == 0
    files = sorted(p.relative_to(tmp_path / "same") for p in (tmp_path / "same").rglob("*.*")
                   if p.suffix in (".avi", ".npy"))
    assert len(files) == 2 * 51
    assert all((tmp_path / "same" / f).read_bytes() == (generated / f).read_bytes() for f in files)
    assert all((tmp_path / "other" / f).read_bytes() != (generated / f).read_bytes() for f in files)


# --------------------------------------------------------------------------- the happy path


def test_synth_check_prepare_and_a_crd_run_reading_the_cache(generated, workdir, cli, one_thread, monkeypatch):
    checked = cli("data", "check", "ucf51", "--root", str(generated), *TINY)
    assert checked.code == 0, checked.out + checked.err
    tested = sum(group_of(v.stem) <= 7 for v in avis(generated))
    assert rows(checked.out) == {"train": 102 - tested, "test": tested}
    assert "no problems: usable" in checked.out and "split 1 from ucfTrainTestlist/trainlist01.txt" in checked.out

    prepared = cli("data", "prepare", "ucf51", "--root", str(generated), *TINY)
    assert prepared.code == 0, prepared.err
    train = dataset(generated).split("train")
    assert train._prepared()
    for i in (0, len(train) - 1):
        cached, fresh = train[i], train.decode(i, FIELDS)
        assert cached["student"].shape == (3, 4, 32, 32) and cached["teacher"].shape == (512,)
        assert np.array_equal(cached["student"].numpy(), fresh["student"] / np.float32(255))
        assert np.array_equal(cached["teacher"].numpy(), fresh["teacher"])
    assert cached["label"] == UCF51_CLASSES.index(train.keys[i].split("/")[0])

    def no_decoding(self, i, fields):
        raise AssertionError("the run decoded a file instead of reading the prepared clips")

    monkeypatch.setattr(UCF51Split, "decode", no_decoding)
    ran = cli("run", "--dataset", "ucf51", "--data-root", str(generated), "--distiller", "crd", "--teacher",
              "precomputed", "--student", "tiny-3dcnn", *RUN_TINY, "--tracking-uri", workdir.uri)
    assert ran.code == 0, ran.err
    student = [r for r in workdir.runs() if r.data.tags.get("kdbench.role") == "student"]
    assert len(student) == 1 and student[0].info.status == "FINISHED" and "loss_crd" in student[0].data.metrics


def test_audio_teacher_input_feeds_cnn14(generated, one_thread):
    from kdbench.contracts import collate
    from kdbench.plugins import plugins

    audio = dataset(generated, teacher_input="audio", audio_seconds=2.0)
    assert audio.info.teacher_input_shape == (64000,)
    assert audio.check().usable
    batch = collate([audio.split("test").only("teacher")[0]])
    wave = batch.teacher_input
    assert wave.shape == (1, 64000) and wave.dtype.is_floating_point
    assert float(wave[0, :32000].abs().max()) > 0.05                # the generated tone mixture
    assert float(wave[0, 40000:].abs().max()) == 0.0                # a 1-s clip zero-padded to 2 s
    entry = plugins()["teachers"].get("cnn14")
    teacher = entry.cls(entry.options(), audio.info).eval()
    import torch

    with torch.no_grad():
        out = teacher(wave)
    assert out.logits.shape == (1, 51) and out.embedding.shape == (1, 512)


def test_embeddings_read_from_the_tar_gz_skip_macos_junk(generated, tmp_path):
    archive = tmp_path / "embeddings.tar.gz"
    junk = b"\x00\x05\x16\x07AppleDouble"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(generated / EMBEDDINGS, arcname=EMBEDDINGS)
        for name in (f"{EMBEDDINGS}/Archery/._v_Archery_g01_c01.npy", f"__MACOSX/{EMBEDDINGS}/Archery/._x.npy"):
            info = tarfile.TarInfo(name)
            info.size = len(junk)
            tar.addfile(info, io.BytesIO(junk))
    from_folder, from_tar = dataset(generated), dataset(generated, embeddings=str(archive))
    assert from_tar.check().usable and from_tar.class_names == UCF51_CLASSES
    for side in ("train", "test"):
        assert from_tar.split(side).keys == from_folder.split(side).keys
    assert np.array_equal(from_tar.split("test").only("teacher")[4]["teacher"],
                          from_folder.split("test").only("teacher")[4]["teacher"])


@pytest.mark.parametrize("content, detail", [(b"junk\n", "not a gzip file"), (b"", "empty file")])
def test_an_unreadable_embeddings_archive_is_one_line(generated, tmp_path, content, detail):
    archive = tmp_path / f"{EMBEDDINGS}.tar.gz"
    archive.write_bytes(content)
    index = dataset(generated, embeddings=str(archive)).index
    assert [p.line() for p in index.problems_for(FILE_KINDS)] == [    # and no "102 of 102 clips have no embedding"
        (f"{archive}: not a readable .tar.gz ({detail}); re-download it or point embeddings= at the unpacked "
         f"folder [dataset]")]


def test_a_cut_off_embeddings_archive_names_only_what_it_holds_whole(generated, tmp_path):
    from kdbench_plugins.datasets.ucf51.embeddings import Embeddings

    archive = tmp_path / "embeddings.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(generated / EMBEDDINGS, arcname=EMBEDDINGS)
    blob = archive.read_bytes()
    archive.write_bytes(blob[:len(blob) // 2])
    store = Embeddings(archive, "embeddings.tar.gz")
    assert store.error.startswith("cannot read the archive after ") and "\n" not in store.error
    assert 0 < len(store.where) < 102 and all(store.load(k).shape == (512,) for k in store.keys)


# --------------------------------------------------------------------------- split lists


def _rewrite_lists(root: Path, test: set[str], extra: list[str] = ()) -> None:
    keys = sorted(f"{v.parent.name}/{v.stem}" for v in avis(root))
    (root / LISTS / "trainlist01.txt").write_text("".join(f"{k}.avi {UCF51_CLASSES.index(k.split('/')[0]) + 1}\r\n"
                                                          for k in keys if k not in test))
    (root / LISTS / "testlist01.txt").write_text("".join(f"{k}.avi\r\n" for k in sorted(test)) + "".join(extra))


def test_official_lists_are_used_over_the_group_rule(data):
    keys = sorted(f"{v.parent.name}/{v.stem}" for v in avis(data))
    by_rule = {k for k in keys if group_of(k.split("/")[1]) <= 7}
    chosen = {k for k in keys if group_of(k.split("/")[1]) >= 22}        # never tested by the rule
    assert chosen and not chosen & by_rule
    _rewrite_lists(data, chosen, extra=["YoYo/v_YoYo_g01_c01.avi\r\n"])   # a UCF101 class outside UCF51: ignored
    listed = dataset(data)
    assert set(listed.split("test").keys) == chosen and len(listed.split("train")) == len(keys) - len(chosen)
    assert listed.check().usable
    shutil.rmtree(data / LISTS)
    ruled = dataset(data)
    assert set(ruled.split("test").keys) == by_rule
    assert any("group rule" in note for note in ruled.check().notes)


# --------------------------------------------------------------------------- damaged files


def _truncate(path: Path, keep: float) -> None:
    blob = path.read_bytes()
    path.write_bytes(blob[:int(len(blob) * keep)])


def _damage(root: Path, case: str) -> str:
    """Damage one file of ``root``; return the start of the report line that must name it."""
    video = avis(root)[5]
    cls, stem = video.parent.name, video.stem
    npy = root / EMBEDDINGS / cls / f"{stem}.npy"
    if case == "truncated-avi":
        _truncate(video, 0.5)
        return f"{VIDEOS}/{cls}/{stem}.avi: truncated: "
    if case == "missing-embedding":
        npy.unlink()
        return f"{EMBEDDINGS}/{cls}/{stem}.npy: embedding missing [1 item]"
    if case == "corrupt-npy":
        npy.write_bytes(b"garbage, not an array")
        return f"{EMBEDDINGS}/{cls}/{stem}.npy: not a readable .npy file"
    if case == "wrong-shape-npy":
        np.save(npy, np.zeros(256, np.float32))
        return f"{EMBEDDINGS}/{cls}/{stem}.npy: holds float32 (256,), expected float32 (512,)"
    if case == "no-audio":
        start, end = media.video_span(video)
        frames = media.read_frames(video, start, end - start, 10, 48, 64, color=True)
        media.write_avi(video, frames, 10.0, None)
        return f"{VIDEOS}/{cls}/{stem}.avi: has no audio track"
    if case == "class-not-in-list":
        (root / EMBEDDINGS / "NotAClass").mkdir()
        np.save(root / EMBEDDINGS / "NotAClass" / "v_NotAClass_g01_c01.npy", np.zeros(512, np.float32))
        return f"{EMBEDDINGS}/NotAClass/: class folder 'NotAClass' is not one of the 51 UCF51 classes"
    if case == "list-names-nothing":
        with open(root / LISTS / "testlist01.txt", "a") as f:
            f.write("Archery/v_Archery_g03_c09.avi\r\n")
        return (f"{LISTS}/testlist01.txt: names Archery/v_Archery_g03_c09.avi, which has neither a video nor an "
                f"embedding")
    raise ValueError(case)


@pytest.mark.parametrize("case", ["truncated-avi", "missing-embedding", "corrupt-npy", "wrong-shape-npy", "no-audio",
                                  "class-not-in-list", "list-names-nothing"])
def test_a_damaged_file_is_one_line_naming_it(data, cli, workdir, case):
    line = _damage(data, case)
    sets = ("--set", "teacher_input=audio") if case == "no-audio" else ()
    checked = cli("data", "check", "ucf51", "--root", str(data), *TINY, *sets)
    assert checked.code == 1, checked.out
    assert "1 problem:" in checked.out and f"  {line}" in checked.out, checked.out
    assert "Traceback" not in checked.out + checked.err
    if case == "no-audio":  # the stored embedding needs no audio track
        assert cli("data", "check", "ucf51", "--root", str(data), *TINY).code == 0


def test_a_run_on_damaged_data_stops_and_skip_bad_trains(data, workdir, cli, one_thread):
    train = dataset(data).split("train")
    victim = train.keys[3]
    _truncate(data / VIDEOS / f"{victim}.avi", 0.4)
    args = ("run", "--dataset", "ucf51", "--data-root", str(data), "--distiller", "crd", "--student", "tiny-3dcnn",
            *RUN_TINY, "--tracking-uri", workdir.uri)
    refused = cli(*args)
    assert refused.code == 2 and f"{VIDEOS}/{victim}.avi: truncated" in refused.err
    assert "--skip-bad" in refused.err and "Traceback" not in refused.err and workdir.runs() == []

    skipped = cli(*args, "--skip-bad")
    assert skipped.code == 0, skipped.err
    [run] = [r for r in workdir.runs() if r.data.tags.get("kdbench.role") == "student"]
    import mlflow

    path = mlflow.MlflowClient(workdir.uri).download_artifacts(run.info.run_id, "skipped_items.json", str(workdir.path))
    assert json.loads(Path(path).read_text())["problems"][0]["items"] == [victim]
    assert run.data.metrics["data_skipped_items"] == 1


# --------------------------------------------------------------------------- the teacher's data alone


def test_a_copy_without_videos_serves_the_teacher_and_is_refused_to_the_student(data):
    keyed = dataset(data).split("test").key                # the clip-cache key while the videos are there
    shutil.rmtree(data / VIDEOS)
    copy = dataset(data)
    full = copy.check()
    assert [p.line() for p in full.problems] == [
        f"{VIDEOS}/: 102 of 102 videos missing under {VIDEOS}/, which does not exist (e.g. "
        f"{VIDEOS}/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi) [102 items]"]
    teacher = copy.check(fields=("teacher",))
    assert teacher.usable and teacher.counts_are == "usable"
    assert sum(sum(c.values()) for c in teacher.counts.values()) == 102
    assert any("videos are neither needed nor checked" in note for note in teacher.notes)
    for side in ("train", "test"):                         # the same items as the full split, in the same order
        assert copy.split(side, ("teacher",)).keys == copy.split(side).keys and len(copy.split(side)) > 0
    test = copy.split("test", ("teacher",))
    assert test.key != keyed                               # a cache prepared with the videos is not this one's
    item = test[1]
    assert item["student"].numel() == 0 and item["label"] == UCF51_CLASSES.index(test.keys[1].split("/")[0])
    assert np.array_equal(item["teacher"].numpy(), np.load(data / EMBEDDINGS / f"{test.keys[1]}.npy"))
    assert test.source(1) == f"{EMBEDDINGS}/{test.keys[1]}.npy"    # a read error would name the embedding alone


def test_a_teacher_check_reports_what_the_teacher_reads(data):
    video = avis(data)[5]
    key = f"{video.parent.name}/{video.stem}"
    _truncate(video, 0.5)                                  # the student's frames, not the teacher's embedding
    assert dataset(data).check(fields=("teacher",)).usable
    assert any(p.line().startswith(f"{VIDEOS}/{key}.avi: truncated") for p in dataset(data).check().problems)
    (data / EMBEDDINGS / f"{key}.npy").unlink()            # what the teacher reads
    report = dataset(data).check(fields=("teacher",))
    assert [p.line() for p in report.problems] == [f"{EMBEDDINGS}/{key}.npy: embedding missing [1 item]"]
    shutil.rmtree(data / VIDEOS)                           # an audio teacher reads the videos' audio tracks
    audio = sorted(p.line() for p in dataset(data, teacher_input="audio").check(fields=("teacher",)).problems)
    assert len(audio) == 2 and f"names {key}.avi, which has neither a video nor an embedding [1 item]" in audio[1]
    assert audio[0].startswith(f"{VIDEOS}/: 101 of 102 videos missing under {VIDEOS}/, which does not exist")


def test_teacher_train_on_embeddings_without_videos_and_a_student_run_refused(data, workdir, cli, one_thread):
    shutil.rmtree(data / VIDEOS)
    full = cli("data", "check", "ucf51", "--root", str(data), *TINY)
    assert full.code == 1 and f"102 of 102 videos missing under {VIDEOS}/" in full.out
    alone = cli("data", "check", "ucf51", "--root", str(data), *TINY, "--fields", "teacher")
    assert alone.code == 0 and "no problems: usable" in alone.out, alone.out
    assert rows(alone.out) == rows(full.out) and sum(rows(alone.out).values()) == 102
    bad = cli("data", "check", "ucf51", "--root", str(data), "--fields", "teacher,video")
    assert bad.code == 2 and bad.err.strip().splitlines() == [
        "kdbench: error: --fields 'teacher,video': give one or more of student, teacher, separated by commas"]

    trained = cli("teacher", "train", "--teacher", "precomputed", "--dataset", "ucf51", "--data-root", str(data),
                  "--set", "teacher_training.epochs=2", "--no-progress", "--tracking-uri", workdir.uri)
    assert trained.code == 0, trained.err
    [run] = workdir.runs()
    assert run.data.tags["kdbench.role"] == "teacher" and run.info.status == "FINISHED"
    assert 0.0 <= run.data.metrics["final_accuracy"] <= 1.0

    refused = cli("run", "--dataset", "ucf51", "--data-root", str(data), "--distiller", "kd", "--teacher",
                  "precomputed", "--student", "tiny-3dcnn", *RUN_TINY, "--tracking-uri", workdir.uri)
    assert refused.code == 2 and "Traceback" not in refused.err
    assert refused.err.strip().splitlines()[-1] == ("kdbench: error: dataset 'ucf51' has 1 problem(s), listed above; "
                                                    "fix them, or pass --skip-bad to leave out the bad items")
    assert f"102 of 102 videos missing under {VIDEOS}/" in refused.err and len(workdir.runs()) == 1
