"""Whole-night sleep statistics from a hypnogram, as the AASM manual defines them.

The input is one code per epoch from lights-off (the record's start) to lights-on (its end), coded as in
:mod:`kdbench_plugins.datasets.sleep.hypnogram`: 0-4 = W, N1, N2, N3, REM; negative codes (movement time,
unscored, not annotated) are epochs that carry no stage.

Definitions follow the parameters the AASM Manual (v2.6) asks a PSG report to give:

- TRT, total recording time (here ``tib_min``, "time in bed"): every epoch, scored or not;
- TST, total sleep time: the N1, N2, N3 and REM epochs;
- SL, sleep latency (``sol_min``): record start to sleep onset, the first epoch scored other than W
  (unscored epochs before it count in the latency, since they are time in bed spent not yet asleep);
- stage R latency (``rem_latency_min``): sleep onset to the first REM epoch;
- WASO = TRT - SL - TST, wake after sleep onset. Read literally, that difference also holds the unscored
  epochs after onset; here it is the W epochs after onset only, and the unscored ones are reported on their
  own (``unscored_min``), so WASO + unscored after onset = TRT - SL - TST exactly. It runs to the end of the
  record, so it includes the wake after the final awakening;
- SE, sleep efficiency = TST / TRT * 100;
- time in each stage and its percentage of TST (W, which is not part of TST, as a percentage of TRT).

Also given, because other tools report them: SPT, the sleep period from onset to the end of the last sleep
epoch; ``waso_spt_min``, the W within that period only; and ``awakenings``, the number of times a sleep
epoch is followed directly by a W epoch (a final awakening included; sleep -> movement/unscored -> W is
not counted, since no stage change into W was scored).

YASA (``yasa.Hypnogram.sleep_statistics``, the reference the tests compare with) differs in these
definitions, and the tests convert between the two:

- its ``Lat_REM`` runs from the record's start, not from sleep onset (AASM stage R latency = Lat_REM - SOL);
- its ``WASO`` is W within the sleep period only (our ``waso_spt_min``), leaving out the wake after the
  final awakening that the AASM's TRT - SL - TST includes;
- with no sleep at all it reports SPT as 0, where this module gives None: with no sleep onset there is no
  sleep period to measure (TST is 0 either way).

Durations are minutes (floats), percentages are 0-100, and a value that is undefined for the night (a
latency with no sleep or no REM, a percentage of a TST of 0) is None rather than NaN, so it cannot slip
into an average unnoticed.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from kdbench_plugins.datasets.sleep.hypnogram import CLASS_NAMES, GAP, MOVEMENT, UNKNOWN

_WAKE = CLASS_NAMES.index("W")
_REM = CLASS_NAMES.index("REM")
#: codes of the sleep stages (every class but W).
_SLEEP_CODES = tuple(code for code in range(len(CLASS_NAMES)) if code != _WAKE)
#: every code a hypnogram may hold; anything else is refused rather than guessed.
_VALID_CODES = (GAP, UNKNOWN, MOVEMENT, *range(len(CLASS_NAMES)))
_ALLOWED_TEXT = (f"{GAP} (gap), {UNKNOWN} (unscored), {MOVEMENT} (movement), "
                 + ", ".join(f"{code} ({name})" for code, name in enumerate(CLASS_NAMES)))

#: (key, label, unit) of every statistic, in the order ``sleep_statistics`` returns them and
#: ``format_statistics`` prints them. Unit "min" = minutes, "%" = percent, "" = a count.
STATISTICS: tuple[tuple[str, str, str], ...] = (
    ("tib_min", "Time in bed (TIB = TRT)", "min"),
    ("tst_min", "Total sleep time (TST)", "min"),
    ("se_pct", "Sleep efficiency (SE)", "%"),
    ("sol_min", "Sleep onset latency (SOL)", "min"),
    ("rem_latency_min", "REM latency from sleep onset", "min"),
    ("spt_min", "Sleep period time (SPT)", "min"),
    ("waso_min", "Wake after sleep onset (WASO)", "min"),
    ("waso_spt_min", "Wake within sleep period (WASO in SPT)", "min"),
    ("awakenings", "Awakenings (sleep -> W)", ""),
    ("unscored_min", "Unscored, movement or gap epochs", "min"),
    *((f"{name}_min", f"Time in stage {name}", "min") for name in CLASS_NAMES),
    *((f"{name}_pct", f"Stage {name} share of {'TIB' if name == 'W' else 'TST'}", "%") for name in CLASS_NAMES),
)


def sleep_statistics(codes, epoch_seconds: float = 30.0) -> dict[str, float | int | None]:
    """The statistics of :data:`STATISTICS` for one night; see the module docstring for the definitions.

    ``codes``: 1-D, one integer code per epoch from lights-off to lights-on (a list or any integer array;
    floats are accepted when they are whole numbers, as a CSV read by numpy gives them). ``epoch_seconds``:
    the length of one epoch. Raises ValueError, naming the bad value, for anything else.
    """
    stages = _validated_codes(codes)
    _validate_epoch_seconds(epoch_seconds)

    def minutes(epochs: int) -> float:
        # multiplying first keeps whole-minute and half-minute results exact (e.g. 7 * 30 / 60 = 3.5)
        return float(epochs * epoch_seconds / 60.0)

    n_epochs = len(stages)
    per_class = np.bincount(stages[stages >= 0], minlength=len(CLASS_NAMES))
    is_sleep = np.isin(stages, _SLEEP_CODES)
    is_wake = stages == _WAKE
    sleep_at = np.flatnonzero(is_sleep)
    tst = int(is_sleep.sum())
    # a stage change into W counts only when the epoch before it was scored as sleep
    awakenings = int(np.count_nonzero(is_sleep[:-1] & is_wake[1:]))

    if tst:
        onset, last = int(sleep_at[0]), int(sleep_at[-1])
        rem_at = np.flatnonzero(stages == _REM)
        sol = minutes(onset)
        rem_latency = minutes(int(rem_at[0]) - onset) if rem_at.size else None
        spt = minutes(last + 1 - onset)
        waso = minutes(int(is_wake[onset:].sum()))
        waso_spt = minutes(int(is_wake[onset:last + 1].sum()))
    else:  # no sleep onset: nothing is measured from it
        sol = rem_latency = spt = waso = waso_spt = None

    stats: dict[str, float | int | None] = {
        "tib_min": minutes(n_epochs),
        "tst_min": minutes(tst),
        "se_pct": 100.0 * tst / n_epochs,
        "sol_min": sol,
        "rem_latency_min": rem_latency,
        "spt_min": spt,
        "waso_min": waso,
        "waso_spt_min": waso_spt,
        "awakenings": awakenings,
        "unscored_min": minutes(int(np.count_nonzero(stages < 0))),
    }
    for code, name in enumerate(CLASS_NAMES):
        stats[f"{name}_min"] = minutes(int(per_class[code]))
    for code, name in enumerate(CLASS_NAMES):
        if code == _WAKE:  # W is not part of TST: its share is of the time in bed
            stats[f"{name}_pct"] = 100.0 * int(per_class[code]) / n_epochs
        else:
            stats[f"{name}_pct"] = 100.0 * int(per_class[code]) / tst if tst else None
    return stats


def format_statistics(columns: dict[str, dict[str, float | int | None]]) -> str:
    """Nights' statistics (from :func:`sleep_statistics`) side by side, a column per name (e.g. "predicted" and
    "PSG"), a line per statistic in the order of :data:`STATISTICS` with its unit in the label: minutes and
    percentages with one decimal, counts as integers, "-" when undefined. A missing key raises KeyError."""
    def cell(value, unit: str) -> str:
        return "-" if value is None else (f"{float(value):.1f}" if unit else str(int(value)))

    names = list(columns)
    rows = [(label + (f" ({unit})" if unit else ""), *(cell(columns[n][key], unit) for n in names))
            for key, label, unit in STATISTICS]
    width = max(len(r[0]) for r in rows)
    widths = [max(len(n), *(len(r[i + 1]) for r in rows)) for i, n in enumerate(names)]
    lines = [" " * width + "".join(f"  {n:>{w}}" for n, w in zip(names, widths))]
    lines += [f"{r[0]:<{width}}" + "".join(f"  {c:>{w}}" for c, w in zip(r[1:], widths)) for r in rows]
    return "\n".join(lines)


def _validated_codes(codes) -> np.ndarray:
    """``codes`` as an int64 array, or ValueError naming the first value that is not a valid code."""
    array = np.asarray(codes)
    if array.ndim != 1:
        raise ValueError(f"codes must be 1-D (one code per epoch), got an array of shape {array.shape}")
    if array.size == 0:
        raise ValueError("codes is empty: a hypnogram needs at least one epoch")
    if array.dtype.kind == "O":  # a list mixing numbers with None or text: name the first that is not a number
        for at, value in enumerate(array):
            if isinstance(value, bool) or not isinstance(value, Real):
                raise ValueError(f"codes must be integer stage codes: codes[{at}] = {value!r}")
        array = array.astype(np.float64)
    if array.dtype.kind not in "iuf":  # bool would silently read as W/N1, text as nothing at all
        kind = {"b": "bool", "U": "text", "S": "bytes"}.get(array.dtype.kind, str(array.dtype))
        raise ValueError(f"codes must be integer stage codes, got {kind} values such as {array[0].item()!r}")
    if array.dtype.kind == "f":
        whole = np.isfinite(array) & (array == np.round(array))
        if not whole.all():
            at = int(np.flatnonzero(~whole)[0])
            raise ValueError(f"codes must be whole numbers: codes[{at}] = {array[at].item()!r}")
    valid = np.isin(array, _VALID_CODES)
    if not valid.all():
        at = int(np.flatnonzero(~valid)[0])
        value = array[at].item()
        shown = int(value) if isinstance(value, float) else value
        raise ValueError(f"codes[{at}] = {shown!r} is not a stage code; allowed: {_ALLOWED_TEXT}")
    return array.astype(np.int64)


def _validate_epoch_seconds(epoch_seconds) -> None:
    """ValueError unless ``epoch_seconds`` is a finite positive number (bool is not a number here)."""
    if isinstance(epoch_seconds, bool) or not isinstance(epoch_seconds, Real) \
            or not math.isfinite(epoch_seconds) or epoch_seconds <= 0:
        raise ValueError(f"epoch_seconds must be a positive number of seconds, got {epoch_seconds!r}")
