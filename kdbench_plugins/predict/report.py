"""The second half of ``kdbench predict``: stream the planned night through the student, then compute and
write everything (statistics, agreement, hypnogram files, plot) and print the summary."""

from __future__ import annotations

import numpy as np

from kdbench.engine.loop import amp_dtype
from kdbench.errors import KdbenchError
from kdbench.metrics import score

from ..datasets.sleep.hypnogram import CLASS_NAMES, GAP
from . import outputs
from .night import predict_clips
from .plot import plot_night
from .sleepstats import format_statistics, sleep_statistics


def predict_and_write(p, *, batch_size: int, progress: bool, echo=print) -> None:
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
    clips = s.dataset.night_clips(p.video, t.start, s.options, t.epoch)
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
    stages = night.stages

    psg_here = None
    columns = {"predicted": sleep_statistics(stages, t.epoch)}
    agreement = None
    if p.psg is not None:
        first = t.first_psg_epoch
        psg_here = np.full(n, GAP, np.int8)
        part = p.psg[first:first + n]
        psg_here[:len(part)] = part
        if (psg_here >= 0).any():
            columns["PSG"] = sleep_statistics(psg_here, t.epoch)
        scored = psg_here >= 0
        agreement = (score(psg_here[scored], stages[scored], CLASS_NAMES), int(scored.sum()), int((~scored).sum()))

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
