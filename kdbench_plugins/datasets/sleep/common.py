"""What the two sleep datasets share: nights, problems, splits by subject, the clip split and the report.

A dataset indexes its nights once (headers and hypnograms only) into per-night numpy arrays of epoch
indices and labels; splits are concatenations of those arrays, and an item's key is
``<night>/<epoch>`` with the epoch counted in 30-s steps from the start of the PSG (``S001/0123``), so a key
names the same 30 s of the same recording whatever the options or the seed.

With ``context`` = c > 0 the teacher's input is the item's epoch with its c neighbours on each side, read
from the same night's EEG by PSG time: ``(2c + 1, 1, n_times)``, zeros where the recording holds no whole
30-s epoch (before its start, after its last whole epoch). The student's input stays one clip.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from kdbench.contracts import FIELDS, FileDataset
from kdbench.data import DataReport, Problem, files_fingerprint
from kdbench.data.clips import ClipSplit, split_key
from kdbench.options import PluginOptions, path_field

from .hypnogram import CLASS_NAMES, DROPPED_NAMES, EPOCH, Hypnogram
from .psg import open_raw, read_epoch

#: bump when decoding changes in a way the options don't show, so caches keyed on the fingerprint renew.
LOADER_VERSION = 1
#: a problem kind seen more often than this is reported as one line naming the first file and the count.
AGGREGATE_OVER = 3
#: appended to a problem whose night has no known epochs (its one placeholder key ``<night>/*`` stands for all)
WHOLE_NIGHT = "; --skip-bad leaves out the whole night"
WHOLE_NIGHTS = "; --skip-bad leaves out those whole nights"


class SleepOptions(PluginOptions):
    """Options both sleep datasets take."""

    root: str | None = path_field(None, what="folder", description="the dataset's folder (default $KDBENCH_DATA/<dataset>)")
    rate: int = Field(100, ge=20, le=1000, description="EEG rate the teacher reads, Hz (30 s -> 30 * rate samples)")
    eeg_norm: Literal["zscore", "none"] = Field(
        "zscore", description="teacher input: 'zscore' = each epoch to mean 0, std 1; 'none' = microvolts")
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="share of subjects held out for testing")
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="share of the remaining subjects for validation")
    context: int = Field(0, ge=0, le=15, description="EEG epochs on each side of the item's epoch in the teacher's "
                                                     "input: c > 0 gives (2c + 1, 1, n_times), zeros beyond the "
                                                     "recording; 0 = the epoch alone, (1, n_times)")


def teacher_shape(options: SleepOptions) -> tuple[int, ...]:
    """The teacher's input shape: one epoch ``(1, n)``, or ``(2c + 1, 1, n)`` with ``context`` = c > 0."""
    n = int(round(EPOCH * options.rate))
    return (2 * options.context + 1, 1, n) if options.context else (1, n)


def context_params(options: SleepOptions) -> dict:
    """The ``context`` entry of a dataset's fingerprint parameters: absent at 0, so those fingerprints (and
    the caches keyed on them) stay what they were before the option existed."""
    return {"context": options.context} if options.context else {}


@dataclass
class Night:
    """One indexed night: where its files are and which of its epochs are samples."""

    name: str                                  # key prefix
    subject: str                               # the unit of the split
    psg: Path | None = None
    hypnogram: Path | None = None
    channel: str | None = None                 # the EEG channel's label in this file
    epochs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))   # items' epoch indices
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))    # items' classes
    video: Path | None = None
    offset: float = 0.0                        # PSG time (s) of the video's first frame
    video_frames: int = 0                      # frame count the video's header states
    video_fps: float = 0.0
    usable: bool = False                       # files read and channel found: its items enter the splits

    def key(self, epoch: int) -> str:
        return f"{self.name}/{int(epoch):04d}"

    def keys(self, epochs: np.ndarray | None = None) -> tuple[str, ...]:
        return tuple(self.key(e) for e in (self.epochs if epochs is None else epochs))


@dataclass
class _Pending:
    kind: str
    file: str
    message: str
    items: tuple[str, ...] = ()
    night: str | None = None                   # "every item of this night", resolved once all are indexed


class Problems:
    """Collects problems while indexing; repeated kinds become one line, whole-night ones get the night's keys."""

    def __init__(self) -> None:
        self.pending: list[_Pending] = []

    def add(self, kind: str, file: str, message: str, items=(), night: str | None = None) -> None:
        self.pending.append(_Pending(kind, file, message, tuple(items), night))

    def resolve(self, nights: dict[str, Night]) -> list[Problem]:
        def items(p: _Pending) -> tuple[str, ...]:
            if p.night is None:
                return p.items
            known = nights[p.night].keys() if p.night in nights else ()
            # A night that could not be indexed has no known epochs: one placeholder key stands for it, so
            # the problem stays skippable (--skip-bad then simply proceeds without that night).
            return known or (f"{p.night}/*",)

        def placeholder(p: _Pending) -> bool:
            return p.night is not None and items(p) == (f"{p.night}/*",)

        by_kind: dict[str, list[_Pending]] = {}
        for p in self.pending:
            by_kind.setdefault(p.kind, []).append(p)
        out = []
        for group in by_kind.values():
            if len(group) <= AGGREGATE_OVER:
                # the report counts a placeholder as "[1 item]": the message says what it stands for
                out += [Problem(p.file, p.message + (WHOLE_NIGHT if placeholder(p) else ""), items(p)) for p in group]
                continue
            first, others = group[0], [p.file for p in group[1:]]
            merged = tuple(dict.fromkeys(k for p in group for k in items(p)))
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            message = f"{first.message}; {len(others)} more files have this kind of problem ({shown})"
            if any(placeholder(p) for p in group):
                message += WHOLE_NIGHTS
            out.append(Problem(first.file, message, merged if all(items(p) for p in group) else ()))
        return out


def dropped_counts(hyp: Hypnogram, counter: Counter, upto: int | None = None) -> None:
    codes = hyp.codes[:upto]
    for code, what in DROPPED_NAMES.items():
        n = int((codes == code).sum())
        if n:
            counter[what] += n


def compare_lengths(problems: Problems, dropped: Counter, night: Night, hyp: Hypnogram, header,
                    file: str, window_end: int | None = None) -> None:
    """Report a hypnogram longer or shorter than its recording, naming the epochs beyond the shorter one.

    Past the recording's end only scored epochs count (an unscored '?' tail is normal, and a scored last
    epoch that the recording cuts short is merely dropped). Recording epochs after the hypnogram's end
    count only up to ``window_end``, where the dataset would stop taking epochs anyway (wake trimming).
    The night's other epochs stay usable: both files start at the PSG's start, which anchors them.
    """
    n_rec, n_hyp = header.epochs, len(hyp)
    if n_hyp > n_rec:
        extra = np.flatnonzero(hyp.codes[n_rec:] >= 0) + n_rec
        partial = header.seconds / EPOCH - n_rec > 1e-6
        if partial and len(extra) == 1 and extra[0] == n_rec:
            dropped["scored epochs cut short by the end of the recording"] += 1
        elif len(extra):
            problems.add("length", file, f"hypnogram is {n_hyp - n_rec} epochs longer than the recording "
                         f"({n_hyp} vs {n_rec}); {len(extra)} scored epochs past the end have no signal",
                         items=night.keys(extra))
        keep = night.epochs < n_rec
        night.epochs, night.labels = night.epochs[keep], night.labels[keep]
    elif n_hyp < n_rec:
        missing = np.arange(n_hyp, n_rec if window_end is None else max(n_hyp, min(n_rec, window_end)))
        if len(missing):
            problems.add("length", file, f"hypnogram is {n_rec - n_hyp} epochs shorter than the recording "
                         f"({n_hyp} vs {n_rec}); {len(missing)} epochs have no stage", items=night.keys(missing))


def report_truncation(problems: Problems, notes: list[str], night: Night, header, file: str) -> None:
    """A PSG cut short: the night's items past the end of what the file holds are bad, the rest stay usable.

    Call after ``compare_lengths`` with ``header.as_promised()``, so the hypnogram is compared with the
    recording the header describes and the lost epochs are blamed on the PSG, not on the hypnogram.
    """
    if not header.truncation:
        return
    lost = night.epochs[night.epochs >= header.epochs]
    if not len(lost):
        notes.append(f"{file}: {header.truncation}; no epoch used is past its end")
        return
    where = "all" if len(lost) == len(night.epochs) else f"{len(lost)} of"
    problems.add("truncated-psg", file, f"{header.truncation}; {where} {len(night.epochs)} scored epochs lie past "
                 f"its end", items=night.keys(lost))


class EEGReader:
    """Decodes (night, epoch) into stored arrays; keeps EDF headers open per process (dropped when pickled
    for DataLoader workers, which reopen their own)."""

    def __init__(self, nights: list[Night], options: SleepOptions, root: Path) -> None:
        self.nights, self.options, self.root = nights, options, root
        self.eeg_norm = options.eeg_norm
        self._raws: dict[int, object] = {}

    def __getstate__(self):
        return {**self.__dict__, "_raws": {}}

    def raw(self, n: int):
        if n not in self._raws:
            if len(self._raws) >= 16:
                self._raws.pop(next(iter(self._raws)))
            self._raws[n] = open_raw(self.nights[n].psg)
        return self._raws[n]

    def eeg(self, n: int, epoch: int) -> np.ndarray:
        return read_epoch(self.raw(n), self.nights[n].channel, epoch, self.options.rate)

    def whole_epochs(self, n: int) -> int:
        """Whole 30-s epochs the night's recording holds (as ``PsgHeader.epochs``)."""
        raw = self.raw(n)
        return int(math.floor(raw.n_times / float(raw.info["sfreq"]) / EPOCH + 1e-9))

    def sequence(self, n: int, epoch: int) -> np.ndarray:
        """Epochs ``epoch - c .. epoch + c`` of the night, float32 ``(2c + 1, 1, n_times)`` in microvolts.

        Each is read as ``eeg`` reads it, by PSG time and whatever its stage (a movement or unscored
        neighbour still has EEG). An epoch the recording does not hold whole is zeros.
        """
        c = self.options.context
        length = int(round(EPOCH * self.options.rate))
        out = np.zeros((2 * c + 1, 1, length), np.float32)
        last = self.whole_epochs(n)
        for j, k in enumerate(range(epoch - c, epoch + c + 1)):
            if 0 <= k < last:
                out[j] = self.eeg(n, k)
        return out

    def teacher_eeg(self, n: int, epoch: int) -> np.ndarray:
        """The teacher's stored input: the epoch, or with ``context`` its sequence."""
        return self.sequence(n, epoch) if self.options.context else self.eeg(n, epoch)

    def decode(self, n: int, epoch: int, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
        """EEG-only data: student and teacher are the same epoch, decoded once; with ``context`` the teacher
        reads the sequence around it and the student its centre."""
        if not self.options.context:
            x = self.eeg(n, epoch)
            return {f: x for f in fields}
        out = {}
        if "teacher" in fields:
            out["teacher"] = self.sequence(n, epoch)
        if "student" in fields:
            out["student"] = out["teacher"][self.options.context] if "teacher" in out else self.eeg(n, epoch)
        return out

    def source(self, n: int, epoch: int) -> str:
        return f"{self.nights[n].psg} (epoch {epoch})"


class SleepSplit(ClipSplit):
    """Items of one split: per item, its night and epoch; ``reader`` turns them into arrays."""

    def __init__(self, keys, labels, key, reader, night_of: np.ndarray, epoch_of: np.ndarray,
                 groups: np.ndarray | None = None) -> None:
        super().__init__(keys, labels, key, groups)
        self.reader = reader
        self.night_of = night_of
        self.epoch_of = epoch_of

    def decode(self, i: int, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
        return self.reader.decode(int(self.night_of[i]), int(self.epoch_of[i]), fields)

    def source(self, i: int) -> str:
        return self.reader.source(int(self.night_of[i]), int(self.epoch_of[i]))

    def to_tensor(self, name: str, array: np.ndarray) -> torch.Tensor:
        if array.dtype == np.uint8:
            return super().to_tensor(name, array)
        x = torch.from_numpy(np.array(array, dtype=np.float32))
        if self.reader.eeg_norm == "zscore":  # per epoch: robust to each lab's gain and units
            if x.ndim == 3:  # a sequence (L, 1, n): each epoch on its own; a zero (padding) epoch stays zero
                x = (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True).clamp_min(1e-6)
            else:
                x = (x - x.mean()) / x.std().clamp_min(1e-6)
        return x


class SleepDataset(FileDataset):
    """Base of ``s3ve`` and ``sleepedf``: subclasses index nights in ``_index`` and decode in a reader."""

    splits = ("train", "val", "test")
    class_names = CLASS_NAMES

    def __init__(self, options: SleepOptions, seed: int) -> None:
        super().__init__(options, seed)
        self.nights: list[Night] = []
        self.assignment: dict[str, str] = {}      # subject -> split
        self.files: list[Path] = []               # every file the index read (the fingerprint covers them)
        self.dropped: Counter = Counter()
        self.notes: list[str] = []
        self._problems = Problems()
        self._skipped: frozenset[str] = frozenset()
        self._split_cache: dict[str, SleepSplit] = {}
        self._fingerprint: str | None = None
        self.stage4 = 0                           # epochs scored R&K stage 4, counted as N3
        self.root = self._index()
        if self.stage4:
            self.notes.append(f"{self.stage4} epochs scored stage 4 (R&K) counted as N3")
        self.problems = self._problems.resolve({n.name: n for n in self.nights})
        self.reader = self._reader()

    # ------------------------------------------------------------- what subclasses provide

    def _index(self) -> Path:
        raise NotImplementedError

    def _reader(self):
        raise NotImplementedError

    def _params(self) -> dict:
        """Options that change the stored arrays or the splits."""
        raise NotImplementedError

    def _deep_problems(self, progress: bool) -> tuple[list[Problem], list[str]]:
        """Problems only decoding or demuxing finds, and notes about what could not be checked."""
        return [], []

    # ------------------------------------------------------------- splits

    def split(self, name: str, fields: tuple[str, ...] = FIELDS) -> SleepSplit:
        if name not in self.splits:
            raise KeyError(f"dataset {self.name!r} has no split {name!r}; it has {', '.join(self.splits)}")
        if name not in self._split_cache:
            self._split_cache[name] = self._build_split(name)
        return self._split_cache[name].only(*fields)

    def _build_split(self, name: str) -> SleepSplit:
        keys: list[str] = []
        labels, night_of, epoch_of, groups = [], [], [], []
        # subject ids for domain-adversarial teachers: the subject's index among this split's subjects
        subjects = sorted({night.subject for night in self.nights if self.assignment.get(night.subject) == name})
        for n, night in enumerate(self.nights):
            if not night.usable or self.assignment.get(night.subject) != name:
                continue
            night_keys = night.keys()
            keep = np.array([k not in self._skipped for k in night_keys], bool) if self._skipped else \
                np.ones(len(night_keys), bool)
            keys += [k for k, ok in zip(night_keys, keep) if ok]
            labels.append(night.labels[keep])
            epoch_of.append(night.epochs[keep])
            night_of.append(np.full(int(keep.sum()), n, np.int32))
            groups.append(np.full(int(keep.sum()), subjects.index(night.subject), np.int64))
        cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
        return SleepSplit(keys, cat(labels, np.int64), split_key(self.name, self._content(), name), self.reader,
                          cat(night_of, np.int32), cat(epoch_of, np.int32), cat(groups, np.int64))

    def skip(self, keys: frozenset[str]) -> None:
        self._skipped = self._skipped | frozenset(keys)
        self._split_cache.clear()
        self._fingerprint = None

    # ------------------------------------------------------------- fingerprints

    def _content(self) -> str:
        """What the stored arrays depend on (the clip cache's key): files, sampling, splits, skipped items."""
        if self._fingerprint is None:
            params = {"dataset": self.name, "version": LOADER_VERSION, "seed": self.seed,
                      "skipped": sorted(self._skipped), **self._params()}
            self._fingerprint = files_fingerprint(self.root, self.files, params)
        return self._fingerprint

    def fingerprint(self) -> str:
        """The content plus the normalisation ``to_tensor`` applies (teacher caches depend on both)."""
        import hashlib

        return hashlib.sha256(f"{self._content()}:{self.options.eeg_norm}".encode()).hexdigest()

    # ------------------------------------------------------------- the report

    def check(self, fields: tuple[str, ...] = FIELDS, progress: bool = False) -> DataReport:
        deep, deep_notes = self._deep_problems(progress)
        problems = list(self.problems) + deep
        bad = {k for p in problems for k in p.items}
        counts = {}
        for name in self.splits:
            split = self.split(name)
            good = np.array([k not in bad for k in split.keys], bool) if bad else np.ones(len(split), bool)
            counts[name] = {c: int(((split.labels == k) & good).sum()) for k, c in enumerate(CLASS_NAMES)}
        subjects = Counter(self.assignment.values())
        per_split = ", ".join(f"{s} {subjects.get(s, 0)}" for s in self.splits)
        notes = [*self.notes, *deep_notes, f"subjects per split: {per_split}"]
        return DataReport(self.name, str(self.root), CLASS_NAMES, counts, problems, dict(self.dropped), notes)
