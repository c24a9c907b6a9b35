"""Hypnograms: from a scorer's labels to one AASM class per 30-s epoch.

Two forms are read. EDF+ annotation files as PhysioNet's Sleep-EDF ships them ("Sleep stage W/1/2/3/4/R/?",
"Movement time"), each annotation covering one or more consecutive epochs, read with
``mne.read_annotations``; and a CSV with one row per epoch (columns ``epoch,stage``), which is what most
sleep-lab software exports. Both become an ``int8`` array indexed by epoch from the start of the PSG:
0-4 are the classes W, N1, N2, N3, REM; negative codes are epochs that are not samples (movement,
unscored, not annotated) and are dropped and counted by the datasets.

Stage 4 of the older Rechtschaffen & Kales rules is slow-wave sleep like stage 3; the AASM manual merged
the two into N3, so stage 4 becomes N3 (and is counted, so a report can say how many were merged).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdbench.errors import first_line

CLASS_NAMES = ("W", "N1", "N2", "N3", "REM")
EPOCH = 30.0  # seconds per scored epoch (AASM and R&K alike)

MOVEMENT = -1   # "Movement time": the body moved too much to score; not a stage
UNKNOWN = -2    # "Sleep stage ?": unscored
GAP = -3        # no stage annotation covers the epoch
#: what the datasets call each dropped code in their reports.
DROPPED_NAMES = {MOVEMENT: "movement-time epochs", UNKNOWN: "unscored epochs ('?')",
                 GAP: "epochs no stage annotation covers"}

#: accepted spellings (lower case, after removing a leading "sleep stage "), and whether it is R&K stage 4.
_LABELS: dict[str, int] = {
    "w": 0, "wake": 0, "n1": 1, "s1": 1, "n2": 2, "s2": 2, "n3": 3, "s3": 3, "n4": 3, "s4": 3,
    "r": 4, "rem": 4, "m": MOVEMENT, "mt": MOVEMENT, "movement": MOVEMENT, "movement time": MOVEMENT,
    "?": UNKNOWN, "u": UNKNOWN, "unknown": UNKNOWN, "unscored": UNKNOWN, "nan": UNKNOWN,
}
_STAGE4 = {"n4", "s4", "4"}
#: digits mean R&K stages only after the "Sleep stage" prefix of EDF+ files; a bare digit in a CSV could be
#: any of several numeric codings (0-4 with 4 = REM is common), so it is refused rather than guessed.
_PREFIXED_DIGITS = {"0": 0, "1": 1, "2": 2, "3": 3, "4": 3, "5": 4}
ALLOWED_TEXT = "W, N1, N2, N3, N4, R/REM, MT/Movement time, ?/Unscored (or 'Sleep stage W/1/2/3/4/R/?')"


def stage_code(text: str) -> tuple[int | None, bool]:
    """(class or dropped code, is stage 4) of one label; (None, False) when it is not a sleep-stage label."""
    label = " ".join(str(text).strip().lower().split())
    if label.startswith("sleep stage "):
        rest = label[len("sleep stage "):]
        if rest in _PREFIXED_DIGITS:
            return _PREFIXED_DIGITS[rest], rest == "4"
        label = rest
    if label in _LABELS:
        return _LABELS[label], label in _STAGE4
    return None, False


@dataclass
class Hypnogram:
    """One code per 30-s epoch from the PSG's start, and what reading it found."""

    codes: np.ndarray                       # int8, classes 0-4 or MOVEMENT/UNKNOWN/GAP
    stage4: int = 0                         # epochs scored R&K stage 4 (counted as N3)
    #: epochs whose label is not a stage: (epoch, line or onset, label text); the datasets report them.
    foreign: list[tuple[int, str, str]] = field(default_factory=list)
    #: a reason the whole file could not be used (empty, unreadable, off the 30-s grid), else "".
    error: str = ""

    def __len__(self) -> int:
        return len(self.codes)


def read_edf_hypnogram(path: Path, shift: float = 0.0) -> Hypnogram:
    """Stage annotations of an EDF+ file; ``shift`` = seconds from the PSG's start to this file's start.

    Annotations that are not stages (lights off, arousals, ...) are ignored. An annotation of duration 0
    marks one epoch. Onsets must lie on the PSG's 30-s grid (within 1 s); anything else means the two
    files are not aligned, and the file is refused rather than silently shifted.
    """
    import mne

    try:
        annotations = mne.read_annotations(str(path))
    except Exception as error:  # noqa: BLE001 - any reader failure is reported, not raised
        return Hypnogram(np.zeros(0, np.int8), error=f"not a readable EDF+ file ({first_line(error)})")
    spans = []
    for onset, duration, text in zip(annotations.onset, annotations.duration, annotations.description):
        code, stage4 = stage_code(text)
        if code is None:
            continue
        start = (float(onset) + shift) / EPOCH
        count = 1.0 if math.isnan(duration) else max(float(duration), EPOCH) / EPOCH  # NaN duration: one epoch
        if abs(start - round(start)) * EPOCH > 1.0 or abs(count - round(count)) * EPOCH > 1.0:
            return Hypnogram(np.zeros(0, np.int8), error=f"stage annotation at {float(onset):.1f} s (length "
                             f"{float(duration):.1f} s) is off the 30-s epoch grid of the PSG")
        spans.append((int(round(start)), int(round(count)), code, stage4))
    if not spans:
        return Hypnogram(np.zeros(0, np.int8), error=_why_no_stages(path, len(annotations)))
    if min(s for s, *_ in spans) < 0:
        return Hypnogram(np.zeros(0, np.int8), error="stage annotations start before the PSG")
    codes = np.full(max(s + n for s, n, *_ in spans), GAP, np.int8)
    four = np.zeros(len(codes), bool)
    for start, count, code, stage4 in spans:  # a later annotation overrides an earlier one, as in a scorer's edit
        codes[start:start + count] = code
        four[start:start + count] = stage4
    return Hypnogram(codes, stage4=int(four.sum()))


def _why_no_stages(path: Path, annotations: int) -> str:
    """Why an EDF+ file gave no stage annotations. ``mne.read_annotations`` returns none, without an error,
    for a file that is not EDF at all (text, a cut-off header) and for an EDF without an annotation signal
    (a PSG), so the file is opened as EDF (header only) to tell those from a hypnogram without stages."""
    import mne

    try:
        raw = mne.io.read_raw_edf(str(path), preload=False, verbose="error")
    except Exception as error:  # noqa: BLE001 - reported, not raised
        return f"not a readable EDF+ file ({first_line(error)})"
    if raw.ch_names and not annotations:
        shown = ", ".join(raw.ch_names[:4]) + (", ..." if len(raw.ch_names) > 4 else "")
        return (f"not a hypnogram: an EDF with {len(raw.ch_names)} signal channel(s) ({shown}) and no annotations "
                f"(is it a PSG?)")
    return "no sleep-stage annotations (expected 'Sleep stage W/1/2/3/4/R/?')"


def read_csv_hypnogram(path: Path) -> Hypnogram:
    """A CSV with a header and columns ``epoch`` (0, 1, 2, ... from the PSG's start) and ``stage``.

    ``epoch`` may be left out, then rows are epochs in order. Labels outside the accepted spellings are
    kept as ``foreign`` (reported as bad epochs); numbers are refused (see ``_PREFIXED_DIGITS``).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        return Hypnogram(np.zeros(0, np.int8), error=f"cannot read CSV ({first_line(error)})")
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        return Hypnogram(np.zeros(0, np.int8), error="empty file: expected a header 'epoch,stage' and one row per epoch")
    header = [h.strip().lower() for h in rows[0]]
    if "stage" not in header:
        return Hypnogram(np.zeros(0, np.int8), error=f"no 'stage' column (header: {','.join(rows[0])})")
    col, ecol = header.index("stage"), (header.index("epoch") if "epoch" in header else None)
    codes = np.full(len(rows) - 1, GAP, np.int8)
    stage4, foreign = 0, []
    for k, row in enumerate(rows[1:]):
        line = k + 2
        if ecol is not None:
            cell = row[ecol].strip() if ecol < len(row) else ""
            if cell != str(k):
                return Hypnogram(np.zeros(0, np.int8), error=f"line {line}: epoch {cell!r} where {k} was expected "
                                 f"(rows must be consecutive epochs from 0)")
        text = row[col].strip() if col < len(row) else ""
        code, four = stage_code(text)
        if code is None:
            foreign.append((k, f"line {line}", text))
            continue
        codes[k] = code
        stage4 += four
    return Hypnogram(codes, stage4=stage4, foreign=foreign)


def read_hypnogram(path: Path, shift: float = 0.0) -> Hypnogram:
    if path.stat().st_size == 0:
        return Hypnogram(np.zeros(0, np.int8), error="empty file (0 bytes)")
    return read_csv_hypnogram(path) if path.suffix.lower() == ".csv" else read_edf_hypnogram(path, shift)


