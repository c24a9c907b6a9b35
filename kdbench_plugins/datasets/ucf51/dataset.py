"""The ``ucf51`` dataset: UCF101's 51 classes with audio; RGB clips for the student, audio for the teacher.

The teacher's input is the clip's stored PANNs Cnn14 embedding (the CCL release, what the literature
distils from) or, with ``teacher_input = "audio"``, the clip's own audio track as a 32 kHz waveform for
a model teacher such as ``cnn14-emb512``. See docs/datasets/ucf51.md for every choice.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from kdbench.contracts import FIELDS, DatasetInfo, FileDataset
from kdbench.data import ClipSplit, DataReport, files_fingerprint, resolve_root
from kdbench.data.clips import split_key
from kdbench.options import PluginOptions, path_field

from ...shared import media
from . import index as indexing
from .index import EMBEDDING, VIDEO
from .layout import EMBED_DIM, read_class_index
from .synth import SynthOptions, write_dataset

#: bump when decoding or checking changes, so prepared clips and stored checks keyed on the fingerprint are
#: redone (2: a check for the teacher alone no longer asks for the videos).
LOADER_VERSION = 2
AUDIO_SCALE = 32768.0  # the waveform is stored as int16: half the cache of float32, 16-bit like the source


class UCF51Options(PluginOptions):
    root: str | None = path_field(None, what="folder", description="folder holding UCF-101/ (and optionally ucfTrainTestlist/ and the "
                                               "embeddings); default $KDBENCH_DATA/ucf51")
    embeddings: str | None = path_field(None, what="folder", description="the Cnn14 embeddings: a folder of <Class>/v_*.npy or the "
                                                     "release's .tar.gz; default <root>/audiocnn14embed512_features"
                                                     "[.tar.gz]. Its class folders define the class list")
    split: Literal[1, 2, 3] = Field(1, description="UCF101 train/test split (the literature reports split 1)")
    frames: int = Field(16, ge=1, le=256, description="frames per clip, evenly spaced over the video (R3D-18: 16)")
    height: int = Field(112, ge=8, le=1024, description="frame height after resizing (R3D-18: 112)")
    width: int = Field(112, ge=8, le=1024, description="frame width after resizing (R3D-18: 112)")
    teacher_input: Literal["embedding", "audio"] = Field(
        "embedding", description="'embedding': the stored 512-d Cnn14 embedding (teacher 'precomputed'); 'audio': "
                                 "the clip's audio track, 32 kHz mono (teacher 'cnn14' / 'cnn14-emb512')")
    audio_seconds: float = Field(10.0, ge=0.5, le=60.0, description="length of the waveform for teacher_input="
                                 "'audio': cropped from the start or zero-padded at the end (PANNs' 10-s clips)")


def fit(wave: np.ndarray, length: int) -> np.ndarray:
    """The first ``length`` samples of ``wave``, zero-padded at the end when it is shorter."""
    out = np.zeros(length, np.float32)
    n = min(length, len(wave))
    out[:n] = wave[:n]
    return out


class UCF51Split(ClipSplit):
    """One split: frames decoded from each AVI, and the stored embedding or the decoded audio track."""

    def __init__(self, dataset: UCF51, keys: list[str], key: str) -> None:
        labels = [dataset.class_names.index(k.split("/", 1)[0]) for k in keys]
        super().__init__(keys, np.asarray(labels, np.int64), key)
        self.options = dataset.options
        self.videos = [dataset.index.video_path(k) for k in keys]
        self.embeddings = dataset.index.embeddings

    def source(self, i: int) -> str:
        """The files the wanted fields read (a teacher on stored embeddings reads no video)."""
        files, teacher = [], "teacher" in self.wanted
        if "student" in self.wanted or teacher and self.options.teacher_input == "audio":
            files.append(str(self.videos[i]))
        if teacher and self.options.teacher_input == "embedding":
            files.append(self.embeddings.where.get(self.keys[i], "no embedding") if self.embeddings else "no embedding")
        return " + ".join(files)

    def decode(self, i: int, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
        o, path, out = self.options, self.videos[i], {}
        if "student" in fields:
            start, end = media.video_span(path)
            frames = media.read_frames(path, start, end - start, o.frames, o.height, o.width, color=True)
            out["student"] = np.ascontiguousarray(frames.transpose(3, 0, 1, 2))      # (3, T, H, W) uint8
        if "teacher" in fields:
            if o.teacher_input == "embedding":
                if self.embeddings is None or self.keys[i] not in self.embeddings.where:
                    raise FileNotFoundError("no embedding for this clip")
                out["teacher"] = self.embeddings.load(self.keys[i])
            else:
                wave = fit(media.read_audio(path, media.AUDIO_RATE), audio_length(o))
                out["teacher"] = np.round(np.clip(wave, -1.0, 1.0 - 1.0 / AUDIO_SCALE) * AUDIO_SCALE).astype(np.int16)
        return out

    def to_tensor(self, name, array):
        if array.dtype == np.int16:
            return super().to_tensor(name, array.astype(np.float32) / AUDIO_SCALE)
        return super().to_tensor(name, array)


def audio_length(options: UCF51Options) -> int:
    return int(round(options.audio_seconds * media.AUDIO_RATE))


class UCF51(FileDataset):
    """UCF101's 51 audio classes: RGB clips (student) and Cnn14 audio embeddings or 32 kHz audio (teacher)."""

    name = "ucf51"
    Options = UCF51Options
    default_teacher = "precomputed"
    default_student = "r3d18"
    modalities = ("audio", "video")
    splits = ("train", "test")
    #: CCL's released UCF51 recipe (yanbeic/CCL scripts/run_ccl_audio.sh + opts.py): SGD lr 1e-3, momentum
    #: 0.9, weight decay 5e-4, batch 16, 300 epochs, lr x0.1 at epochs 150 and 225. The teacher recipe is
    #: ours (CCL trains no classifier on the embeddings): a linear probe, Adam 1e-3, 50 epochs, batch 128.
    run_defaults = {
        "epochs": 300,
        "batch_size": 16,
        "optimizer": {"name": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "step", "milestones": [150, 225], "gamma": 0.1},
        "teacher_training": {"epochs": 50, "batch_size": 128,
                             "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0}},
    }

    SynthOptions = SynthOptions

    @classmethod
    def synthesize(cls, root, options: SynthOptions, seed: int, echo) -> None:
        write_dataset(root, options, seed, echo)

    def __init__(self, options: UCF51Options, seed: int) -> None:
        super().__init__(options, seed)
        self.root = resolve_root(options.root, self.name)
        self.index = indexing.build(self.root, options.embeddings, options.split, options.teacher_input)
        self.class_names = self.index.class_names
        teacher = (EMBED_DIM,) if options.teacher_input == "embedding" else (audio_length(options),)
        self.info = DatasetInfo(self.class_names, teacher, (3, options.frames, options.height, options.width))
        self._skipped: frozenset[str] = frozenset()
        self._splits: dict[str, UCF51Split] = {}
        self._fingerprint: str | None = None

    def reads(self, fields: tuple[str, ...]) -> frozenset[str]:
        """The kinds of file ``fields`` read: the student its video; the teacher its embedding, or with
        teacher_input='audio' the video's audio track."""
        kinds = {VIDEO} if "student" in fields else set()
        if "teacher" in fields:
            kinds.add(EMBEDDING if self.options.teacher_input == "embedding" else VIDEO)
        return frozenset(kinds)

    # ----------------------------------------------------------------- splits

    def split(self, name: str, fields: tuple[str, ...] = FIELDS) -> UCF51Split:
        """The clips assigned to split ``name``, whatever ``fields`` read: a teacher-only view has the same items
        as the full split (the engine looks stored teacher outputs up by position), and decodes no video when
        the teacher reads stored embeddings, so it works on a copy without videos (``check(("teacher",))``
        does not ask for them)."""
        if name not in self.splits:
            raise KeyError(f"dataset {self.name!r} has no split {name!r}; it has {', '.join(self.splits)}")
        if name not in self._splits:
            keys = self.index.members(name, self._skipped)
            self._splits[name] = UCF51Split(self, keys, split_key(self.name, self.fingerprint(), name))
        return self._splits[name].only(*fields)

    def skip(self, keys: frozenset[str]) -> None:
        self._skipped = self._skipped | frozenset(keys)
        self._splits.clear()
        self._fingerprint = None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            o, ix = self.options, self.index
            files = [ix.video_path(k) for k in ix.assign] + ix.list_files
            files += ix.embeddings.files() if ix.embeddings is not None else []
            params = {"loader": LOADER_VERSION, "split": o.split, "frames": o.frames, "height": o.height,
                      "width": o.width, "teacher_input": o.teacher_input, "classes": list(self.class_names),
                      "embeddings": str(ix.embeddings.path) if ix.embeddings is not None else None,
                      "skipped": sorted(self._skipped)}
            if o.teacher_input == "audio":
                params["audio_seconds"] = o.audio_seconds
            self._fingerprint = files_fingerprint(self.root, files, params)
        return self._fingerprint

    # ----------------------------------------------------------------- check

    def check(self, fields: tuple[str, ...] = FIELDS, progress: bool = False) -> DataReport:
        from .checks import deep_problems

        ix = self.index
        # problems whose items were all left out by skip() are settled; dataset-level ones never are
        problems = [p for p in ix.problems_for(self.reads(fields)) if not p.items or set(p.items) - self._skipped]
        bad = {k for p in problems for k in p.items}
        problems += deep_problems(self, [k for k in sorted(ix.assign) if k not in self._skipped], bad, fields,
                                  progress)
        bad = {k for p in problems for k in p.items} | set(self._skipped)
        found = {s: [k for k in ix.members(s, self._skipped)] for s in self.splits}
        usable = {s: [k for k in keys if k not in bad] for s, keys in found.items()}
        notes = list(ix.notes)
        shown = usable
        if not any(usable.values()) and any(found.values()):
            shown = found
            notes.append("no clip is usable (see the problems): the table counts the clips found per split (from "
                         "embeddings, videos and split lists), not usable ones")
        counts = {s: {c: 0 for c in self.class_names} for s in self.splits}
        for s, keys in shown.items():
            for k in keys:
                counts[s][k.split("/", 1)[0]] += 1
        notes.insert(0, self._class_note())
        notes.append(self._teacher_note())
        if tuple(f for f in FIELDS if f in fields) != FIELDS:
            notes.append(self._fields_note(fields))
        return DataReport(self.name, str(self.root), self.class_names, counts, problems, dict(ix.dropped), notes,
                          counts_are="usable" if shown is usable else "found")

    def _class_note(self) -> str:
        ix = self.index
        source = f"the class folders of {ix.embeddings.display}" if ix.embeddings and ix.embeddings.where else \
            "the built-in UCF51 list"
        note = f"{len(self.class_names)} classes: {source}, sorted; labels 0..{len(self.class_names) - 1} in that order"
        official = read_class_index(self.root)
        listed = [c for c in self.class_names if c in (official or {})]
        if listed:
            first = listed[0]
            note += (f"; classInd.txt numbers classes from 1 over its own list ({first} is {official[first]} "
                     f"there, {self.class_names.index(first)} here)")
            swapped = [(a, b) for a, b in zip(listed, listed[1:]) if official[a] > official[b]]
            if swapped:
                note += f" and orders them differently ({swapped[0][1]} before {swapped[0][0]} there)"
        return note

    def _fields_note(self, fields: tuple[str, ...]) -> str:
        if "student" in fields:
            return "checked for the student's input alone: the teacher's input was not checked"
        if self.options.teacher_input == "embedding":
            return "checked for the teacher's input alone (the embeddings): videos are neither needed nor checked"
        return "checked for the teacher's input alone (the videos' audio tracks): their frames were not decoded"

    def _teacher_note(self) -> str:
        o = self.options
        if o.teacher_input == "embedding":
            return f"teacher input: the stored embedding, float32 ({EMBED_DIM},); videos need no audio track"
        return (f"teacher input: the audio track, mono {media.AUDIO_RATE} Hz, {o.audio_seconds:g} s "
                f"({audio_length(o)} samples; cropped from the start or zero-padded)")


__all__ = ["UCF51", "UCF51Options", "UCF51Split"]
