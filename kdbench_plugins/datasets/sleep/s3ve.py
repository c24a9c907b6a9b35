"""The ``s3ve`` dataset: sleep-lab nights of PSG (EEG) and infrared video, cut into aligned 30-s clips.

Layout (docs/datasets/s3ve.md)::

    root/subjects.csv                 subject[,ahi][,split][,video_offset] (+ any other columns, ignored)
    root/<subject>/psg.edf            the night's PSG
    root/<subject>/hypnogram.edf      EDF+ stage annotations (Sleep-EDF style), or hypnogram.csv (epoch,stage)
    root/<subject>/video.avi          the infrared video (.mp4 / .mkv accepted)

``video_offset`` is the PSG time, in seconds, of the video's first frame (negative: the camera started
before the PSG). Epoch k is PSG seconds [30k, 30k + 30); its clip is video seconds [30k - offset, ...).
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np
from pydantic import Field

from kdbench.contracts import DatasetInfo
from kdbench.data import resolve_root
from kdbench.errors import first_line

from ...shared import media
from .common import (
    EEGReader,
    Night,
    SleepDataset,
    SleepOptions,
    compare_lengths,
    context_params,
    dropped_counts,
    report_truncation,
    teacher_shape,
)
from .hypnogram import CLASS_NAMES, EPOCH, Hypnogram, read_hypnogram
from .psg import PsgHeader, match_channel, read_header
from .splits import ahi_group, assign
from .synth import S3VESynthOptions

TABLE = "subjects.csv"
VIDEO_NAMES = ("video.avi", "video.mp4", "video.mkv")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


class S3VEOptions(SleepOptions):
    channel: str = Field("C4-M1", description="EEG channel (label as in the EDF; case, spaces and an 'EEG ' "
                                              "prefix are ignored)")
    frames: int = Field(16, ge=1, le=1024, description="frames sampled evenly over each 30-s clip")
    height: int = Field(112, ge=8, le=1080, description="frame height after resizing, pixels")
    width: int = Field(112, ge=8, le=1920, description="frame width after resizing, pixels")


def clip_sampling(options: S3VEOptions, epoch: float = EPOCH) -> dict:
    """How an epoch (30 s) of infrared video becomes a student's clip: ``frames`` grayscale frames of ``height``
    x ``width`` at evenly spaced instants. The one definition training clips and ``kdbench predict`` share."""
    return {"duration": epoch, "count": options.frames, "height": options.height, "width": options.width}


def night_clips(video: Path, start: float, options: S3VEOptions, epoch: float = EPOCH,
                damage: media.Damage | None = None) -> Iterator[np.ndarray]:
    """A whole video's consecutive epochs from video second ``start`` on, streamed, each in the stored form of
    a training clip (``(1, frames, height, width)`` uint8, as :meth:`Reader.frames` gives it): what ``kdbench
    predict`` reads. Ends with the last epoch the file covers whole; ``damage``: see ``media.stream_clips``."""
    for clip in media.stream_clips(video, start, **clip_sampling(options, epoch), damage=damage):
        yield clip[None]


class Reader(EEGReader):
    """EEG epoch (or, with ``context``, the sequence around it) for the teacher, infrared frames for the student."""

    def frames(self, n: int, epoch: int) -> np.ndarray:
        night = self.nights[n]
        return media.read_frames(night.video, epoch * EPOCH - night.offset, **clip_sampling(self.options))[None]

    def decode(self, n: int, epoch: int, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
        out = {}
        if "teacher" in fields:
            out["teacher"] = self.teacher_eeg(n, epoch)
        if "student" in fields:
            out["student"] = self.frames(n, epoch)
        return out

    def source(self, n: int, epoch: int) -> str:
        night = self.nights[n]
        return f"{night.psg} and {night.video} (PSG epoch {epoch})"


class S3VE(SleepDataset):
    """Sleep-lab nights: EEG epochs (teacher) and infrared video clips (student), 5 AASM stages."""

    name = "s3ve"
    Options = S3VEOptions
    default_teacher = "attnsleep"
    default_student = "r3d18"
    modalities = ("eeg", "video")
    #: the global defaults already are SACD's recipe (SGD lr 1e-3, wd 5e-4, batch 16, 80 epochs; teacher 58).
    run_defaults: ClassVar[dict] = {}
    SynthOptions = S3VESynthOptions
    #: a whole night's video as student clips (``kdbench predict`` looks for this)
    night_clips = staticmethod(night_clips)

    def __init__(self, options: S3VEOptions, seed: int) -> None:
        super().__init__(options, seed)
        self.info = self.describe(options)

    @classmethod
    def describe(cls, options: S3VEOptions) -> DatasetInfo:
        """The classes and input shapes, from the options alone (``kdbench predict`` builds a trained student
        from them without the dataset's folder)."""
        return DatasetInfo(CLASS_NAMES, teacher_shape(options), (1, options.frames, options.height, options.width))

    @classmethod
    def synthesize(cls, root: Path, options, seed: int, echo) -> None:
        from .synth import write_s3ve

        write_s3ve(root, options, seed, echo)

    @staticmethod
    def recorded_offset(video: Path) -> float | None:
        """The ``video_offset`` ``subjects.csv`` records for a video inside a night folder of this layout, or
        None (not such a folder, no such column or value)."""
        table = video.parent.parent / TABLE
        try:
            with open(table, newline="", encoding="utf-8-sig") as handle:
                for row in csv.DictReader(handle):
                    row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
                    if row.get("subject") == video.parent.name and row.get("video_offset"):
                        value = float(row["video_offset"])
                        return value if math.isfinite(value) else None
        except (OSError, UnicodeDecodeError, csv.Error, ValueError):
            return None
        return None

    # ------------------------------------------------------------- index

    def _params(self) -> dict:
        o = self.options
        return {"channel": o.channel, "rate": o.rate, "frames": o.frames, "height": o.height, "width": o.width,
                "test_fraction": o.test_fraction, "val_fraction": o.val_fraction, **context_params(o)}

    def _reader(self) -> Reader:
        return Reader(self.nights, self.options, self.root)

    def _index(self) -> Path:
        root = resolve_root(self.options.root, self.name)
        table = root / TABLE
        folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
        if not table.is_file():
            self._problems.add("table", TABLE, f"missing: write {TABLE} with one row per night folder (columns "
                               f"subject[,ahi][,split][,video_offset]); {len(folders)} folders found")
            return root
        self.files.append(table)
        rows = self._read_table(table)
        if rows is None:
            return root
        listed = {r["subject"] for r in rows}
        for name in folders:
            if name not in listed:
                self._problems.add("unlisted", name, f"folder not listed in {TABLE} (add a row for it)", night=name)
        present = set(folders)
        for row in rows:
            if row["subject"] not in present:
                self._problems.add("no-folder", TABLE, f"subject {row['subject']!r} has no folder "
                                   f"{row['subject']}/", night=row["subject"])
        self.assignment = self._assign(rows)
        for row in rows:
            if row["subject"] in present:
                self.nights.append(self._index_night(root, row))
        kinds = Counter(n.hypnogram.suffix.lower() for n in self.nights if n.hypnogram is not None)
        self.notes.append(f"hypnograms: {kinds['.csv']} CSV, {kinds['.edf']} EDF+")
        return root

    def _read_table(self, table: Path) -> list[dict] | None:
        try:
            with open(table, newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                records, lines = [], []
                for record in reader:
                    records.append(record)
                    lines.append(reader.line_num)
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            self._problems.add("table", TABLE, f"cannot read: {error}")
            return None
        records = [{(k or "").strip().lower(): (v or "").strip() for k, v in r.items()} for r in records]
        if not records or "subject" not in records[0]:
            self._problems.add("table", TABLE, "no 'subject' column (expected subject[,ahi][,split][,video_offset])")
            return None
        rows, seen, no_offset = [], set(), 0
        self._split_column = any(r.get("split") for r in records)
        for r, line in zip(records, lines):
            name = r["subject"]
            if not name:
                continue
            if name in seen:
                self._problems.add("duplicate", TABLE, f"subject {name!r} listed twice; the first row is used")
                continue
            seen.add(name)
            row = {"subject": name, "ahi": None, "split": None, "video_offset": 0.0}
            for column, parse in (("ahi", float), ("video_offset", float)):
                text = r.get(column, "")
                if text:
                    try:
                        value = parse(text)
                    except ValueError:
                        value = None
                    if value is None or not math.isfinite(value):  # inf/nan parse, but place nothing in time
                        what = "not a number" if value is None else "not a finite number"
                        self._problems.add("table-value", TABLE, f"line {line}, subject {name!r}: {column} {text!r} "
                                           f"is {what}", night=name)
                    else:
                        row[column] = value
            no_offset += not r.get("video_offset")
            if self._split_column:
                value = SPLIT_NAMES.get(r.get("split", "").lower())
                if value is None:
                    self._problems.add("table-split", TABLE, f"subject {name!r}: split {r.get('split', '')!r} is "
                                       f"not train, val or test", night=name)
                row["split"] = value
            rows.append(row)
        if no_offset:
            self.notes.append(f"{no_offset} night(s) without video_offset in {TABLE}: taken as 0 s "
                              f"(video and PSG start together)")
        return rows

    def _assign(self, rows: list[dict]) -> dict[str, str]:
        o = self.options
        if self._split_column:
            self.notes.append(f"splits from the 'split' column of {TABLE}")
            return {r["subject"]: r["split"] for r in rows if r["split"]}
        groups = {r["subject"]: ahi_group(r["ahi"]) for r in rows}
        sizes = Counter(groups.values())
        self.notes.append(f"splits stratified by AHI group, seed {self.seed}: "
                          + ", ".join(f"{g} {n}" for g, n in sorted(sizes.items())))
        return assign(groups, self.seed, o.test_fraction, o.val_fraction)

    def _index_night(self, root: Path, row: dict) -> Night:
        name = row["subject"]
        folder = root / name
        night = Night(name, name, offset=float(row["video_offset"]))
        rel = lambda p: str(p.relative_to(root))
        add = self._problems.add

        # Hypnogram first: its scored epochs are the night's items, named by any later problem.
        hyp_path = next((folder / f for f in ("hypnogram.edf", "hypnogram.csv") if (folder / f).is_file()), None)
        hyp: Hypnogram | None = None
        if hyp_path is None:
            add("missing-hypnogram", f"{name}/hypnogram.edf", "missing (nor hypnogram.csv)", night=name)
        else:
            self.files.append(hyp_path)
            night.hypnogram = hyp_path
            hyp = read_hypnogram(hyp_path)
            if hyp.error:
                add("bad-hypnogram", rel(hyp_path), hyp.error, night=name)
                hyp = None
        if hyp is not None:
            scored = np.flatnonzero(hyp.codes >= 0).astype(np.int32)
            night.epochs, night.labels = scored, hyp.codes[scored]
            if hyp.foreign:
                _, where, text = hyp.foreign[0]
                add("foreign-label", rel(hyp_path), f"{len(hyp.foreign)} epoch(s) with labels outside the classes "
                    f"(e.g. {where}: {text!r}; accepted: W, N1, N2, N3, N4, R/REM, MT, ?)",
                    items=night.keys(np.array([f[0] for f in hyp.foreign])))

        psg = folder / "psg.edf"
        header: PsgHeader | None = None
        if not psg.is_file():
            add("missing-psg", rel(psg), "missing", night=name)
        else:
            self.files.append(psg)
            night.psg = psg
            header, why = read_header(psg)
            if header is None:
                add("bad-psg", rel(psg), why, night=name)
            else:
                night.channel = match_channel(self.options.channel, header.channels)
                if night.channel is None:
                    add("channel", rel(psg), f"no EEG channel {self.options.channel!r} (set dataset.channel to one of: "
                        f"{', '.join(header.channels)})", night=name)
        if hyp is not None and header is not None:
            compare_lengths(self._problems, self.dropped, night, hyp, header.as_promised(), rel(hyp_path))
            report_truncation(self._problems, self.notes, night, header, rel(psg))
            dropped_counts(hyp, self.dropped)
            self.stage4 += hyp.stage4

        video = next((folder / v for v in VIDEO_NAMES if (folder / v).is_file()), None)
        if video is None:
            add("missing-video", f"{name}/video.avi", "missing (nor video.mp4 / video.mkv)", night=name)
        else:
            self.files.append(video)
            night.video = video
            if header is not None and hyp is not None:
                self._check_coverage(night, video, rel(video))
        night.usable = hyp is not None and header is not None and night.channel is not None
        return night

    def _check_coverage(self, night: Night, video: Path, file: str) -> None:
        try:
            info = media.probe(video)
        except Exception as error:  # noqa: BLE001
            self._problems.add("bad-video", file, f"not a readable video ({first_line(error)})", night=night.name)
            return
        duration = info.frames / info.fps if info.frames else info.duration
        night.video_frames = info.frames or 0   # 0: the header states none (truncation then goes unchecked)
        night.video_fps = info.fps
        slack = 0.5 / info.fps
        start = night.epochs * EPOCH - night.offset
        outside = night.epochs[(start < -slack) | (start + EPOCH > duration + slack)]
        if len(outside):
            self._problems.add("coverage", file, f"video covers PSG {night.offset:.1f}-{night.offset + duration:.1f} s "
                               f"only; {len(outside)} scored epochs lie outside it", items=night.keys(outside))

    # ------------------------------------------------------------- deep check

    def _deep_problems(self, progress: bool):
        from tqdm import tqdm

        from .common import Problems

        found, uncounted = Problems(), 0
        for n, night in enumerate(tqdm(self.nights, desc="s3ve check", unit="night", disable=not progress)):
            if not night.usable or not len(night.epochs):
                continue
            held = night.epochs[night.epochs < self.reader.whole_epochs(n)]  # a truncated PSG's lost ones: reported
            try:
                if len(held):
                    self.reader.eeg(n, int(held[-1]))
            except Exception as error:  # noqa: BLE001
                found.add("eeg-read", str(night.psg.relative_to(self.root)),
                          f"cannot read EEG samples ({first_line(error)})", night.keys())
            expected = night.video_frames
            if night.video is None or not night.video_fps:   # missing or unreadable: reported already
                continue
            if not expected:
                uncounted += 1
                continue
            packets = media.count_packets(night.video)
            if packets < expected - 1:
                end = packets / night.video_fps
                after = night.epochs[night.epochs * EPOCH + EPOCH - night.offset > end]
                if not len(after):  # damage past the last scored epoch spoils no sample
                    continue
                found.add("truncated", str(night.video.relative_to(self.root)),
                          f"truncated video: header promises {expected} frames, the file holds {packets} (video ends "
                          f"at {end:.1f} s); {len(after)} scored epochs after that are bad", night.keys(after))
        notes = [f"{uncounted} video(s) state no frame count in their header: not checked for truncation"] \
            if uncounted else []
        return found.resolve({}), notes

