"""Generators of small ``s3ve`` and ``sleepedf`` datasets, written in exactly the formats the loaders read.

Stages follow a semi-Markov chain over the R&K stages (W, 1, 2, 3, 4, R: bouts of a few epochs, then a
plausible next stage), with a few "Movement time" and "Sleep stage ?" epochs. Each epoch's EEG comes from
``kdbench_plugins.datasets.synthetic.make_eeg`` and each 30 s of infrared video from ``make_video``, both driven
by the epoch's AASM class, so a teacher on the EEG learns the stages easily and a student on the video only
faintly -- as with the real data. Everything is a function of the options and the seed.

EDF files are written with ``edfio``: PSG as EDF with several channels, hypnograms as EDF+ annotation files
like PhysioNet Sleep-EDF's (one annotation per run of equal stages), or as CSV (``epoch,stage``); video as
Xvid AVI through ``media.write_avi``.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from pathlib import Path
from typing import Iterator

import numpy as np
from pydantic import Field

from kdbench.options import PluginOptions

from ...shared import media
from ..synthetic import make_eeg, make_video

#: R&K stage codes used below -> (EDF+ description, AASM class for the signals, CSV label)
STAGES = {
    "W": ("Sleep stage W", 0, "W"), "1": ("Sleep stage 1", 1, "N1"), "2": ("Sleep stage 2", 2, "N2"),
    "3": ("Sleep stage 3", 3, "N3"), "4": ("Sleep stage 4", 3, "N3"), "R": ("Sleep stage R", 4, "R"),
    "M": ("Movement time", 0, "MT"), "?": ("Sleep stage ?", 0, "?"),
}
#: where a bout of each stage goes next (the stage itself excluded); bouts last 1 + Geometric(0.3) epochs.
NEXT = {
    "W": {"1": 0.7, "2": 0.3},
    "1": {"2": 0.7, "W": 0.2, "R": 0.1},
    "2": {"3": 0.45, "R": 0.25, "1": 0.15, "W": 0.15},
    "3": {"4": 0.4, "2": 0.6},
    "4": {"3": 0.6, "2": 0.4},
    "R": {"2": 0.5, "W": 0.3, "1": 0.2},
}
UV_RANGE = (-500.0, 500.0)   # physical range of the EEG channels, microvolts
EEG_UV = 25.0                # one unit of make_eeg's output, in microvolts
S3VE_CHANNELS = ("EEG F4-M1", "EEG C4-M1", "EEG C3-M2", "EEG O2-M1", "EOG E1-M2")
SLEEPEDF_CHANNELS = ("EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal")
AHI_RANGES = ((0.5, 4.9), (5.0, 14.9), (15.0, 30.0), (30.5, 80.0))


class S3VESynthOptions(PluginOptions):
    subjects: int = Field(6, ge=1, le=500, description="nights (one per subject)")
    epochs: int = Field(60, ge=4, le=2000, description="30-s epochs per night (the PSG's length)")
    eeg_rate: int = Field(256, ge=50, le=1024, description="PSG sampling rate, Hz (the loader resamples)")
    fps: float = Field(1.0, gt=0.0, le=30.0, description="infrared video frame rate")
    width: int = Field(64, ge=16, le=640, description="video width, pixels (even)")
    height: int = Field(48, ge=16, le=480, description="video height, pixels (even)")
    csv_every: int = Field(3, ge=0, description="every n-th night gets a CSV hypnogram instead of EDF+ (0: none)")


class SleepEDFSynthOptions(PluginOptions):
    subjects: int = Field(4, ge=1, le=99, description="subjects; each has two nights except the second")
    epochs: int = Field(60, ge=4, le=2000, description="30-s epochs of the sleep period per night")
    wake_edge: int = Field(80, ge=0, le=2000, description="wake epochs before and after the sleep period")
    unscored_tail: int = Field(12, ge=0, le=2000, description="'Sleep stage ?' epochs closing the recording")


# --------------------------------------------------------------------------- stages and signals


def stage_sequence(rng: np.random.Generator, n: int, first: str = "W", movement: float = 0.03,
                   unknown: int = 1) -> list[str]:
    """``n`` R&K stage codes: bouts from ``NEXT``, then a few movement and unscored epochs sprinkled in."""
    out: list[str] = []
    stage = first
    while len(out) < n:
        out += [stage] * (1 + int(rng.geometric(0.3)))
        options = NEXT[stage]
        stage = str(rng.choice(list(options), p=list(options.values())))
    out = out[:n]
    for k in range(1, n):
        if rng.random() < movement:
            out[k] = "M"
    for k in rng.choice(np.arange(1, n), size=min(unknown, n - 1), replace=False):
        out[int(k)] = "?"
    return out


def classes_of(stages: list[str]) -> np.ndarray:
    return np.array([STAGES[s][1] for s in stages], np.int64)


def night_eeg(rng: np.random.Generator, classes: np.ndarray, arousal: np.ndarray, rate: int,
              channels: tuple[str, ...]) -> dict[str, np.ndarray]:
    """One continuous signal per channel, microvolts: epochs of ``make_eeg`` laid end to end.

    Two independent sources are drawn and each channel is its own mixture of them plus a little noise, as
    neighbouring derivations share much of their signal (and drawing every channel costs more time).
    """
    sources = [make_eeg(rng, classes, arousal, rate, 30.0, 1.0)[:, 0, :].reshape(-1).astype(np.float64)
               for _ in range(min(2, len(channels)))]
    out = {}
    for name in channels:
        weights = rng.dirichlet(np.ones(len(sources)))
        x = sum(w * s for w, s in zip(weights, sources)) + rng.normal(0.0, 0.05, sources[0].shape)
        out[name] = np.clip(x * EEG_UV * (0.6 if name.startswith("EOG") else 1.0), *UV_RANGE)
    return out


#: memory make_video may use per chunk of epochs (it holds about a dozen float32 arrays of the clips' size)
RENDER_BUDGET = 1 << 30


def night_video(rng: np.random.Generator, classes: np.ndarray, arousal: np.ndarray, fps: float, height: int,
                width: int, offset: float, count: int) -> Iterator[np.ndarray]:
    """``count`` uint8 frames (H, W), streamed; frame j shows PSG time ``offset + j / fps``, drawn from that
    epoch's clip. Epochs are rendered in chunks of at most 16 (fewer for large frames), in order, so a night
    at S³VE's 320 x 240 and 25 fps never has to fit in memory."""
    per = max(1, int(round(30.0 * fps)))
    chunk = int(max(1, min(16, RENDER_BUDGET // (per * height * width * 4 * 12))))
    t = offset + np.arange(count) / fps
    epoch = np.clip(np.floor(t / 30.0).astype(int), 0, len(classes) - 1)
    within = np.clip(np.floor((t - 30.0 * epoch) * fps).astype(int), 0, per - 1)
    lo, clips = -chunk, None
    for e, w in zip(epoch, within):
        while e >= lo + chunk:   # epochs only move forward: render the next chunk
            lo += chunk
            part = make_video(rng, classes[lo:lo + chunk], arousal[lo:lo + chunk], per, height, width, fps, 0.65,
                              0.02, 0.7)
            clips = np.round(part[:, 0] * 255.0).astype(np.uint8)
        yield clips[e - lo, w]


# --------------------------------------------------------------------------- writers


def write_psg(path: Path, signals: dict[str, np.ndarray], rate: float, start: dt.datetime,
              record_seconds: float = 1.0) -> None:
    """An EDF with one signal per channel (microvolts, 16-bit over ``UV_RANGE``)."""
    import edfio

    edf = edfio.Edf(
        [edfio.EdfSignal(np.asarray(x, np.float64), rate, label=name, transducer_type="AgAgCl electrode",
                         physical_dimension="uV", physical_range=UV_RANGE) for name, x in signals.items()],
        recording=edfio.Recording(startdate=start.date()), starttime=start.time(),
        data_record_duration=record_seconds)
    edf.write(path)


def stage_annotations(stages: list[str], epoch: float = 30.0, first: float = 0.0) -> list[tuple[float, float, str]]:
    """(onset s, duration s, description) per run of equal stages, as Sleep-EDF's hypnograms have them; the
    stages are consecutive epochs of ``epoch`` seconds from ``first`` seconds after the file's start."""
    runs = []
    k = 0
    while k < len(stages):
        j = k
        while j < len(stages) and stages[j] == stages[k]:
            j += 1
        runs.append((first + epoch * k, epoch * (j - k), STAGES[stages[k]][0]))
        k = j
    return runs


def write_hypnogram_edf(path: Path, stages: list[str], start: dt.datetime | None, epoch: float = 30.0,
                        first: float = 0.0) -> None:
    """An EDF+ file holding only annotations (no signals), like ``SC4001EC-Hypnogram.edf``; ``start`` None
    leaves EDF's placeholder date and time (the clock time is unknown)."""
    import edfio

    edf = edfio.Edf([], recording=edfio.Recording(startdate=start.date() if start else None),
                    starttime=start.time() if start else None,
                    annotations=[edfio.EdfAnnotation(o, d, text) for o, d, text in stage_annotations(stages, epoch,
                                                                                                     first)])
    edf.write(path)


def write_hypnogram_csv(path: Path, stages: list[str]) -> None:
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["epoch", "stage"])
        out.writerows([k, STAGES[s][2]] for k, s in enumerate(stages))


# --------------------------------------------------------------------------- the two datasets


def write_s3ve(root: Path, o: S3VESynthOptions, seed: int, echo=print) -> None:
    """``subjects`` night folders plus ``subjects.csv`` (AHI across the four groups, per-night video offsets)."""
    if o.width % 2 or o.height % 2:
        raise ValueError("video width and height must be even (yuv420p)")
    rows = []
    for i in range(o.subjects):
        rng = np.random.default_rng([seed, 3, i])
        name = f"S{i + 1:03d}"
        folder = root / name
        folder.mkdir()
        stages = stage_sequence(rng, o.epochs, first="W", unknown=1)
        classes = classes_of(stages)
        arousal = rng.standard_normal(len(classes))
        start = dt.datetime(2021, 3, 1 + i % 28, 21, 30) + dt.timedelta(minutes=int(rng.integers(0, 50)))
        write_psg(folder / "psg.edf", night_eeg(rng, classes, arousal, o.eeg_rate, S3VE_CHANNELS), o.eeg_rate, start)
        if o.csv_every and i % o.csv_every == o.csv_every - 1:
            write_hypnogram_csv(folder / "hypnogram.csv", stages)
        else:
            write_hypnogram_edf(folder / "hypnogram.edf", stages, start)
        offset = -round(float(rng.uniform(1.0, 8.0)), 2)     # the camera starts a little before the PSG
        seconds = o.epochs * 30.0 - offset + float(rng.uniform(1.0, 5.0))
        count = int(math.ceil(seconds * o.fps))
        media.write_avi(folder / "video.avi", night_video(rng, classes, arousal, o.fps, o.height, o.width, offset,
                                                           count), o.fps)
        lo, hi = AHI_RANGES[i % 4]
        rows.append([name, "MF"[int(rng.integers(0, 2))], int(rng.integers(7, 71)),
                     round(float(rng.uniform(lo, hi)), 1), offset])
        echo(f"  {name}: {o.epochs} epochs, video offset {offset:+.2f} s")
    with open(root / "subjects.csv", "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["subject", "sex", "age", "ahi", "video_offset"])
        out.writerows(rows)


def sleepedf_names(subject: int, night: int) -> tuple[str, str]:
    """PhysioNet's naming: SC4ssN E0-PSG.edf with SC4ssN E?-Hypnogram.edf (the 7th character differs)."""
    stem = f"SC4{subject:02d}{night}"
    return f"{stem}E0-PSG.edf", f"{stem}E{'CHJMPVW'[(subject + night) % 7]}-Hypnogram.edf"


def write_sleepedf(root: Path, o: SleepEDFSynthOptions, seed: int, echo=print) -> None:
    """Two nights per subject (one for the second subject, as in Sleep-EDF where a few nights are missing)."""
    for s in range(o.subjects):
        for night in ((1,) if s == 1 else (1, 2)):
            rng = np.random.default_rng([seed, 7, s, night])
            lead, tail = (max(0, o.wake_edge + int(rng.integers(-5, 6))) for _ in range(2))
            stages = (["W"] * lead + stage_sequence(rng, o.epochs, first="1", unknown=1) + ["W"] * tail
                      + ["?"] * o.unscored_tail)
            classes = classes_of(stages)
            arousal = rng.standard_normal(len(classes))
            start = dt.datetime(1989, 4, 1 + s % 28, 16, 0) + dt.timedelta(days=night - 1, minutes=int(rng.integers(0, 50)))
            psg, hyp = sleepedf_names(s, night)
            write_psg(root / psg, night_eeg(rng, classes, arousal, 100, SLEEPEDF_CHANNELS), 100, start, 30.0)
            write_hypnogram_edf(root / hyp, stages, start)
            echo(f"  {psg} + {hyp}: {len(stages)} epochs")
