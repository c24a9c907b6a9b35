"""Sleep file formats and the facts the sleep loaders rest on: what the generators write reads back with an
independent EDF reader (pyedflib), stages map to AASM classes, EEG epochs and video clips come from the right
stretch of the night, splits keep subjects apart, and Sleep-EDF wake is trimmed."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyedflib
import pytest
from kdbench_plugins.shared import media
from kdbench_plugins.datasets.sleep import hypnogram as H
from kdbench_plugins.datasets.sleep import synth
from kdbench_plugins.datasets.sleep.s3ve import S3VE, S3VEOptions
from kdbench_plugins.datasets.sleep.sleepedf import SleepEDF, SleepEDFOptions
from kdbench_plugins.datasets.sleep.splits import ahi_group, assign

START = dt.datetime(1989, 4, 24, 16, 13)
QUANTUM = (synth.UV_RANGE[1] - synth.UV_RANGE[0]) / 65535  # one step of a 16-bit EDF sample, microvolts


# --------------------------------------------------------------------------- round trips through pyedflib


def test_psg_written_reads_back_with_pyedflib(tmp_path):
    rng = np.random.default_rng(0)
    stages = synth.stage_sequence(rng, 6)
    signals = synth.night_eeg(rng, synth.classes_of(stages), rng.standard_normal(6), 256, synth.S3VE_CHANNELS)
    synth.write_psg(tmp_path / "psg.edf", signals, 256, START)
    with pyedflib.EdfReader(str(tmp_path / "psg.edf")) as edf:
        assert edf.getSignalLabels() == list(synth.S3VE_CHANNELS)
        assert edf.getStartdatetime() == START
        for k, (name, intended) in enumerate(signals.items()):
            assert edf.getSampleFrequency(k) == 256
            assert edf.getPhysicalDimension(k) == "uV"
            back = edf.readSignal(k)
            assert back.shape == intended.shape
            assert np.abs(back - intended).max() <= QUANTUM  # within EDF quantisation
            assert np.std(intended) > 5.0                     # a real signal, not zeros


def test_hypnogram_written_reads_back_with_pyedflib(tmp_path):
    stages = ["W", "W", "1", "2", "2", "M", "3", "4", "4", "R", "?", "W"]
    synth.write_hypnogram_edf(tmp_path / "hyp.edf", stages, START)
    with pyedflib.EdfReader(str(tmp_path / "hyp.edf")) as edf:
        onsets, durations, texts = edf.readAnnotations()
    intended = synth.stage_annotations(stages)
    assert list(texts) == [t for _, _, t in intended]
    assert list(texts)[:4] == ["Sleep stage W", "Sleep stage 1", "Sleep stage 2", "Movement time"]
    np.testing.assert_allclose(onsets, [o for o, _, _ in intended])
    np.testing.assert_allclose(durations, [d for _, d, _ in intended])
    # and the loader's reading (MNE) of the same file gives one class per epoch
    hyp = H.read_edf_hypnogram(tmp_path / "hyp.edf")
    assert hyp.codes.tolist() == [0, 0, 1, 2, 2, H.MOVEMENT, 3, 3, 3, 4, H.UNKNOWN, 0]
    assert hyp.stage4 == 2


def test_generated_sleepedf_agrees_with_pyedflib(tmp_path):
    """The loader (MNE) and pyedflib see the same stages and the same samples in a generated night."""
    synth.write_sleepedf(tmp_path, synth.SleepEDFSynthOptions(subjects=1, epochs=10, wake_edge=3, unscored_tail=2),
                         seed=5, echo=lambda m: None)
    psg = min(tmp_path.glob("*-PSG.edf"))
    hyp = min(tmp_path.glob("*-Hypnogram.edf"))
    assert psg.name[:7] == hyp.name[:7] and psg.name[7] != hyp.name[7]   # paired on SC4ssN
    with pyedflib.EdfReader(str(hyp)) as edf:
        onsets, durations, texts = edf.readAnnotations()
    expected = np.full(int(round((onsets[-1] + durations[-1]) / 30)), -9)
    for onset, duration, text in zip(onsets, durations, texts):
        expected[int(onset // 30):int((onset + duration) // 30)] = H.stage_code(text)[0]
    data = SleepEDF(SleepEDFOptions(root=str(tmp_path), trim_wake=None, test_fraction=0, val_fraction=0), seed=0)
    night = data.nights[0]
    assert H.read_edf_hypnogram(hyp).codes.tolist() == expected.tolist()
    assert night.labels.tolist() == expected[expected >= 0].tolist()
    with pyedflib.EdfReader(str(psg)) as edf:
        fpz = edf.readSignal(edf.getSignalLabels().index("EEG Fpz-Cz"))
    split = data.split("train")
    first = np.flatnonzero(split.night_of == 0)                      # the items of SC4001
    assert len(first) == len(night.labels)
    for i in (first[0], first[len(first) // 2], first[-1]):
        k = int(split.epoch_of[i])
        eeg = split.decode(i, ("teacher",))["teacher"]
        assert eeg.shape == (1, 3000)
        np.testing.assert_allclose(eeg[0], fpz[3000 * k:3000 * k + 3000], atol=1e-3)


# --------------------------------------------------------------------------- stages


@pytest.mark.parametrize("text, code, four", [
    ("Sleep stage W", 0, False), ("Sleep stage 1", 1, False), ("Sleep stage 2", 2, False),
    ("Sleep stage 3", 3, False), ("Sleep stage 4", 3, True), ("Sleep stage R", 4, False),
    ("Sleep stage ?", H.UNKNOWN, False), ("Movement time", H.MOVEMENT, False),
    ("N3", 3, False), ("n4", 3, True), ("REM", 4, False), ("wake", 0, False), ("MT", H.MOVEMENT, False),
    ("Lights off", None, False), ("4", None, False), ("N5", None, False),
])
def test_stage_codes(text, code, four):
    assert H.stage_code(text) == (code, four)


def test_csv_hypnogram_reports_foreign_labels(tmp_path):
    path = tmp_path / "hypnogram.csv"
    path.write_text("epoch,stage\n0,W\n1,N1\n2,N5\n3,N4\n4,MT\n5,3\n")
    hyp = H.read_csv_hypnogram(path)
    assert hyp.codes.tolist() == [0, 1, H.GAP, 3, H.MOVEMENT, H.GAP]
    assert hyp.stage4 == 1
    assert [(k, where, text) for k, where, text in hyp.foreign] == [(2, "line 4", "N5"), (5, "line 7", "3")]
    path.write_text("epoch,stage\n0,W\n2,N1\n")
    assert "epoch '2' where 1 was expected" in H.read_csv_hypnogram(path).error


def test_edf_hypnogram_off_the_epoch_grid_is_refused(tmp_path):
    import edfio

    edfio.Edf([], annotations=[edfio.EdfAnnotation(0, 30, "Sleep stage W"),
                               edfio.EdfAnnotation(45, 30, "Sleep stage 2")]).write(tmp_path / "h.edf")
    assert "off the 30-s epoch grid" in H.read_edf_hypnogram(tmp_path / "h.edf").error


# --------------------------------------------------------------------------- alignment


def _ramp_night(folder, rate=200, epochs=6):
    """A PSG whose 'EEG Fpz-Cz' is a ramp of 1 microvolt per second (its value says the time)."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(epochs * 30 * rate) / rate
    noise = np.random.default_rng(0).normal(0, 5, t.shape)
    synth.write_psg(folder / "SC4001E0-PSG.edf", {"EEG Fpz-Cz": t, "EEG Pz-Oz": noise}, rate, START, 30.0)
    synth.write_hypnogram_edf(folder / "SC4001EC-Hypnogram.edf", ["2"] * epochs, START)


def test_eeg_epoch_k_is_seconds_30k_to_30k_plus_30_after_resampling(tmp_path):
    import mne
    from scipy.signal import resample_poly

    _ramp_night(tmp_path)
    data = SleepEDF(SleepEDFOptions(root=str(tmp_path), eeg_norm="none"), seed=0)
    split = data.split("train")
    assert [int(e) for e in split.epoch_of] == list(range(6))
    raw = mne.io.read_raw_edf(str(tmp_path / "SC4001E0-PSG.edf"), preload=False, verbose="error")
    whole = resample_poly(raw.get_data(picks=["EEG Fpz-Cz"])[0] * 1e6, 1, 2)  # the whole channel, 200 -> 100 Hz
    for i in range(len(split)):
        k = int(split.epoch_of[i])
        epoch = split[i]["teacher"].numpy()[0]
        assert epoch.shape == (3000,)
        np.testing.assert_allclose(epoch, whole[3000 * k:3000 * k + 3000], rtol=1e-5, atol=1e-3)
        if 0 < k < 5:  # away from the recording's ends, the ramp says which seconds these are
            np.testing.assert_allclose(epoch, 30 * k + np.arange(3000) / 100, atol=0.05)


def _brightness_night(root, offset, fps=2.0, epochs=4):
    """An s3ve night whose video brightness encodes video time: frame j has grey level round(0.9 j)."""
    folder = root / "S001"
    folder.mkdir(parents=True)
    rate = 200
    synth.write_psg(folder / "psg.edf", {"EEG C4-M1": np.zeros(epochs * 30 * rate)}, rate, START)
    synth.write_hypnogram_csv(folder / "hypnogram.csv", ["2"] * epochs)
    count = int((epochs * 30 - offset + 2) * fps)
    frames = np.repeat(np.round(0.9 * np.arange(count)).astype(np.uint8)[:, None, None], 48, 1).repeat(64, 2)
    media.write_avi(folder / "video.avi", frames, fps)
    (root / "subjects.csv").write_text(f"subject,ahi,video_offset\nS001,3.0,{offset}\n")


def test_video_clip_comes_from_the_right_part_of_the_video(tmp_path):
    offset, fps, T = -7.5, 2.0, 6
    _brightness_night(tmp_path, offset, fps)
    data = S3VE(S3VEOptions(root=str(tmp_path), frames=T, height=16, width=16, test_fraction=0, val_fraction=0), 0)
    assert not data.problems
    split = data.split("train")
    assert len(split) == 4
    for i in range(len(split)):
        k = int(split.epoch_of[i])
        clip = split.decode(i, ("student",))["student"]
        assert clip.shape == (1, T, 16, 16) and clip.dtype == np.uint8
        psg_times = 30 * k + (np.arange(T) + 0.5) * 30 / T
        frame = np.floor((psg_times - offset) * fps)           # the frame on screen at that PSG time
        np.testing.assert_allclose(clip[0].mean(axis=(1, 2)), np.round(0.9 * frame), atol=2.5)


def test_video_that_starts_after_the_psg_leaves_early_epochs_bad(tmp_path):
    _brightness_night(tmp_path, offset=20.0)
    data = S3VE(S3VEOptions(root=str(tmp_path), frames=4, height=16, width=16), 0)
    [problem] = data.problems
    assert problem.file == "S001/video.avi" and "video covers PSG 20.0-" in problem.message
    assert problem.items == ("S001/0000",)


# --------------------------------------------------------------------------- splits


def test_ahi_groups_follow_the_paper():
    assert [ahi_group(a) for a in (0, 4.9, 5, 14.9, 15, 30, 30.1, None)] == \
        ["AHI<5", "AHI<5", "AHI 5-15", "AHI 5-15", "AHI 15-30", "AHI 15-30", "AHI>30", "AHI unknown"]


def test_subject_splits_are_stratified_disjoint_and_seeded():
    sizes = {"AHI<5": 30, "AHI 5-15": 30, "AHI 15-30": 20, "AHI>30": 25}   # the paper's 105 subjects
    groups = {f"{g}-{i:02d}": g for g, n in sizes.items() for i in range(n)}
    split = assign(groups, seed=0)
    assert set(split) == set(groups)                                      # each subject in exactly one split
    per = {g: {s: sum(1 for k, v in split.items() if groups[k] == g and v == s) for s in ("train", "val", "test")}
           for g in sizes}
    assert [per[g]["test"] for g in sizes] == [6, 6, 4, 5]                 # 20 % of each group
    assert sum(per[g]["val"] for g in sizes) == 17                         # 20 % of the 84 left
    assert all(abs(per[g]["val"] - 0.2 * (sizes[g] - per[g]["test"])) < 1 for g in sizes)
    assert assign(groups, seed=0) == split                                 # deterministic in the seed
    assert assign(groups, seed=1) != split


def test_small_datasets_still_get_a_test_and_a_val_subject():
    split = assign({f"s{i}": ("AHI<5", "AHI 5-15", "AHI 15-30", "AHI>30", "AHI unknown")[i % 5] for i in range(4)}, 3)
    assert sorted(split.values()) == ["test", "train", "train", "val"]


@pytest.mark.parametrize("n, fractions, sides", [
    (3, (0.2, 0.2), ["test", "train", "val"]),        # the documented minimum: 3 subjects give one of each
    (2, (0.2, 0.2), ["test", "train"]),               # training keeps a subject before validation gets one
    (2, (0.0, 0.2), ["train", "val"]),
    (1, (0.2, 0.2), ["train"]),
    (3, (0.2, 0.0), ["test", "train", "train"]),      # a fraction of 0 asks for none
])
def test_smallest_datasets_split_as_documented(n, fractions, sides):
    for seed in range(3):
        assert sorted(assign({f"s{i}": "all" for i in range(n)}, seed, *fractions).values()) == sides


# --------------------------------------------------------------------------- unusable files, told apart


def test_hypnogram_that_is_not_a_readable_edf_plus_says_so(tmp_path):
    import edfio

    good = tmp_path / "good.edf"
    synth.write_hypnogram_edf(good, ["W", "1", "2", "2"], START)
    cases = {"junk.edf": b"junk, not an EDF\n", "cut.edf": good.read_bytes()[:400]}
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        assert H.read_hypnogram(tmp_path / name).error.startswith("not a readable EDF+ file ("), name
    synth.write_psg(tmp_path / "psg.edf", {"EEG Fpz-Cz": np.zeros(3000), "EEG Pz-Oz": np.zeros(3000)}, 100, START)
    assert H.read_hypnogram(tmp_path / "psg.edf").error == ("not a hypnogram: an EDF with 2 signal channel(s) "
                                                            "(EEG Fpz-Cz, EEG Pz-Oz) and no annotations (is it a PSG?)")
    edfio.Edf([], annotations=[edfio.EdfAnnotation(0, 30, "Lights off")]).write(tmp_path / "lights.edf")
    assert H.read_hypnogram(tmp_path / "lights.edf").error.startswith("no sleep-stage annotations")


def test_psg_header_tells_truncation_and_annotation_files(tmp_path):
    from kdbench_plugins.datasets.sleep.psg import read_header

    synth.write_psg(tmp_path / "psg.edf", {"EEG Fpz-Cz": np.zeros(4 * 3000)}, 100, START, 30.0)   # 4 records of 30 s
    whole, _ = read_header(tmp_path / "psg.edf")
    assert whole.epochs == 4 and not whole.truncation
    blob = (tmp_path / "psg.edf").read_bytes()
    (tmp_path / "cut.edf").write_bytes(blob[:len(blob) - 3000 * 2 - 10])              # 2 whole records left
    cut, _ = read_header(tmp_path / "cut.edf")
    assert (cut.epochs, cut.as_promised().epochs) == (2, 4)
    assert cut.truncation == "truncated: the header promises 4 data records, the file holds 2 (60 of 120 s)"
    (tmp_path / "bare.edf").write_bytes(blob[:512])                                    # the header alone
    assert read_header(tmp_path / "bare.edf") == (None, ("truncated: the header promises 4 data records, the file "
                                                         "holds none"))
    synth.write_hypnogram_edf(tmp_path / "hyp.edf", ["W", "2"], START)
    assert read_header(tmp_path / "hyp.edf") == (None, "no signal channels, only EDF+ annotations (is it a hypnogram?)")


def test_subjects_table_split_column_is_honoured(tmp_path):
    synth.write_s3ve(tmp_path, synth.S3VESynthOptions(subjects=3, epochs=4, csv_every=0), seed=0, echo=lambda m: None)
    table = (tmp_path / "subjects.csv").read_text().splitlines()
    wanted = {"S001": "test", "S002": "train", "S003": "validation"}
    rows = [table[0] + ",split"] + [line + "," + wanted[line.split(",")[0]] for line in table[1:]]
    (tmp_path / "subjects.csv").write_text("\n".join(rows) + "\n")
    data = S3VE(S3VEOptions(root=str(tmp_path), frames=2, height=16, width=16), seed=7)
    assert not data.problems
    for name, expected in (("train", "S002"), ("val", "S003"), ("test", "S001")):
        keys = data.split(name).keys
        assert keys and {k.split("/")[0] for k in keys} == {expected}


def test_sleepedf_nights_of_a_subject_stay_together(tmp_path):
    synth.write_sleepedf(tmp_path, synth.SleepEDFSynthOptions(subjects=5, epochs=4, wake_edge=1, unscored_tail=0),
                         seed=0, echo=lambda m: None)
    for seed in range(3):
        data = SleepEDF(SleepEDFOptions(root=str(tmp_path)), seed)
        side = {}
        for name in data.splits:
            for key in data.split(name).keys:
                assert side.setdefault(key[:5], name) == name          # SC4ss: both nights on one side
        assert len(side) == 5 and sorted(side.values()).count("test") == 1


# --------------------------------------------------------------------------- wake trimming


def test_sleepedf_trims_wake_far_from_sleep(tmp_path):
    stages = ["W"] * 70 + ["1", "2", "M", "3", "4", "R"] + ["W"] * 65 + ["?"] * 5
    rate = 100
    synth.write_psg(tmp_path / "SC4001E0-PSG.edf", {"EEG Fpz-Cz": np.zeros(len(stages) * 30 * rate)}, rate, START, 30.0)
    synth.write_hypnogram_edf(tmp_path / "SC4001EC-Hypnogram.edf", stages, START)
    trimmed = SleepEDF(SleepEDFOptions(root=str(tmp_path), test_fraction=0, val_fraction=0), 0)
    epochs = trimmed.split("train").epoch_of.tolist()
    # 30 min = 60 epochs of wake on each side of the sleep period (epochs 70..75)
    assert epochs == list(range(10, 72)) + [73, 74, 75] + list(range(76, 136))
    assert trimmed.dropped["wake epochs more than 30 min from sleep"] == 10 + 5
    assert trimmed.dropped["movement-time epochs"] == 1 and trimmed.dropped["unscored epochs ('?')"] == 5
    assert trimmed.split("train").labels[epochs.index(74)] == 3          # stage 4 -> N3
    kept = SleepEDF(SleepEDFOptions(root=str(tmp_path), trim_wake=0, test_fraction=0, val_fraction=0), 0)
    assert len(kept.split("train")) == len(stages) - 1 - 5
    assert kept.fingerprint() != trimmed.fingerprint()


def test_sleep_cassette_subfolder_is_accepted(tmp_path):
    _ramp_night(tmp_path / "sleep-cassette")
    data = SleepEDF(SleepEDFOptions(root=str(tmp_path)), 0)
    assert not data.problems and len(data.nights) == 1 and data.nights[0].name == "SC4001"
