"""The files ``kdbench predict`` writes, all into one folder and all at once.

They are written into a hidden ``.partial`` folder beside their destination and moved in only when every
one is complete, so an interrupted or failed prediction leaves no half-written file (and no file of an
earlier prediction half-replaced).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from kdbench.metrics import Scores
from kdbench.paths import remove_abandoned

from ..datasets.sleep.hypnogram import CLASS_NAMES
from ..datasets.sleep.synth import write_hypnogram_csv, write_hypnogram_edf
from .timeline import Timeline

EPOCHS_CSV = "epochs.csv"
HYPNOGRAM_EDF = "hypnogram.edf"
HYPNOGRAM_CSV = "hypnogram.csv"
STATS_JSON = "sleep_stats.json"
STATS_TXT = "sleep_stats.txt"
AGREEMENT_JSON = "agreement.json"
AGREEMENT_TXT = "agreement.txt"
PLOT = "hypnogram.png"
#: every file a prediction may write (an existing one is refused without --overwrite)
ALL = (EPOCHS_CSV, HYPNOGRAM_EDF, HYPNOGRAM_CSV, STATS_JSON, STATS_TXT, AGREEMENT_JSON, AGREEMENT_TXT, PLOT)
#: class index -> the stage codes of the synthetic generator's writers (Sleep-EDF's "Sleep stage W/1/2/3/R")
RK_CODE = ("W", "1", "2", "3", "R")
UNSCORED = "?"


@contextmanager
def staged(folder: Path) -> Iterator[Path]:
    """A scratch folder inside ``folder``; if the block succeeds its files replace those of ``folder``, and an
    earlier prediction's files that this one did not write (``agreement.*`` of a run with a PSG hypnogram) go,
    so the folder never mixes two predictions. Scratch folders of processes that died are removed first."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_abandoned(folder.glob(".predict-*.partial"))
    scratch = folder / f".predict-{os.getpid()}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        yield scratch
        written = {path.name for path in scratch.iterdir()}
        for name in sorted(written):
            os.replace(scratch / name, folder / name)
        for name in ALL:
            if name not in written:
                (folder / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_epochs(path: Path, stages: np.ndarray, probabilities: np.ndarray, timeline: Timeline,
                 psg: np.ndarray | None) -> None:
    """One row per predicted epoch: its place in time, the stage, each stage's probability (and the PSG's)."""
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["epoch", "psg_epoch", "onset_s", "video_s", "clock", "stage",
                      *(f"p_{c}" for c in CLASS_NAMES), *(["psg_stage"] if psg is not None else [])])
        first = timeline.first_psg_epoch
        for j, (stage, p) in enumerate(zip(stages, probabilities)):
            wall = timeline.wall(j)
            row = [j, "" if first is None else first + j, f"{timeline.psg_time(j):.3f}",
                   f"{timeline.start + j * timeline.epoch:.3f}", wall.isoformat(timespec="seconds") if wall else "",
                   CLASS_NAMES[stage], *(f"{v:.6f}" for v in p)]
            if psg is not None:
                row.append(CLASS_NAMES[psg[j]] if psg[j] >= 0 else UNSCORED)
            out.writerow(row)


def hypnogram_layout(stages: np.ndarray, timeline: Timeline) -> tuple[list[str], float, str]:
    """(stage codes from the files' time 0, seconds of the files' time 0 after PSG time 0, a note).

    On the PSG's grid the files count epochs from the PSG's start, the ones before the video marked
    unscored ("?"), so ``s3ve`` reads them as it reads a lab's hypnogram; off it they start at the first
    predicted epoch."""
    codes = [RK_CODE[s] for s in stages]
    first = timeline.first_psg_epoch
    if first is None:
        return codes, timeline.psg_time(0), (f"the epochs are off the PSG's {timeline.epoch:g}-s grid, so "
                                             f"{HYPNOGRAM_EDF} and {HYPNOGRAM_CSV} start at the first predicted epoch")
    return [UNSCORED] * first + codes, 0.0, ""


def write_hypnograms(folder: Path, stages: np.ndarray, timeline: Timeline) -> str:
    """The stages as EDF+ annotations (``mne.read_annotations`` reads them) and as the ``epoch,stage`` CSV the
    ``s3ve`` dataset reads; returns a note when they could not be put on the PSG's grid."""
    codes, zero, note = hypnogram_layout(stages, timeline)
    start = timeline.clock
    if start is not None:
        import datetime as dt

        start = (start + dt.timedelta(seconds=zero)).replace(microsecond=0)
    write_hypnogram_edf(folder / HYPNOGRAM_EDF, codes, start, epoch=timeline.epoch)
    if timeline.epoch == 30.0:   # the CSV has no epoch length: its readers take 30 s
        write_hypnogram_csv(folder / HYPNOGRAM_CSV, codes)
    return note


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def agreement_dict(scores: Scores, compared: int, unscored: int) -> dict:
    return {"epochs_compared": compared, "psg_unscored_skipped": unscored, "accuracy": scores.accuracy,
            "mf1": scores.mf1, "kappa": scores.kappa,
            # a stage the PSG never scored has no accuracy (None), though MF1 counts it as 0 (kdbench.metrics)
            "per_stage_accuracy": {c: (float(v) if n else None) for c, v, n in
                                   zip(scores.class_names, scores.per_class_accuracy, scores.confusion.sum(1))},
            "confusion": {"rows": "PSG stage", "columns": "predicted stage", "classes": list(scores.class_names),
                          "matrix": scores.confusion.tolist()}}


def agreement_text(scores: Scores, compared: int, unscored: int) -> str:
    """Accuracy, MF1, kappa, per-stage accuracy and the confusion matrix, as a reader wants them."""
    names = scores.class_names
    lines = [f"agreement with the PSG hypnogram over {compared} epochs"
             + (f" ({unscored} unscored PSG epoch{'s' * (unscored != 1)} left out)" if unscored else ""),
             f"  accuracy {scores.accuracy:.3f}   MF1 {scores.mf1:.3f}   Cohen's kappa {scores.kappa:.3f}",
             "  per-stage accuracy (recall): " + "  ".join(f"{c} {v:.3f}" if n else f"{c} -" for c, v, n in
                                                         zip(names, scores.per_class_accuracy,
                                                             scores.confusion.sum(1))),
             "  confusion (rows: PSG, columns: predicted):",
             "        " + "".join(f"{c:>7}" for c in names)]
    for c, row in zip(names, scores.confusion):
        lines.append(f"  {c:<6}" + "".join(f"{int(v):>7}" for v in row))
    return "\n".join(lines)
