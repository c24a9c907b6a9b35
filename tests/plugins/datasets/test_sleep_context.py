"""The ``context`` option of the sleep datasets: the teacher reads 2c + 1 consecutive EEG epochs centred on the
item's epoch, read by PSG time, zeros beyond the recording; the student's input and context=0 are unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from kdbench_plugins.datasets.sleep.s3ve import S3VE, S3VEOptions
from kdbench_plugins.datasets.sleep.sleepedf import SleepEDF, SleepEDFOptions

from kdbench.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def sleepedf(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sleepedf-context") / "data"
    assert main(["data", "synth", "sleepedf", "--root", str(root), "--subjects", "4",
                 "--set", "epochs=16", "--set", "wake_edge=8"]) == 0
    return root


def _sleepedf(root: Path, **options) -> SleepEDF:
    return SleepEDF(SleepEDFOptions(root=str(root), **options), 0)


def _item(split, night: int, epoch: int) -> int:
    """The position of (night, epoch) in a split."""
    [i] = np.flatnonzero((split.night_of == night) & (split.epoch_of == epoch))
    return int(i)


def test_context_zero_is_the_single_epoch_as_before(sleepedf):
    plain, zero = _sleepedf(sleepedf), _sleepedf(sleepedf, context=0)
    assert plain.info.teacher_input_shape == plain.info.student_input_shape == (1, 3000)
    assert "context" not in zero._params() and zero.fingerprint() == plain.fingerprint()
    sample = zero.split("test")[0]
    assert sample["teacher"].shape == sample["student"].shape == (1, 3000)


def test_context_shapes_and_the_fingerprint(sleepedf):
    plain, one = _sleepedf(sleepedf), _sleepedf(sleepedf, context=1)
    assert one.info.teacher_input_shape == (3, 1, 3000) and one.info.student_input_shape == (1, 3000)
    assert _sleepedf(sleepedf, context=15).info.teacher_input_shape == (31, 1, 3000)
    assert one.fingerprint() != plain.fingerprint() != _sleepedf(sleepedf, context=2).fingerprint()
    assert one.split("test").key != plain.split("test").key            # the clip cache keeps them apart
    sample = one.split("test")[0]
    assert sample["teacher"].shape == (3, 1, 3000) and sample["teacher"].dtype == torch.float32
    assert sample["student"].shape == (1, 3000)
    torch.testing.assert_close(sample["student"], sample["teacher"][1])        # the student reads the centre
    for option in (-1, 16):
        with pytest.raises(ValueError):
            SleepEDFOptions(context=option)


def test_each_epoch_of_the_sequence_equals_that_epoch_read_on_its_own(sleepedf):
    one, plain = _sleepedf(sleepedf, context=1), _sleepedf(sleepedf)
    split, single = one.split("train"), plain.split("train")
    checked = 0
    for i in range(len(split)):
        night, epoch = int(split.night_of[i]), int(split.epoch_of[i])
        sequence = split[i]["teacher"]
        for j, k in enumerate((epoch - 1, epoch, epoch + 1)):
            if ((single.night_of == night) & (single.epoch_of == k)).any():   # the neighbour is an item too
                torch.testing.assert_close(sequence[j], single[_item(single, night, k)]["teacher"])  # z-scored alike
                checked += 1
        if checked > 12:
            break
    assert checked > 12


def test_neighbours_are_read_whatever_their_stage_and_zero_beyond_the_recording(sleepedf):
    wide = _sleepedf(sleepedf, context=15, eeg_norm="none")
    split, reader = wide.split("train"), wide.reader
    night = int(split.night_of[0])
    items = np.flatnonzero(split.night_of == night)
    first, last = items[np.argmin(split.epoch_of[items])], items[np.argmax(split.epoch_of[items])]
    total = reader.whole_epochs(night)
    for i in (first, last):
        epoch = int(split.epoch_of[i])
        sequence = split[int(i)]["teacher"].numpy()
        for j, k in enumerate(range(epoch - 15, epoch + 16)):
            if 0 <= k < total:   # in the recording, an item or not (the unscored tail after the last item)
                np.testing.assert_array_equal(sequence[j], reader.eeg(night, k))
                assert np.abs(sequence[j]).max() > 0
            else:
                assert not sequence[j].any()
    assert int(split.epoch_of[first]) < 15 and total - int(split.epoch_of[last]) <= 15   # both edges were reached
    assert int(split.epoch_of[last]) + 1 < total and not (split.epoch_of[items] == int(split.epoch_of[last]) + 1).any()


def test_zscore_applies_to_each_epoch_and_leaves_padding_zero(sleepedf):
    wide = _sleepedf(sleepedf, context=15)
    split = wide.split("train")
    sequence = split[int(np.argmin(split.epoch_of))]["teacher"]
    padding = sequence.flatten(1).abs().amax(1) == 0
    assert 0 < int(padding.sum()) < 31
    real = sequence[~padding].flatten(1)
    torch.testing.assert_close(real.mean(1), torch.zeros(len(real)), atol=1e-4, rtol=0)
    torch.testing.assert_close(real.std(1), torch.ones(len(real)), atol=1e-4, rtol=0)


def test_prepare_stores_the_sequences_and_runs_read_them(sleepedf, tmp_path, monkeypatch, cli):
    monkeypatch.setenv("KDBENCH_CACHE_DIR", str(tmp_path / "cache"))
    prepared = cli("data", "prepare", "sleepedf", "--root", str(sleepedf), "--set", "context=1")
    assert prepared.code == 0, prepared.err
    fresh = _sleepedf(sleepedf, context=1).split("val")
    assert np.load(fresh.cache_path / "teacher.npy", mmap_mode="r").shape == (len(fresh), 3, 1, 3000)
    assert np.load(fresh.cache_path / "student.npy", mmap_mode="r").shape == (len(fresh), 1, 3000)
    cached = fresh[2]
    assert fresh._prepared()
    decoded = fresh._decode_checked(2, ("student", "teacher"))
    torch.testing.assert_close(cached["teacher"], fresh.to_tensor("teacher", decoded["teacher"]))
    torch.testing.assert_close(cached["student"], fresh.to_tensor("student", decoded["student"]))


def test_s3ve_takes_context_for_the_teacher_only(tmp_path):
    root = tmp_path / "s3ve"
    assert main(["data", "synth", "s3ve", "--root", str(root), "--subjects", "1", "--set", "epochs=4"]) == 0
    small = {"frames": 2, "height": 16, "width": 16, "eeg_norm": "none"}
    one = S3VE(S3VEOptions(root=str(root), context=1, **small), 0)
    plain = S3VE(S3VEOptions(root=str(root), **small), 0)
    assert one.info.teacher_input_shape == (3, 1, 3000)
    assert one.info.student_input_shape == plain.info.student_input_shape == (1, 2, 16, 16)
    assert one.fingerprint() != plain.fingerprint() and "context" not in plain._params()
    split, single = one.split("train"), plain.split("train")
    epochs, total = [int(e) for e in split.epoch_of], one.reader.whole_epochs(0)
    assert epochs == [0, 1, 3] and total == 4         # epoch 2 is not a sample (this generated night scores it so)
    for i, epoch in enumerate(epochs):   # the PSG is at 256 Hz: each epoch is resampled to 100 Hz on its own
        sequence = split[i]["teacher"].numpy()
        assert sequence.shape == (3, 1, 3000)
        for j, k in enumerate((epoch - 1, epoch, epoch + 1)):
            if 0 <= k < total:
                np.testing.assert_array_equal(sequence[j], one.reader.eeg(0, k))
                assert np.abs(sequence[j]).max() > 0                   # epoch 2 too, though it is no item
            else:
                assert not sequence[j].any()                           # before the PSG's start, after its end
        torch.testing.assert_close(torch.from_numpy(sequence[1]), single[i]["teacher"], atol=0, rtol=0)
        torch.testing.assert_close(split[i]["student"], single[i]["student"], atol=0, rtol=0)
