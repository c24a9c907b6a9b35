"""PSG recordings: the header facts an index needs, the EEG channel, and one 30-s epoch at the teacher's rate.

Headers are read with ``mne.io.read_raw_edf(preload=False)``, which reads no samples. When the file is
shorter than its header's count of data records, MNE warns and reads what the file holds; that warning is
caught, and ``edfio`` (which reads the header the same way, again without samples) says how many records
the header promised and how many the file holds, so the index can report the PSG as truncated. An epoch is read with
``get_data(start, stop)`` and resampled by polyphase filtering (``scipy.signal.resample_poly``). So that an
epoch cut out on its own equals the same stretch of the whole channel resampled at once -- no filter edge at
every epoch boundary -- it is resampled with a margin of real signal on both sides, chosen so that the
margin's start lies on the output sample grid, and the margin is cut off afterwards.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from kdbench.errors import first_line

from .hypnogram import EPOCH


@dataclass(frozen=True)
class PsgHeader:
    sfreq: float
    n_times: int
    channels: tuple[str, ...]
    meas_date: object  # datetime or None
    #: samples per channel the header's record count promises (= n_times unless the file was cut short)
    promised_n_times: int = 0
    #: "" or why the file holds less than its header promises ("the header promises N data records, ...")
    truncation: str = ""

    @property
    def seconds(self) -> float:
        return self.n_times / self.sfreq

    @property
    def epochs(self) -> int:
        """Whole 30-s epochs in the recording (a partial last one is not a sample)."""
        return int(math.floor(self.seconds / EPOCH + 1e-9))

    def as_promised(self) -> PsgHeader:
        """The recording as its header describes it (what a hypnogram's length is compared with)."""
        return replace(self, n_times=max(self.n_times, self.promised_n_times), truncation="")


#: the start of the warning MNE (1.6-1.13) gives when the file holds fewer or more data records than its header states
_MNE_RECORDS = "number of records from the header does not match the file size"
#: edfio's warning in the same case, with both counts
_EDFIO_RECORDS = re.compile(r"header indicates (-?\d+) data\s+records, but file contains (\d+) records")


def open_raw(path: Path, verbose: str = "error"):
    import mne

    return mne.io.read_raw_edf(str(path), preload=False, verbose=verbose)


def record_counts(path: Path) -> tuple[int, int] | None:
    """(data records the header states, whole data records the file holds), as edfio reports them when the
    two differ; None when they agree or edfio cannot tell."""
    import edfio

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            edfio.read_edf(path, lazy_load_data=True)
        except Exception:  # noqa: BLE001 - MNE read the file; edfio only adds the counts
            return None
    for warning in caught:
        found = _EDFIO_RECORDS.search(str(warning.message))
        if found:
            return int(found.group(1)), int(found.group(2))
    return None


def read_header(path: Path) -> tuple[PsgHeader | None, str]:
    """(header, "") or (None, why the file cannot be used).

    A file cut short (fewer data records than its header states) still gives a header: ``n_times`` is what
    the file holds, ``promised_n_times`` what the header promised, and ``truncation`` says so; the epochs it
    still holds are usable. With no whole record left, it cannot be used at all.
    """
    try:
        if path.stat().st_size == 0:
            return None, "empty file (0 bytes)"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            raw = open_raw(path, verbose="warning")
    except Exception as error:  # noqa: BLE001 - reported as a problem with the file
        return None, f"not a readable EDF ({first_line(error)})"
    if not raw.ch_names:
        return None, "no signal channels, only EDF+ annotations (is it a hypnogram?)"
    n_times, promised, truncation = int(raw.n_times), int(raw.n_times), ""
    if any(str(w.message).lower().startswith(_MNE_RECORDS) for w in caught):
        counts = record_counts(path)
        if counts is not None and counts[0] > counts[1]:
            stated, held = counts
            sfreq = float(raw.info["sfreq"])
            promised = n_times * stated // held if held else n_times
            truncation = (f"truncated: the header promises {stated} data records, the file holds {held} "
                          f"({n_times / sfreq:.0f} of {promised / sfreq:.0f} s)" if held else
                          f"truncated: the header promises {stated} data records, the file holds none")
    if n_times == 0:
        return None, truncation or "EDF holds no samples"
    header = PsgHeader(float(raw.info["sfreq"]), n_times, tuple(raw.ch_names), raw.info["meas_date"],
                       promised, truncation)
    return header, ""


def _normal(name: str) -> str:
    """Channel names compared without case, spaces, a leading 'EEG' and the separator of a derivation."""
    text = name.lower().replace(" ", "").replace(":", "-").replace("_", "-")
    return text[3:] if text.startswith("eeg") and len(text) > 3 else text


def match_channel(wanted: str, channels: tuple[str, ...]) -> str | None:
    """The channel meant by ``wanted``: the exact label, else the one label equal up to ``_normal``."""
    if wanted in channels:
        return wanted
    same = [c for c in channels if _normal(c) == _normal(wanted)]
    return same[0] if len(same) == 1 else None


def _ratio(sfreq: float, rate: int) -> tuple[int, int]:
    ratio = Fraction(rate / sfreq).limit_denominator(1000)
    return ratio.numerator, ratio.denominator


def read_epoch(raw, channel: str, k: int, rate: int) -> np.ndarray:
    """Epoch ``k`` (PSG seconds [30k, 30k + 30)) of ``channel`` at ``rate`` Hz, in microvolts: float32 (1, 30 * rate)."""
    from scipy.signal import resample_poly

    sfreq, n = float(raw.info["sfreq"]), int(raw.n_times)
    start, stop = int(round(k * EPOCH * sfreq)), int(round((k + 1) * EPOCH * sfreq))
    length = int(round(EPOCH * rate))
    pick = raw.ch_names.index(channel)
    if abs(sfreq - rate) < 1e-9:
        data = raw.get_data(picks=[pick], start=start, stop=stop)[0]
    else:
        up, down = _ratio(sfreq, rate)
        # resample_poly's filter reaches 10 * max(up, down) upsampled samples to each side; a margin of a
        # multiple of `down` input samples keeps the output grid of the piece on that of the whole channel.
        need = 10 * max(up, down) / up + 2
        margin = down * math.ceil(need / down)
        first, last = max(0, start - margin), min(n, stop + margin)
        piece = raw.get_data(picks=[pick], start=first, stop=last)[0]
        out = resample_poly(piece, up, down)
        skip = (start - first) * up // down
        data = out[skip:skip + length]
    if len(data) != length:
        raise ValueError(f"epoch {k} of {channel!r} has {len(data)} samples after resampling, not {length}")
    return (data * 1e6).astype(np.float32)[None, :]
