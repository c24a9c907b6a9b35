"""``kdbench data synth ucf51``: a small UCF51 in the real formats, with class-dependent signal everywhere.

Written: ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` (Xvid video + MP3 audio, as UCF101's files),
``ucfTrainTestlist/`` (classInd.txt over the 51 classes and the three train/test lists, in the official
line formats with CRLF endings), and ``audiocnn14embed512_features/<Class>/v_*.npy`` (float32 (512,)).

The signal: each class has a colour, a direction of motion and a speed for a moving blob, and a faint
background texture; each clip jitters them and adds a random background and sensor noise. Neighbouring
classes have neighbouring colours and the colour jitter is about one class step, so the student must
read the motion too. Each class's audio is a pair of tones with its own pitch, interval and tremolo,
plus noise. Each embedding is the class's ReLU-sparse prototype plus noise, so the teacher sees the
class far more clearly than the student, as with the real audio embeddings.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import Field

from kdbench.options import PluginOptions

from ...shared import media
from .layout import (
    EMBED_DIM,
    EMBEDDINGS,
    GROUPS,
    LISTS,
    UCF51_CLASSES,
    VIDEOS,
    list_names,
    rule_split,
    stem_for,
)

#: bump when the generator's output changes.
GENERATOR_VERSION = 1


class SynthOptions(PluginOptions):
    clips_per_class: int = Field(4, ge=1, le=100, description="clips per class (4: every split tests every class)")
    height: int = Field(48, ge=16, le=480, multiple_of=2, description="frame height of the AVIs")
    width: int = Field(64, ge=16, le=640, multiple_of=2, description="frame width of the AVIs")
    seconds: float = Field(1.0, ge=0.5, le=20.0, description="length of each clip")
    fps: float = Field(10.0, ge=2.0, le=30.0, description="frame rate of the AVIs (UCF101: 25)")
    audio_rate: int = Field(22_050, ge=8_000, le=48_000, description="sampling rate of the MP3 track "
                                                                     "(UCF101 mostly 44.1 kHz; lower is faster)")


def group_and_block(c: int, j: int) -> int:
    """Group (1-25) of clip j of class c: the clips of a class rotate over the blocks g01-07, g08-14, g15-21
    (split 1, 2, 3's test groups) and g22-25 (always train), starting at a class-dependent block, so any
    two clips per class put test clips of some classes in every split."""
    block, turn = (c + j) % 4, j // 4
    if block < 3:
        return 7 * block + 1 + (c + turn) % 7
    return 22 + (c + turn) % (GROUPS - 21)


def _classes(rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = len(UCF51_CLASSES)
    c = np.arange(n)
    return {
        "hue": c / n,
        "angle": 2 * np.pi * ((c * 11) % n) / n + rng.uniform(-0.1, 0.1, n),
        "speed": 0.35 + 0.25 * (c % 3),                       # frame widths per second
        "texture": (c % 4) * np.pi / 4,                       # orientation of the background stripes
        "pitch": 200.0 * 2 ** (4 * c / n),                    # 200 Hz ... 3.2 kHz
        "interval": 1.25 + 0.25 * (c % 3),                    # second tone / first
        "tremolo": 2.0 + (c % 5),                             # Hz
        "prototype": rng.normal(-0.75, 1.0, (n, EMBED_DIM)),  # ReLU of prototype + noise: ~74% zeros
    }


def _video(rng, k: dict, c: int, frames: int, height: int, width: int, fps: float) -> np.ndarray:
    """(T, H, W, 3) uint8: a coloured blob moving in the class's direction over a textured background."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) / width
    hue = (k["hue"][c] + rng.normal(0, 0.02)) % 1.0
    colour = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0)), np.float32)
    angle = k["angle"][c] + rng.normal(0, 0.25)
    speed = k["speed"][c] * rng.uniform(0.8, 1.25)
    velocity = speed / fps * np.array([np.cos(angle), np.sin(angle)])
    start = np.array([0.5, 0.5 * height / width]) - velocity * frames / 2 + rng.normal(0, 0.08, 2)
    radius = rng.uniform(0.08, 0.14)
    base = rng.uniform(0.15, 0.6, 3).astype(np.float32)
    theta = k["texture"][c]
    stripes = 0.06 * np.sin(2 * np.pi * 6 * (xs * np.cos(theta) + ys * np.sin(theta)) + rng.uniform(0, 2 * np.pi))
    video = np.empty((frames, height, width, 3), np.float32)
    for t in range(frames):
        x, y = start + velocity * t
        blob = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * radius ** 2))[..., None]
        video[t] = base + stripes[..., None] + blob * (colour - base)
    video += rng.normal(0, 0.05, video.shape).astype(np.float32)
    return (np.clip(video, 0, 1) * 255).astype(np.uint8)


def _audio(rng, k: dict, c: int, seconds: float, rate: int) -> np.ndarray:
    """Mono float32: two tones at the class's pitch and interval with its tremolo, plus noise."""
    t = np.arange(int(round(seconds * rate))) / rate
    f1 = k["pitch"][c] * rng.uniform(0.98, 1.02)
    f2 = f1 * k["interval"][c]
    tremolo = 0.6 + 0.4 * np.sin(2 * np.pi * k["tremolo"][c] * t + rng.uniform(0, 2 * np.pi))
    tone = np.sin(2 * np.pi * f1 * t) + rng.uniform(0.3, 0.8) * np.sin(2 * np.pi * f2 * t + rng.uniform(0, 6.3))
    wave = rng.uniform(0.1, 0.3) * tremolo * tone + rng.uniform(0.01, 0.08) * rng.standard_normal(len(t))
    return np.clip(wave, -1, 1).astype(np.float32)


def _embedding(rng, k: dict, c: int) -> np.ndarray:
    return np.maximum(k["prototype"][c] + 0.6 * rng.standard_normal(EMBED_DIM), 0.0).astype(np.float32) * 0.8


def write_dataset(root: Path, options: SynthOptions, seed: int, echo: Callable[[str], None]) -> None:
    """Write the generated dataset into ``root`` (an existing empty folder); deterministic in ``seed``."""
    o, root = options, Path(root)
    k = _classes(np.random.default_rng(np.random.SeedSequence([seed, GENERATOR_VERSION])))
    frames = max(2, int(round(o.seconds * o.fps)))
    stems: list[tuple[str, str]] = []
    for c, cls in enumerate(UCF51_CLASSES):
        (root / VIDEOS / cls).mkdir(parents=True)
        (root / EMBEDDINGS / cls).mkdir(parents=True)
        taken: dict[int, int] = {}
        for j in range(o.clips_per_class):
            group = group_and_block(c, j)
            taken[group] = taken.get(group, 0) + 1
            stem = stem_for(cls, group, taken[group])
            rng = np.random.default_rng(np.random.SeedSequence([seed, GENERATOR_VERSION, c, j]))
            video = _video(rng, k, c, frames, o.height, o.width, o.fps)
            audio = _audio(rng, k, c, o.seconds, o.audio_rate)
            media.write_avi(root / VIDEOS / cls / f"{stem}.avi", video, o.fps, audio, audio_rate=o.audio_rate)
            np.save(root / EMBEDDINGS / cls / f"{stem}.npy", _embedding(rng, k, c))
            stems.append((cls, stem))
    write_lists(root, stems)
    echo(f"wrote {len(stems)} clips of {len(UCF51_CLASSES)} classes ({frames} frames of {o.width}x{o.height} at "
         f"{o.fps:g} fps, MP3 at {o.audio_rate} Hz) and their embeddings")


def write_lists(root: Path, stems: list[tuple[str, str]], classes: tuple[str, ...] = UCF51_CLASSES) -> None:
    """``ucfTrainTestlist/`` as UCF101 ships it (CRLF lines): classInd.txt and the lists of splits 1-3
    following the group rule; train lines carry the 1-based class index, test lines none."""
    folder = root / LISTS
    folder.mkdir(parents=True, exist_ok=True)
    number = {cls: i + 1 for i, cls in enumerate(classes)}
    (folder / "classInd.txt").write_bytes("".join(f"{number[c]} {c}\r\n" for c in classes).encode())
    for split in (1, 2, 3):
        train, test = list_names(split)
        lines = {"train": [], "test": []}
        for cls, stem in sorted(stems):
            side = rule_split(stem, split)
            lines[side].append(f"{cls}/{stem}.avi" + (f" {number[cls]}" if side == "train" else ""))
        (folder / train).write_bytes("".join(f"{line}\r\n" for line in lines["train"]).encode())
        (folder / test).write_bytes("".join(f"{line}\r\n" for line in lines["test"]).encode())
