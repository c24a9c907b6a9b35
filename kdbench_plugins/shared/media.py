"""Reading and writing the audio-visual files of the built-in datasets, through PyAV (FFmpeg).

Shared by the sleep-lab (``s3ve``) and ``ucf51`` plugins and their generators, so both read video the
same way: frames are converted to grayscale and resized by FFmpeg's scaler as they are decoded, and a clip
of ``count`` frames over a time window takes, for each of ``count`` evenly spaced instants, the last frame
shown at that instant (what a viewer would see), so the sampling does not depend on the frame rate.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

#: the audio rate PANNs Cnn14 was trained at.
AUDIO_RATE = 32_000


@dataclass(frozen=True)
class VideoProbe:
    """What a container's header says, read without decoding."""

    duration: float           # seconds of video
    fps: float
    frames: int | None        # frame count stated by the header, if any
    width: int
    height: int
    audio_rate: int | None    # None: no audio track


def _open(path: Path):
    import av

    return av.open(str(path), mode="r", metadata_errors="ignore")


def probe(path: str | Path) -> VideoProbe:
    """The header facts of a video file; raises ``av.error.FFmpegError``/``OSError`` if it cannot be opened."""
    with _open(Path(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif stream.frames:
            duration = stream.frames / fps
        else:
            duration = float(container.duration or 0) / 1e6
        audio = container.streams.audio[0].rate if container.streams.audio else None
        return VideoProbe(duration, fps, int(stream.frames) or None, stream.codec_context.width,
                          stream.codec_context.height, audio)


def count_decodable(path: str | Path) -> int:
    """Decode every video frame (the only sure test of a damaged file); returns how many decoded.

    Stops at the first error, so a truncated file reports the frames before the damage.
    """
    import av

    n = 0
    try:
        with _open(Path(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                n += 1
    except av.error.FFmpegError:
        pass
    return n


def count_packets(path: str | Path) -> int:
    """Demux (without decoding) the video stream and count its packets: cheap enough for a night of video,
    and a truncated file shows as fewer packets than its header promises. Stops at the first demux error."""
    import av

    n = 0
    try:
        with _open(Path(path)) as container:
            for packet in container.demux(container.streams.video[0]):
                if packet.size:
                    n += 1
    except av.error.FFmpegError:
        pass
    return n


def clip_instants(start: float, duration: float, count: int) -> np.ndarray:
    """The ``count`` instants a clip of [start, start + duration) samples: the middles of ``count`` equal parts."""
    return start + (np.arange(count) + 0.5) * (duration / count)


def _shown(decoded: Iterator[tuple[float, object]], targets: Iterable[float], convert,
           rate: float) -> Iterator[tuple[np.ndarray, float]]:
    """For each target instant (increasing), the image shown at that instant -- the last decoded frame whose time
    is not after it -- and how long it had been shown by then (s). ``decoded`` yields (time, frame); ``convert``
    turns a frame into an array, once per frame that is shown (a night's video is mostly frames nobody samples).
    Stops when the frames run out; the last frame is shown until ``1 / rate`` after its time. Raises
    ``ValueError`` for a target before the first frame.
    """
    targets = iter(targets)
    target = next(targets, None)
    last = image = None
    shown = t = 0.0
    for t, frame in decoded:
        while target is not None and t > target:   # this frame comes after the target: the previous one was shown
            if last is None:
                raise ValueError(f"no frame before {target:.2f} s")
            if image is None:
                image = convert(last)
            yield image, target - shown
            target = next(targets, None)
        if target is None:
            return
        last, image, shown = frame, None, t
    while target is not None and last is not None and target < t + 1.0 / rate:
        if image is None:
            image = convert(last)
        yield image, target - shown
        target = next(targets, None)


@dataclass
class Damage:
    """What a tolerant pass over a video met (:func:`stream_clips` fills it when given one)."""

    skipped: list[float] = field(default_factory=list)   # video times (s) of packets that failed to decode
    #: (clip index, seconds) of clips one of whose samples is a frame shown for longer than ``STALE`` (a gap)
    stale: list[tuple[int, float]] = field(default_factory=list)


#: a sampled frame shown for longer than this (s) means the video has a gap there
STALE = 2.0
#: a tolerant pass gives up after this many undecodable packets in a row (the rest of the file is garbage)
MAX_BAD_PACKETS = 250


def _tolerant(container, stream, damage: Damage) -> Iterator:
    """The stream's frames, decoded packet by packet, skipping (and recording) packets that fail to decode.
    Healthy packets give exactly the frames ``container.decode(stream)`` gives."""
    import av

    in_a_row = 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            damage.skipped.append(float(packet.pts * stream.time_base) if packet.pts is not None else float("nan"))
            in_a_row += 1
            if in_a_row > MAX_BAD_PACKETS:
                raise
            continue
        in_a_row = 0
        yield from frames


def _decoded(container, start: float, damage: Damage | None = None) -> tuple[Iterator[tuple[float, object]], float]:
    """(time, frame) of the first video stream's frames from about ``start`` on (seeking to the keyframe before
    ``start - 1`` s when that is past the first second), and the stream's frame rate. With ``damage``, packets
    that fail to decode are skipped and recorded instead of ending the pass."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    base = stream.time_base
    if start > 1.0:
        container.seek(int(max(start - 1.0, 0.0) / base), stream=stream, backward=True)
    source = container.decode(stream) if damage is None else _tolerant(container, stream, damage)
    frames = ((float(f.pts * base) if f.pts is not None else float(f.time or 0.0), f) for f in source)
    return frames, float(stream.average_rate or 25)


def _converter(height: int, width: int, color: bool):
    pixels = "rgb24" if color else "gray"
    return lambda frame: frame.reformat(width=width, height=height, format=pixels).to_ndarray()


def read_frames(path: str | Path, start: float, duration: float, count: int, height: int, width: int,
                color: bool = False) -> np.ndarray:
    """``count`` frames sampled evenly over [start, start + duration): uint8, (count, height, width) in
    grayscale, or (count, height, width, 3) RGB when ``color``.

    Times are the video's own (seconds from its first frame). Raises ``ValueError`` when the window is not
    covered by the file's frames.
    """
    targets = clip_instants(start, duration, count)
    out = np.empty((count, height, width, 3) if color else (count, height, width), dtype=np.uint8)
    k = 0
    with _open(Path(path)) as container:
        decoded, rate = _decoded(container, start)
        for k, (image, _) in enumerate(_shown(decoded, targets, _converter(height, width, color), rate), start=1):
            out[k - 1] = image
    if k < count:
        raise ValueError(f"video ends before {targets[k]:.2f} s (window {start:.2f}-{start + duration:.2f} s)")
    return out


def stream_clips(path: str | Path, start: float, duration: float, count: int, height: int, width: int,
                 color: bool = False, damage: Damage | None = None) -> Iterator[np.ndarray]:
    """Consecutive clips [start + j * duration, start + (j + 1) * duration), j = 0, 1, ..., each sampled as
    :func:`read_frames` samples one window (the same instants, the same shown-frame rule, the same scaler), in
    one pass of decoding: memory holds one clip whatever the video's length. Ends with the last clip the file
    covers whole. Without ``damage`` a decoding error raises ``av.error.FFmpegError`` after the clips before it
    were yielded; with it, undecodable packets are skipped and recorded, and so are clips that sample a frame
    shown for longer than :data:`STALE` (a gap in the video).
    """
    targets = (t for j in itertools.count() for t in clip_instants(start + j * duration, duration, count))
    clip = np.empty((count, height, width, 3) if color else (count, height, width), dtype=np.uint8)
    oldest = 0.0
    with _open(Path(path)) as container:
        decoded, rate = _decoded(container, start, damage)
        for k, (image, age) in enumerate(_shown(decoded, targets, _converter(height, width, color), rate)):
            clip[k % count] = image
            oldest = max(oldest, age)
            if k % count == count - 1:
                if damage is not None and oldest > STALE:
                    damage.stale.append((k // count, oldest))
                oldest = 0.0
                yield clip.copy()


def _end(stream, last_time: float) -> float:
    """The time up to which the last decoded frame is shown."""
    rate = float(stream.average_rate or 25)
    return last_time + 1.0 / rate


def read_audio(path: str | Path, rate: int = AUDIO_RATE) -> np.ndarray:
    """The file's first audio track as a mono float32 waveform at ``rate`` Hz; ``ValueError`` if it has none."""
    import av

    chunks = []
    with _open(Path(path)) as container:
        if not container.streams.audio:
            raise ValueError("no audio track")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in container.decode(container.streams.audio[0]):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def write_avi(path: str | Path, frames: Iterable[np.ndarray], fps: float, audio: np.ndarray | None = None,
              audio_rate: int = 44_100, bitrate: int = 400_000) -> None:
    """Write frames (uint8, grayscale (H, W) or RGB (H, W, 3) each, even H and W) as an Xvid (MPEG-4 Part 2) AVI.

    ``frames`` may be an array (T, H, W[, 3]) or any iterable, so a night of video can be streamed to the
    encoder instead of held in memory. ``audio`` (mono float32 in [-1, 1]) becomes an MP3 track, as in
    UCF101's files.
    """
    import av

    frames = iter(frames)
    first = next(frames)

    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    # The MP3 encoder's first packet starts before 0 (its delay); letting the muxer shift timestamps to
    # non-negative ones moves the video by a frame and leaves an empty chunk (a dropped frame) in the AVI.
    options = {"avoid_negative_ts": "disabled"}
    with av.open(str(path), mode="w", format="avi", options=options) as container:
        video = container.add_stream("mpeg4", rate=rate)
        video.codec_context.codec_tag = "XVID"
        video.width, video.height = int(first.shape[1]), int(first.shape[0])
        video.pix_fmt = "yuv420p"
        video.bit_rate = bitrate
        sound = None
        if audio is not None:
            sound = container.add_stream("libmp3lame", rate=audio_rate, layout="mono")
        for image in itertools.chain([first], frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24" if image.ndim == 3 else "gray")
            container.mux(video.encode(frame.reformat(format="yuv420p")))
        container.mux(video.encode(None))
        if sound is not None:
            samples = np.clip(np.asarray(audio, np.float32), -1.0, 1.0)
            step = sound.codec_context.frame_size or 1152
            for offset in range(0, len(samples), step):
                chunk = samples[offset:offset + step][None, :]
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
                frame.sample_rate = audio_rate
                frame.pts = offset
                container.mux(sound.encode(frame))
            container.mux(sound.encode(None))


def video_span(path: str | Path) -> tuple[float, float]:
    """(start, end) in seconds of a file's video frames, from its packets (no decoding): the first frame's
    time and the time the last one stops being shown. Unlike the header's duration, it cannot promise
    frames a damaged or oddly muxed file does not have. ``ValueError`` when there is no video packet."""
    first = last = None
    with _open(Path(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size and packet.pts is not None:
                t = float(packet.pts * stream.time_base)
                first = t if first is None else min(first, t)
                last = t if last is None else max(last, t)
        if first is None:
            raise ValueError("no video frames")
        return first, _end(stream, last)


def transcode_to_avi(source: str | Path, target: str | Path, width: int, height: int, seconds: float | None = None,
                     audio_rate: int = 44_100, bitrate: int = 800_000) -> int:
    """Re-encode any video file FFmpeg reads (e.g. H.264 + AAC MP4) as a UCF101-style Xvid + MP3 AVI.

    Frames are scaled to ``width`` x ``height`` as they are decoded, the first audio track is mixed down to
    mono at ``audio_rate``; ``seconds`` keeps only the beginning. Returns the number of frames written.
    """
    frames = []
    with _open(Path(source)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        for frame in container.decode(stream):
            if seconds is not None and frame.time is not None and frame.time >= seconds:
                break
            frames.append(frame.reformat(width=width, height=height, format="rgb24").to_ndarray())
    if not frames:
        raise ValueError(f"{source}: no video frames")
    audio = None
    try:
        audio = read_audio(source, audio_rate)
    except ValueError:  # no audio track: the AVI gets none either
        pass
    if audio is not None and seconds is not None:
        audio = audio[:int(round(seconds * audio_rate))]
    write_avi(target, np.stack(frames), fps, audio, audio_rate=audio_rate, bitrate=bitrate)
    return len(frames)
