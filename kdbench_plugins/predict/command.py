"""``kdbench predict``: a night of infrared video -> a hypnogram, sleep statistics and (given the PSG's
hypnogram) their agreement, from a student distilled by ``kdbench run``.

It reads top to bottom: every check that can refuse the job is made first (the student file and what it
was trained on, the video's header, the PSG hypnogram and its alignment, the output folder), then the
video is streamed through the student, then every file is written at once (``outputs.staged``).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

import click

from kdbench.errors import KdbenchError, first_line
from kdbench.runs import tracking_uri_option

#: the largest video offset taken seriously (s): more is a unit mistake, and would write a hypnogram of years
MAX_OFFSET = 48 * 3600.0


class Finite(click.ParamType):
    """A finite float, at least ``low`` when given (click's FloatRange lets NaN and infinity through)."""

    name = "float"

    def __init__(self, low: float | None = None) -> None:
        self.low = low

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or (self.low is not None and number < self.low):
            self.fail(f"{value!r} is not a finite number" + (f" of at least {self.low:g}" if self.low else ""),
                      param, ctx)
        return number


@dataclass
class Plan:
    video: Path
    out: Path
    created: bool                 # the output folder is this command's (removed again if nothing is written)
    student: object               # student.TrainedStudent
    timeline: object              # timeline.Timeline
    expected: int                 # whole epochs the header promises from the start
    duration: float               # seconds of video the header promises
    psg: object | None            # np.ndarray of PSG codes, from PSG time 0
    psg_path: Path | None
    device: object
    notes: list[str]


def _video(path: str):
    from ..shared import media

    video = Path(path).expanduser()
    if not video.is_file():
        raise KdbenchError(f"video {path!r} does not exist" if not video.exists() else f"video {path!r} is a folder")
    if video.stat().st_size == 0:
        raise KdbenchError(f"video {path!r} is empty (0 bytes)")
    try:
        info = media.probe(video)
    except Exception as error:  # noqa: BLE001 - any reader failure is the file's fault: one line
        raise KdbenchError(f"video {path!r} is not a readable video ({first_line(error)})") from None
    return video, info


#: years a clock may name; cameras without a set clock write 1970 or 1904, and EDF dates stop at 2084
PLAUSIBLE_YEARS = range(1985, 2085)


def _video_clock(video: Path) -> dt.datetime | None:
    """The container's ``creation_time`` (UTC by the MP4/MKV conventions) in this machine's local time, when the
    camera wrote a plausible one; None for none or an unset clock."""
    import av

    try:
        with av.open(str(video), metadata_errors="ignore") as container:
            stamp = container.metadata.get("creation_time") or container.streams.video[0].metadata.get("creation_time")
        if not stamp:
            return None
        when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        when = (when.astimezone() if when.tzinfo else when).replace(tzinfo=None)
        return when if when.year in PLAUSIBLE_YEARS else None
    except Exception:  # noqa: BLE001 - a clock is a nicety: without one the plot shows hours
        return None


def _psg(path: str):
    """(codes from PSG time 0, the PSG's clock start or None) of a hypnogram in a format ``s3ve`` reads."""
    from ..datasets.sleep.hypnogram import ALLOWED_TEXT, read_hypnogram

    file = Path(path).expanduser()
    if not file.is_file():
        raise KdbenchError(f"--psg-hypnogram {path!r} does not exist")
    hyp = read_hypnogram(file)
    if hyp.error:
        raise KdbenchError(f"--psg-hypnogram {path!r}: {hyp.error}")
    if hyp.foreign:
        _, where, text = hyp.foreign[0]
        raise KdbenchError(f"--psg-hypnogram {path!r}: {len(hyp.foreign)} epoch(s) with labels that are not stages "
                           f"(e.g. {where}: {text!r}; accepted: {ALLOWED_TEXT})")
    if not len(hyp.codes):
        raise KdbenchError(f"--psg-hypnogram {path!r} holds no epochs")
    clock = _edf_clock(file) if file.suffix.lower() == ".edf" else None
    return hyp.codes, clock if clock and clock.year in PLAUSIBLE_YEARS else None, file


def _edf_clock(file: Path) -> dt.datetime | None:
    """An EDF+ hypnogram's start date and time (the PSG's clock), unless anonymised or unreadable."""
    import edfio

    try:
        edf = edfio.read_edf(file)
        return dt.datetime.combine(edf.startdate, edf.starttime)
    except Exception:  # noqa: BLE001 - an anonymised date: the plot then shows hours
        return None


def plan(run_id, checkpoint, video_arg, start, epoch, video_offset, psg_arg, out_arg, device_name, overwrite,
         tracking_uri) -> Plan:
    from kdbench.config import DEVICE
    from kdbench.engine.checkpoint import check_writable
    from kdbench.engine.loop import resolve_device
    from kdbench.plugins import plugins

    from . import outputs, student
    from .timeline import Timeline

    if bool(run_id) == bool(checkpoint):
        raise KdbenchError("pass the student as --run RUN_ID (a finished `kdbench run`) or --checkpoint PATH "
                           "(its student.pt or checkpoint.pt), one of the two")
    notes: list[str] = []
    video, info = _video(video_arg)
    psg = psg_clock = psg_path = None
    if psg_arg:
        if not math.isclose(epoch, 30.0):
            raise KdbenchError(f"--psg-hypnogram is scored in 30-s epochs; drop --epoch-seconds {epoch:g} to compare")
        psg, psg_clock, psg_path = _psg(psg_arg)
    out = _out_folder(out_arg, video, psg_path, overwrite)
    if abs(video_offset or 0.0) > MAX_OFFSET:
        raise KdbenchError(f"--video-offset {video_offset:g} s is more than {MAX_OFFSET / 3600:g} h: it is the PSG "
                           f"time, in seconds, of the video's first frame")
    if not DEVICE.match(device_name):
        raise KdbenchError(f"--device {device_name!r}: use auto, cpu, cuda, cuda:N or mps")
    device = resolve_device(device_name)
    payload, origin = student.fetch_run(run_id, tracking_uri) if run_id else student.read_checkpoint(checkpoint)
    trained = student.rebuild(payload, origin, plugins(), device)

    if video_offset is None:
        recorded = getattr(trained.dataset, "recorded_offset", lambda _: None)(video)
        if recorded is not None:
            video_offset = recorded
            notes.append(f"video offset {recorded:+.2f} s (the PSG time of the video's first frame), from "
                         f"{video.parent.parent / 'subjects.csv'}")
        else:
            video_offset = 0.0
            if psg_arg:
                notes.append("no --video-offset: the video and the PSG are taken to start together")
    clock = psg_clock or ((c - dt.timedelta(seconds=video_offset)) if (c := _video_clock(video)) else None)
    timeline = Timeline(start, video_offset, epoch, clock) if start is not None else \
        Timeline.aligned(video_offset, epoch, clock)
    duration = info.frames / info.fps if info.frames else info.duration
    if timeline.start < 0:
        raise KdbenchError(f"--start {start:g}: must be 0 or more (seconds into the video)")
    expected = int(math.floor((duration - timeline.start) / epoch + 1e-6)) if duration else 0
    if duration and expected < 1:
        raise KdbenchError(f"video {video_arg!r} holds {duration:.1f} s, less than one {epoch:g}-s epoch after its "
                           f"first epoch's start at {timeline.start:.2f} s: nothing to stage")
    if not math.isclose(epoch, 30.0):
        notes.append(f"the student was trained on 30-s clips; with {epoch:g}-s epochs its frames are sampled over "
                     f"{epoch:g} s, and no {outputs.HYPNOGRAM_CSV} is written (the s3ve dataset reads 30-s epochs)")
    if psg is not None:
        first = timeline.first_psg_epoch
        if first is None:
            where = "before the PSG's start" if timeline.psg_time(0) < 0 else "off the PSG hypnogram's 30-s grid"
            raise KdbenchError(f"--start {timeline.start:g} puts the first epoch at PSG time "
                               f"{timeline.psg_time(0):.2f} s, {where}: leave --start out (the first epoch then "
                               f"starts on the grid, at or after the PSG's start) or move it by whole epochs")
        if first >= len(psg) or not (psg[first:first + max(expected, 1)] >= 0).any():
            raise KdbenchError(f"--psg-hypnogram {psg_arg!r} scores no epoch the video covers (it scores PSG epochs "
                               f"0-{len(psg) - 1}, the video starts at PSG epoch {first}): check --video-offset")
    created = not out.exists()
    check_writable(out, 16 << 20, "output folder", "pass another --out")
    return Plan(video, out, created, trained, timeline, expected, duration, psg, psg_path, device, notes)


def _out_folder(out_arg: str | None, video: Path, psg: Path | None, overwrite: bool) -> Path:
    """The output folder, refused when writing there could destroy anything but an earlier prediction."""
    from . import outputs

    name = video.stem if video.stem != "video" else video.parent.name   # S004/video.avi -> hypnogram-S004
    out = Path(out_arg).expanduser() if out_arg else Path(f"hypnogram-{name}")
    if out.exists() and not out.is_dir():
        raise KdbenchError(f"--out {str(out)!r} is a file, not a folder")
    inputs = {path.resolve(): option for path, option in ((video, "--video"), (psg, "--psg-hypnogram")) if path}
    for file in outputs.ALL:
        if (option := inputs.get((out / file).resolve())) is not None:
            raise KdbenchError(f"--out {str(out)!r}: the prediction's {file} would replace the {option} file itself; "
                               f"choose another --out")
    taken = [file for file in outputs.ALL if (out / file).exists()]
    if taken and not (out / outputs.STATS_JSON).is_file():
        raise KdbenchError(f"--out {str(out)!r} holds {', '.join(taken)}, which no prediction wrote (there is no "
                           f"{outputs.STATS_JSON} beside it): choose another --out")
    if taken and not overwrite:
        raise KdbenchError(f"--out {str(out)!r} holds an earlier prediction ({', '.join(taken)}): pass --overwrite "
                           f"to replace it, or another --out")
    return out


@click.command("predict")
@click.option("--run", "run_id", metavar="RUN_ID", help="a finished student run (`kdbench runs --tag role=student`)")
@click.option("--checkpoint", metavar="PATH", help="or its student.pt (run artifact) or training checkpoint.pt")
@click.option("--video", "video_arg", required=True, metavar="PATH",
              help="the night's infrared video (.avi, .mp4, ...)")
@click.option("--start", type=Finite(), metavar="S",
              help="video second where the first epoch starts (default: the first start on the PSG's 30-s grid, "
                   "i.e. 0 when the video and the PSG start together)")
@click.option("--epoch-seconds", "epoch", type=Finite(1.0), default=30.0, show_default=True,
              help="seconds per epoch (the student was trained on 30-s clips)")
@click.option("--video-offset", type=Finite(), metavar="O",
              help="PSG time (s) of the video's first frame, as subjects.csv's video_offset (default: that file's "
                   "value when the video is in an s3ve night folder, else 0)")
@click.option("--psg-hypnogram", "psg_arg", metavar="FILE",
              help="the night's scored hypnogram (EDF+ or epoch,stage CSV): adds agreement and a second hypnogram")
@click.option("--out", "out_arg", metavar="DIR", help="output folder (default ./hypnogram-<video name>)")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="clips per forward pass")
@click.option("--device", "device_name", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N | mps")
@click.option("--overwrite", is_flag=True, help="replace the files of an earlier prediction in --out")
@click.option("--progress/--no-progress", default=True, help="show a progress bar in epochs")
@tracking_uri_option
def predict_cmd(run_id, checkpoint, video_arg, start, epoch, video_offset, psg_arg, out_arg, batch_size, device_name,
                overwrite, progress, tracking_uri) -> None:
    """Stage a night of infrared video with a distilled student: per-epoch stages and probabilities (CSV),
    the hypnogram as EDF+ annotations and as the CSV the s3ve dataset reads, AASM sleep statistics, a
    plot, and with --psg-hypnogram the agreement with the scored night. docs/predict.md."""
    from .report import predict_and_write

    p = plan(run_id, checkpoint, video_arg, start, epoch, video_offset, psg_arg, out_arg, device_name, overwrite,
             tracking_uri)
    predict_and_write(p, batch_size=batch_size, progress=progress)
