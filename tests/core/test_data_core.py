"""The core's dataset-on-disk tools, on a toy file-backed dataset: reports, the check gate, the clip cache."""

from __future__ import annotations

import os

import numpy as np
import pytest

from kdbench.contracts import FIELDS, DatasetInfo, FileDataset
from kdbench.data import ClipSplit, DataReport, Problem, files_fingerprint, prepare, resolve_root
from kdbench.data.clips import split_key
from kdbench.data.guard import check, require_usable
from kdbench.errors import KdbenchError


class ToySplit(ClipSplit):
    """Item i decodes to a video filled with i and an EEG ramp starting at i; counts its decodes."""

    def __init__(self, n: int, key: str, fail_at: int | None = None) -> None:
        super().__init__([f"item{i}" for i in range(n)], np.arange(n) % 3, key)
        self.fail_at, self.decoded = fail_at, []

    def decode(self, i, fields):
        if i == self.fail_at:
            raise RuntimeError("disk on fire")
        self.decoded.append(i)
        out = {"student": np.full((1, 2, 4, 4), i, np.uint8), "teacher": np.arange(8, dtype=np.float32)[None] + i}
        return {f: out[f] for f in fields}

    def source(self, i):
        return f"toy/{i}.bin"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_report_renders_counts_problems_and_round_trips():
    report = DataReport("toy", "/data/toy", ("A", "B"), counts={"train": {"A": 3, "B": 1}, "test": {"A": 1, "B": 0}},
                        problems=[Problem("x/1.avi", "truncated: 3 of 9 frames", ("x1",))],
                        dropped={"movement epochs": 2})
    text = report.render()
    assert "train" in text and "   3" in text and "dropped by design: 2 movement epochs" in text
    assert "x/1.avi: truncated: 3 of 9 frames [1 item]" in text and "--skip-bad would leave out 1 item and use the rest" in text
    assert not report.usable and report.skippable
    assert DataReport.from_json(report.to_json()) == report
    report.problems.append(Problem("split.txt", "missing"))
    assert not report.skippable and "cannot be skipped" in report.render()


def test_report_says_when_skipping_would_empty_the_test_split():
    # every test item is bad: the counts of usable items show an empty test split
    report = DataReport("toy", "/data/toy", ("A", "B"), counts={"train": {"A": 3, "B": 1}, "test": {"A": 0, "B": 0}},
                        problems=[Problem("t/1.avi", "truncated", ("t1", "t2"))])
    text = report.render()
    assert report.emptied_splits() == ["test"]
    assert "--skip-bad would leave no items in the test split: fix the problems" in text and "use the rest" not in text


def test_a_split_reads_its_prepared_cache_and_only_decodes_what_is_asked(cache):
    split = ToySplit(10, split_key("toy", "abc", "train"))
    assert split[3]["student"].shape == (1, 2, 4, 4) and not split._prepared()
    path = prepare(split)
    assert (path / "meta.json").exists() and not path.with_name(path.name + ".partial").exists()
    fresh = ToySplit(10, split.key, fail_at=-1)
    fresh.decode = None  # any decode now would fail: everything must come from the cache
    sample = fresh[7]
    assert fresh._prepared() and float(sample["student"][0, 0, 0, 0]) == pytest.approx(7 / 255)
    assert sample["teacher"].tolist() == [[7.0 + k for k in range(8)]] and sample["label"] == 1
    view = ToySplit(4, "other-key").only("teacher")
    assert view[2]["student"].numel() == 0 and view.decoded == [2] and view[2]["teacher"].shape == (1, 8)


def test_an_interrupted_prepare_resumes_and_decodes_only_the_rest(cache):
    key = split_key("toy", "abc", "train")
    broken = ToySplit(10, key, fail_at=6)
    with pytest.raises(KdbenchError, match=r"item 'item6' from toy/6.bin: disk on fire"):
        prepare(broken, flush_every=0.0)
    partial = cache / "clips" / f"{key}.partial"
    assert partial.exists() and not (cache / "clips" / key).exists()
    assert np.load(partial / "done.npy").sum() == 6
    again = ToySplit(10, key)
    messages = []
    prepare(again, echo=messages.append)
    assert sorted(again.decoded) == [0, 6, 7, 8, 9]  # item 0 once more for the layout, then the rest
    assert messages == [f"resuming {key}: 6 of 10 items already prepared"]
    stored = np.load(cache / "clips" / key / "student.npy")
    assert [int(stored[i, 0, 0, 0, 0]) for i in range(10)] == list(range(10))


def test_a_partial_cache_of_another_layout_is_started_over(cache):
    key = split_key("toy", "abc", "train")
    with pytest.raises(KdbenchError):
        prepare(ToySplit(10, key, fail_at=4), flush_every=0.0)
    partial = cache / "clips" / f"{key}.partial"
    (partial / "layout.json").write_text('{"student": {"shape": [9], "dtype": "uint8"}}')
    again = ToySplit(10, key)
    prepare(again)
    assert sorted(again.decoded) == list(range(10))


class ToyDataset(FileDataset):
    """A dataset whose check finds whatever problems the test planted."""

    name = "toy"
    splits = ("train", "test")

    def __init__(self, problems, tag="a"):
        super().__init__(None, 0)
        self.info = DatasetInfo(("A", "B", "C"), (1, 8), (1, 2, 4, 4))
        self.problems, self.tag, self.checks, self.skipped = problems, tag, 0, None

    def fingerprint(self):
        return f"fp-{self.tag}"

    def check(self, fields=FIELDS, progress=False):
        self.checks += 1
        return DataReport(self.name, "/toy", self.info.class_names, {"train": {"A": 1}}, list(self.problems))

    def split(self, name, fields=FIELDS):
        return [] if self.skipped and "everything" in self.skipped else [0, 1]

    def skip(self, keys):
        self.skipped = keys


def test_the_check_gate_refuses_skips_or_passes(cache):
    bad = [Problem("a.avi", "truncated", ("k1", "k2")), Problem("b.avi", "missing", ("k3",))]
    toy = ToyDataset(bad)
    with pytest.raises(KdbenchError, match=r"has 2 problem\(s\), listed above; fix them, or pass --skip-bad") as error:
        require_usable(toy, skip_bad=False, echo=lambda m: None)
    assert "a.avi: truncated [2 items]" in error.value.details
    assert require_usable(toy, skip_bad=True, echo=lambda m: None) == bad
    assert toy.skipped == {"k1", "k2", "k3"} and toy.checks == 1  # the second gate reused the stored report
    fatal = ToyDataset([Problem("trainlist01.txt", "missing")], tag="b")
    with pytest.raises(KdbenchError, match="cannot leave out"):
        require_usable(fatal, skip_bad=True, echo=lambda m: None)
    assert require_usable(ToyDataset([], tag="c"), skip_bad=False) == []
    hopeless = ToyDataset([Problem("UCF-101/", "6837 videos missing", ("everything",))], tag="d")
    with pytest.raises(KdbenchError, match=r"leaves no items in the train and test split\(s\)"):
        require_usable(hopeless, skip_bad=True, echo=lambda m: None)


def test_the_stored_check_is_redone_when_the_content_changes(cache):
    toy = ToyDataset([])
    check(toy, echo=lambda m: None)
    check(toy, echo=lambda m: None)
    assert toy.checks == 1
    toy.tag = "changed"
    check(toy, echo=lambda m: None)
    assert toy.checks == 2
    check(toy, reuse=False)
    assert toy.checks == 3


def test_fingerprint_follows_size_mtime_and_params(tmp_path):
    f = tmp_path / "a.edf"
    f.write_bytes(b"x" * 10)
    first = files_fingerprint(tmp_path, [f], {"rate": 100})
    assert files_fingerprint(tmp_path, [f], {"rate": 100}) == first
    assert files_fingerprint(tmp_path, [f], {"rate": 128}) != first
    os.utime(f, ns=(1, 1))
    assert files_fingerprint(tmp_path, [f], {"rate": 100}) != first
    f.unlink()
    assert files_fingerprint(tmp_path, [f], {"rate": 100}) != first


def test_a_missing_root_is_one_line_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("KDBENCH_DATA", raising=False)
    with pytest.raises(KdbenchError, match=r"dataset 'toy' needs its folder: pass --root DIR to `kdbench data`, --data-root DIR"):
        resolve_root(None, "toy")
    with pytest.raises(KdbenchError, match=r"does not exist; .*kdbench data synth toy --root"):
        resolve_root(tmp_path / "nope", "toy")
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path))
    (tmp_path / "toy").mkdir()
    assert resolve_root(None, "toy") == (tmp_path / "toy").resolve()


@pytest.mark.parametrize("damage, says", [
    (lambda p: (p / "student.npy").write_bytes((p / "student.npy").read_bytes()[:200]), "student.npy"),
    (lambda p: (p / "teacher.npy").unlink(), "teacher.npy"),
    (lambda p: (p / "meta.json").write_text("{"), "unreadable meta.json"),
])
def test_a_damaged_prepared_cache_is_one_line_naming_it(cache, damage, says):
    key = split_key("toy", "abc", "train")
    path = prepare(ToySplit(6, key))
    damage(path)
    with pytest.raises(KdbenchError, match=rf"prepared clip cache .*{key} is damaged \(.*{says}.*delete that folder"):
        ToySplit(6, key)[0]


def test_a_cache_of_other_items_is_refused(cache):
    key = split_key("toy", "abc", "train")
    prepare(ToySplit(6, key))
    with pytest.raises(KdbenchError, match=r"holds 6 items that are not this split's 5"):
        ToySplit(5, key)[0]


def test_parallel_decoding_writes_the_same_cache(cache):
    one = prepare(ToySplit(9, split_key("toy", "one", "train")))
    two = prepare(ToySplit(9, split_key("toy", "two", "train")), workers=2)
    for name in ("student", "teacher"):
        np.testing.assert_array_equal(np.load(one / f"{name}.npy"), np.load(two / f"{name}.npy"))


def test_an_error_in_a_decoding_worker_is_one_line_and_resumable(cache):
    key = split_key("toy", "abc", "train")
    with pytest.raises(KdbenchError, match=r"item 'item5' from toy/5.bin: disk on fire"):
        prepare(ToySplit(9, key, fail_at=5), workers=2, flush_every=0.0)
    done = np.load(cache / "clips" / f"{key}.partial" / "done.npy")
    k = int(done.sum())                      # results arrive in order, a chunk at a time: a prefix is in
    assert 1 <= k <= 5 and done[:k].all()
    again = ToySplit(9, key)
    prepare(again)
    assert sorted(again.decoded) == sorted({0, *range(k, 9)})
