"""The second half of ``kdbench predict``: stream the planned night through the student, then compute and
write everything (statistics, agreement, hypnogram files, plot) and print the summary."""

from __future__ import annotations

import itertools

import numpy as np

from kdbench.engine.loop import amp_dtype
from kdbench.errors import KdbenchError
from kdbench.metrics import score

from ..datasets.sleep.hypnogram import CLASS_NAMES, GAP
from ..shared import media
from . import outputs
from .night import predict_clips
from .plot import plot_night
from .sleepstats import format_statistics, sleep_statistics


def _epochs_text(epochs: list[int]) -> str:
    shown = ", ".join(map(str, epochs[:8])) + (", ..." if len(epochs) > 8 else "")
    return f"{len(epochs)} epoch{'s' * (len(epochs) != 1)} ({shown})"


def damage_warnings(damage, t, n: int) -> list[str]:
    """What the tolerant decoding met, in epochs: packets it could not decode (the frames after one may be
    damaged until the next keyframe) and gaps, where a sampled frame had been on screen for seconds."""
    out = []
    if damage.skipped:
        hit = sorted({int((time - t.start) // t.epoch) for time in damage.skipped if np.isfinite(time)} & set(range(n)))
        out.append(f"skipped {len(damage.skipped)} undecodable packet{'s' * (len(damage.skipped) != 1)} of the video"
                   + (f"; {_epochs_text(hit)} may show damaged frames" if hit else ""))
    if damage.stale:
        gaps = [j for j, _ in damage.stale if j < n]
        worst = max(age for _, age in damage.stale)
        out.append(f"{_epochs_text(gaps)} sample frames that had been on screen for up to {worst:.0f} s (gaps in the "
                   f"video, e.g. a camera that records on motion): their stages come from frozen frames")
    return out


def predict_and_write(p, *, batch_size: int, progress: bool, echo=print) -> None:
    try:
        _predict_and_write(p, batch_size=batch_size, progress=progress, echo=echo)
    except BaseException:
        if p.created and p.out.is_dir() and not any(p.out.iterdir()):
            p.out.rmdir()   # the folder the plan made to check it is writable: nothing was written into it
        raise


def _predict_and_write(p, *, batch_size: int, progress: bool, echo) -> None:
    import click

    t = p.timeline
    s = p.student
    echo(f"student: {s.config.student.name} from {s.origin} (distiller {s.config.distiller.name}, dataset "
         f"{s.config.dataset.name}: {s.info.student_input_shape[1]} frames of {s.info.student_input_shape[2]} x "
         f"{s.info.student_input_shape[3]} per {t.epoch:g}-s epoch)")
    echo(f"video: {p.video} ({p.duration:.1f} s): {p.expected} epochs from video second {t.start:.2f}"
         + (f" = PSG epoch {t.first_psg_epoch}" if t.first_psg_epoch is not None and t.offset else ""))
    for note in p.notes:
        echo(f"note: {note}")
    damage = media.Damage()
    clips = s.dataset.night_clips(p.video, t.start, s.options, t.epoch, damage=damage)
    if p.expected:   # no epoch past the header's end (its last sampling instants may still fall inside the file)
        clips = itertools.islice(clips, p.expected)
    night = predict_clips(s.model, clips, batch_size=batch_size, device=p.device, total=p.expected or None,
                          progress=progress, start=t.start, epoch=t.epoch, amp=amp_dtype(s.config.amp, p.device))
    n = len(night)
    if n == 0:
        raise KdbenchError(f"no whole epoch could be read from video {str(p.video)!r}"
                           + (f" ({night.stopped})" if night.stopped else "") + ": nothing written")
    warnings = []
    if night.stopped:
        warnings.append(f"{night.stopped}; staged the {n} epochs before it (of {p.expected} the header promises)")
    elif p.expected and n < p.expected:
        end = t.start + n * t.epoch
        warnings.append(f"the video ends near {end:.0f} s, but its header promises {p.duration:.1f} s (a truncated "
                        f"file?): staged the {n} epochs it holds, of {p.expected}")
    warnings += damage_warnings(damage, t, n)
    stages = night.stages

    psg_here = None
    columns = {"predicted": sleep_statistics(stages, t.epoch)}
    agreement = None
    if p.psg is not None:
        first = t.first_psg_epoch
        psg_here = np.full(n, GAP, np.int8)
        part = p.psg[first:first + n]
        psg_here[:len(part)] = part
        scored = psg_here >= 0
        if scored.any():
            columns["PSG"] = sleep_statistics(psg_here, t.epoch)
            agreement = (score(psg_here[scored], stages[scored], CLASS_NAMES), int(scored.sum()),
                         int((~scored).sum()))
        else:
            warnings.append(f"the PSG hypnogram scores none of the {n} staged epochs: no agreement to report")

    with outputs.staged(p.out) as folder:
        outputs.write_epochs(folder / outputs.EPOCHS_CSV, stages, night.probabilities, t, psg_here)
        layout_note = outputs.write_hypnograms(folder, stages, t)
        about = {"video": str(p.video), "student": s.origin, "student_network": s.config.student.name,
                 "distiller": s.config.distiller.name, "epoch_seconds": t.epoch, "first_epoch_video_s": t.start,
                 "video_offset_s": t.offset, "first_psg_epoch": t.first_psg_epoch, "epochs": n,
                 "clock_start": t.wall(0).isoformat(timespec="seconds") if t.clock else None,
                 "warnings": warnings}
        outputs.write_json(folder / outputs.STATS_JSON, {**about, "statistics": columns})
        (folder / outputs.STATS_TXT).write_text(format_statistics(columns) + "\n")
        if agreement is not None:
            outputs.write_json(folder / outputs.AGREEMENT_JSON, {**about, "psg_hypnogram": str(p.psg_path),
                                                                 **outputs.agreement_dict(*agreement)})
            (folder / outputs.AGREEMENT_TXT).write_text(outputs.agreement_text(*agreement) + "\n")
        title = f"{p.video.name}: {s.config.student.name} ({s.config.distiller.name})"
        plot_night(folder / outputs.PLOT, stages, night.probabilities, t, title, psg_here)
        written = sorted(f.name for f in folder.iterdir())

    echo("")
    echo(format_statistics(columns))
    if agreement is not None:
        echo("")
        echo(outputs.agreement_text(*agreement))
    if layout_note:
        echo(f"note: {layout_note}")
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    echo(f"\nwrote {', '.join(written)} to {p.out}")
