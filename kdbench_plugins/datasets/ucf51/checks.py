"""What only opening the files can show: damaged AVIs, missing audio tracks, corrupt embeddings.

Per video the student reads: the header (probe), the packets the header promises (a cut-off file has
fewer), and the first frame decoded. Decoding every frame would find damage in the middle too, but costs as
much as ``kdbench data prepare``, which names such a file in one line if it meets one. Audio is decoded in
full only when the teacher reads it; embeddings are loaded (and must be finite) only when the teacher reads
them. A check for the teacher alone opens no video unless the teacher reads its audio track.
"""

from __future__ import annotations

from collections import defaultdict

from kdbench.data import Problem
from kdbench.errors import first_line

from ...shared import media
from .index import aggregate
from .layout import VIDEOS

#: (folder for many, description for many) of each kind of problem found here.
KINDS = {
    "unreadable": (f"{VIDEOS}/", "videos cannot be opened"),
    "truncated": (f"{VIDEOS}/", "videos are truncated (fewer frames than their header states)"),
    "undecodable": (f"{VIDEOS}/", "videos do not decode"),
    "no_audio": (f"{VIDEOS}/", "videos have no audio track, which teacher_input='audio' needs"),
    "bad_audio": (f"{VIDEOS}/", "audio tracks do not decode"),
    "bad_embedding": ("", "embeddings are not readable float32 (512,) arrays"),
}




def _video(path, frames: bool, audio: bool) -> tuple[str, str] | None:
    """(kind, detail) of what is wrong with one AVI's ``frames`` (the student's) and ``audio`` (an audio
    teacher's), or None."""
    try:
        header = media.probe(path)
    except Exception as error:  # FFmpeg/OS errors, no video stream: the file is unusable either way
        return "unreadable", f"cannot be opened: {first_line(error)}"
    if frames:
        packets = media.count_packets(path)
        if header.frames is not None and packets < header.frames - 1:
            return "truncated", f"truncated: {packets} of the {header.frames} frames its header states"
        try:
            start, _ = media.video_span(path)
            media.read_frames(path, start, 1.0 / header.fps, 1, 16, 16)
        except Exception as error:
            return "undecodable", f"does not decode: {first_line(error)}"
    if audio:
        if header.audio_rate is None:
            return "no_audio", "has no audio track (teacher_input='audio' needs one)"
        try:
            if len(media.read_audio(path)) == 0:
                return "bad_audio", "its audio track holds no samples"
        except Exception as error:
            return "bad_audio", f"its audio track does not decode: {first_line(error)}"
    return None


def deep_problems(dataset, keys: list[str], bad: set[str], fields: tuple[str, ...], progress: bool) -> list[Problem]:
    """Open every video of ``keys`` not already ``bad`` when ``fields`` read it (the student its frames, an
    audio teacher its audio track), and every embedding when the teacher reads them (even of a clip whose video
    is missing: an embeddings-only copy is checked too); one Problem per kind."""
    from tqdm import tqdm

    ix, o = dataset.index, dataset.options
    teacher = "teacher" in fields
    frames, audio = "student" in fields, teacher and o.teacher_input == "audio"
    store = ix.embeddings if teacher and o.teacher_input == "embedding" else None
    found: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for key in tqdm(keys, desc="checking ucf51", unit="clip", disable=not progress, leave=False):
        if (frames or audio) and key in ix.videos and key not in bad:
            wrong = _video(ix.videos[key], frames, audio)
            if wrong:
                found[wrong[0]].append((key, f"{VIDEOS}/{key}.avi", wrong[1]))
        if store is not None and key in store.where and key not in store.faults:
            try:
                store.load(key)
            except Exception as error:
                found["bad_embedding"].append((key, store.where[key], first_line(error)))
    problems = []
    for kind, entries in found.items():
        folder, what = KINDS[kind]
        problems.append(aggregate(entries, folder or store.display, f"{len(entries)} {what}"))
    return problems
