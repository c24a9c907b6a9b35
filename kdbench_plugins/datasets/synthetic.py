"""The ``synthetic`` dataset: sleep stages seen through EEG (easy) and infrared video (hard).

It exists so that ``kdbench`` runs out of the box, in seconds, with no download, and still shows the
situation cross-modal distillation is about: the teacher's modality carries the label clearly, the
student's only faintly. Everything is drawn in memory from the seed, so the data is a pure function
of (options, seed) and the fingerprint can hash those instead of the tensors.

The EEG is built in the frequency domain (one FFT per clip: a 1/f background plus stage rhythms)
and then gets the stage's transient events in the time domain (spindles, K-complexes, eye movements,
sawtooth waves). The video renders a warm, blob-like body on a bed whose jitter, breathing rate and
twitching depend on the stage by a factor ``video_signal``; camera and sleeper confounders that do
not depend on the stage are laid over it. A per-clip arousal level, shared by both modalities
(``arousal_coupling``), makes the teacher's uncertainty say something about what the student sees,
as in real recordings where lighter sleep shows both in the EEG and in movement.

Generator v3 makes the teacher's knowledge worth having, for the oldest reason in learning with privileged
information: only ``labelled_fraction`` (15 %) of the training clips were scored, and ``label_noise`` (25 %) of
those scores name a neighbouring stage, while the teacher's EEG is clear for every clip, scored or not. Unscored
clips carry the label ``UNLABELLED``; hard-label losses skip them, distillation terms do not. v3 also makes the
video's stage cues stronger and trains both networks longer. The generative story and what it achieves:
docs/datasets.md; the measured known answer: docs/results-synthetic.md.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch
from pydantic import Field

from kdbench.contracts import FIELDS, UNLABELLED, Dataset, DatasetInfo
from kdbench.hookspecs import hookimpl
from kdbench.options import PluginOptions

CLASS_NAMES = ("W", "N1", "N2", "N3", "REM")
#: epochs per stage in S³VE; the label draw keeps these proportions in every split.
S3VE_COUNTS = np.array([55_878, 5_909, 40_522, 20_237, 12_290])
#: bump when the generator changes, so caches keyed on the fingerprint are invalidated.
GENERATOR_VERSION = 3

W, N1, N2, N3, REM = range(5)


class SyntheticOptions(PluginOptions):
    """Sizes and difficulty of the generated data."""

    train_size: int = Field(800, gt=0, description="Number of clips in the train split.")
    test_size: int = Field(400, gt=0, description="Number of clips in the test split.")
    eeg_rate: int = Field(100, ge=40, le=1000,
                          description="EEG sampling rate in Hz (>= 40 so 16 Hz spindles stay below Nyquist).")
    eeg_seconds: float = Field(30.0, ge=4.0, le=120.0, description="Length of one EEG epoch in seconds.")
    eeg_noise: float = Field(1.0, ge=0.0,
                             description="Scale of the 1/f EEG background relative to the stage rhythms.")
    eeg_eye_movements: float = Field(
        1.0, ge=0.0, le=1.0,
        description="Amplitude of the eye movements that reach the EEG channel, as a fraction of a frontal "
                    "derivation's (1 = Fpz-Cz, where REM's rapid eye movements show plainly; 0 = none, closer to a "
                    "central derivation such as the paper's C3, which picks up far less of them: the EEG then "
                    "tells REM from N1 mainly by sawtooth waves, while the camera still sees that REM lies still "
                    "and N1 does not).")
    frames: int = Field(8, ge=2, le=64, description="Frames per infrared clip.")
    height: int = Field(16, ge=8, le=128, description="Frame height in pixels.")
    width: int = Field(16, ge=8, le=128, description="Frame width in pixels.")
    fps: float = Field(2.0, gt=0.0, le=30.0,
                       description="Frame rate of the infrared clip (how far breathing advances between frames).")
    video_signal: float = Field(
        1.0, ge=0.0, le=1.0,
        description="How strongly the stage shapes the sleeper's motion (0 = the video is uninformative).")
    video_noise: float = Field(0.02, ge=0.0, le=1.0, description="Standard deviation of the per-pixel sensor noise.")
    arousal_coupling: float = Field(
        0.7, ge=0.0, le=1.0,
        description="How much of the sleeper's stage-independent restlessness also shows in the EEG as a "
                    "per-clip arousal level (0 = the two modalities are independent given the stage).")
    label_noise: float = Field(
        0.25, ge=0.0, lt=0.5,
        description="Fraction of the TRAIN labels replaced by a neighbouring stage, the confusions human scorers "
                    "make (W<->N1, N1<->N2, N2<->N3, N1/N2<->REM); the signals always follow the true stage and "
                    "the test labels stay clean (0 = every label is right).")
    labelled_fraction: float = Field(
        0.15, gt=0.0, le=1.0,
        description="Fraction of the TRAIN clips a scorer labelled (stratified by stage); the rest carry the "
                    "label UNLABELLED: their EEG and video are there, so the teacher still speaks for them, but "
                    "no hard-label loss sees them (1 = every clip scored). Test clips are all labelled.")
    movement_rate: float = Field(
        0.3, ge=0.0, le=1.0,
        description="Fraction of clips in which the sleeper makes a major body movement (turns over), whatever "
                    "the stage; plainly visible in the video, absent from the artefact-free EEG.")
    movement_bias: float = Field(
        0.0, ge=0.0, le=1.0,
        description="Probability that the scorer calls a TRAIN clip with a body movement one stage lighter than "
                    "it is (N1->W, N2->N1, N3->N2, REM->W); test labels stay clean (0 = movements do not sway "
                    "the scorer).")


# --------------------------------------------------------------------------- labels


def stratified_counts(n: int, weights: np.ndarray) -> np.ndarray:
    """Split ``n`` into per-class counts following ``weights`` (largest remainder).

    Every class gets at least one sample whenever ``n`` allows it, so even a toy split can be
    scored on all classes.
    """
    p = weights / weights.sum()
    raw = n * p
    floor = 1 if n >= len(p) else 0
    counts = np.maximum(np.floor(raw).astype(int), floor)
    while counts.sum() < n:
        counts[np.argmax(raw - counts)] += 1
    while counts.sum() > n:
        excess = np.where(counts > floor, counts - raw, -np.inf)
        counts[np.argmax(excess)] -= 1
    return counts


def draw_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    counts = stratified_counts(n, S3VE_COUNTS.astype(float))
    return rng.permutation(np.repeat(np.arange(len(counts)), counts))


#: where a scorer's wrong label lands, per true stage (rows W, N1, N2, N3, REM; each row sums to 1). Only
#: neighbouring stages: W<->N1 at sleep onset, N1<->N2 and N2<->N3 along the depth axis, REM taken for the
#: light NREM stages it resembles (theta, low tone) and vice versa. Never W<->N3, never N3<->REM.
CONFUSION = np.array([
    [0.0, 1.0, 0.0, 0.0, 0.0],     # W   -> N1
    [0.4, 0.0, 0.4, 0.0, 0.2],     # N1  -> W, N2, REM
    [0.0, 0.45, 0.0, 0.45, 0.1],   # N2  -> N1, N3, REM
    [0.0, 0.0, 1.0, 0.0, 0.0],     # N3  -> N2
    [0.0, 0.5, 0.5, 0.0, 0.0],     # REM -> N1, N2
])


#: the stage a scorer swayed by a body movement writes down, per true stage: one step lighter (W stays W;
#: a movement in REM usually ends in an awakening).
LIGHTER = np.array([W, W, N1, N2, W])


def sway_labels(rng: np.random.Generator, given: np.ndarray, true: np.ndarray, moved: np.ndarray,
                bias: float) -> np.ndarray:
    """A copy of the ``given`` labels in which each clip with a body movement is, with probability ``bias``,
    called one stage lighter than its ``true`` stage (:data:`LIGHTER`)."""
    swayed = moved & (rng.random(len(true)) < bias)
    return np.where(swayed, LIGHTER[true], given)


def unscore(rng: np.random.Generator, given: np.ndarray, true: np.ndarray, fraction: float) -> np.ndarray:
    """A copy of the ``given`` labels in which all but ``fraction`` of each true stage's clips (at least one per
    stage) are :data:`~kdbench.contracts.UNLABELLED`: the clips nobody had time to score."""
    out = np.full_like(given, UNLABELLED)
    for c in np.unique(true):
        rows = np.flatnonzero(true == c)
        kept = rng.choice(rows, max(1, int(round(fraction * len(rows)))), replace=False)
        out[kept] = given[kept]
    return out


def corrupt_labels(rng: np.random.Generator, labels: np.ndarray, fraction: float) -> np.ndarray:
    """A copy of ``labels`` in which exactly ``round(fraction * n)`` entries, chosen at random, are replaced by
    a neighbouring stage drawn from :data:`CONFUSION` (so every replaced label is wrong)."""
    noisy = labels.copy()
    k = int(round(fraction * len(labels)))
    if k == 0:
        return noisy
    which = rng.choice(len(labels), k, replace=False)
    cum = np.cumsum(CONFUSION[labels[which]], axis=1)
    noisy[which] = np.minimum((rng.random((k, 1)) > cum).sum(axis=1), len(CLASS_NAMES) - 1)
    return noisy


# --------------------------------------------------------------------------- EEG

#: background rhythms per stage: up to three spectral bumps (centre Hz, spread Hz, rms); rms 0 = unused.
RHYTHMS = np.zeros((5, 3, 3))
RHYTHMS[W] = [(10.0, 0.8, 1.0), (20.0, 4.0, 0.3), (32.0, 6.0, 0.3)]   # alpha, beta, muscle
RHYTHMS[N1] = [(5.5, 1.0, 0.8), (9.5, 0.8, 0.25), (1.0, 1.0, 0.0)]    # theta, fading alpha
RHYTHMS[N2] = [(5.5, 1.2, 0.5), (1.2, 0.6, 0.4), (1.0, 1.0, 0.0)]     # theta, some slow waves
RHYTHMS[N3] = [(1.0, 0.45, 2.4), (4.5, 1.5, 0.3), (1.0, 1.0, 0.0)]    # high-amplitude delta
RHYTHMS[REM] = [(5.0, 1.2, 0.6), (9.0, 1.0, 0.15), (1.0, 1.0, 0.0)]   # theta, a little alpha

#: expected number of each transient event per 30 s, per stage (W, N1, N2, N3, REM).
EVENT_RATES = {
    "spindle": [0.0, 0.1, 2.5, 0.6, 0.0],
    "k_complex": [0.0, 0.1, 1.2, 0.3, 0.0],
    "eye_movement": [0.8, 0.3, 0.0, 0.0, 4.0],
    "sawtooth": [0.0, 0.1, 0.0, 0.0, 1.2],
}

#: divides the raw signal so that a typical epoch has a standard deviation near 1.
EEG_SCALE = 1.85


def _unit_rms(gain: np.ndarray, length: int) -> np.ndarray:
    """Rescale spectral gains so that filtering unit white noise with them gives rms 1."""
    power = 2.0 / length * np.sum(gain ** 2, axis=-1, keepdims=True)
    return gain / np.sqrt(np.maximum(power, 1e-12))


def _hann_window(t: np.ndarray, centre: np.ndarray, duration: np.ndarray) -> np.ndarray:
    """A raised-cosine envelope of the given duration per event: (E, L)."""
    x = (t[None, :] - centre[:, None]) / duration[:, None]
    return np.where(np.abs(x) < 0.5, np.cos(np.pi * x) ** 2, 0.0)


def _events(rng: np.random.Generator, labels: np.ndarray, kind: str, seconds: float):
    """Rows and onsets of one kind of event; the count per clip is Poisson in the stage's rate."""
    lam = np.asarray(EVENT_RATES[kind])[labels] * seconds / 30.0
    rows = np.repeat(np.arange(len(labels)), rng.poisson(lam))
    onsets = rng.uniform(0.5, seconds - 0.5, len(rows))
    return rows, onsets


def make_eeg(rng: np.random.Generator, labels: np.ndarray, arousal: np.ndarray, rate: int, seconds: float,
             noise: float, eye_movements: float = 1.0) -> np.ndarray:
    """One-channel EEG epochs, (n, 1, L) float32, whose spectrum and events follow the stage.

    ``arousal`` (per clip, standard normal) shifts power from slow waves to alpha/beta, as lighter
    sleep would, without changing the stage. ``eye_movements`` scales the eye-movement events only (how much
    of the eyes' movements the channel picks up); it draws the same random numbers whatever its value.
    """
    n, length = len(labels), int(round(rate * seconds))
    freqs = np.fft.rfftfreq(length, 1.0 / rate)
    t = np.arange(length) / rate

    # Stage rhythms: Gaussian bumps with per-clip jitter in centre and strength.
    table = RHYTHMS[labels]                                             # (n, 3, 3)
    centre = table[..., 0] + rng.normal(0.0, 0.35, (n, 3)) * table[..., 1]
    bumps = np.exp(-0.5 * ((freqs - centre[..., None]) / table[..., 1, None]) ** 2)
    rms = table[..., 2] * rng.lognormal(0.0, 0.25, (n, 3))
    lightness = np.where(table[..., 0] >= 7.5, 1.0, np.where(table[..., 0] < 3.0, -1.0, 0.0))
    rms = rms * np.exp(0.4 * lightness * arousal[:, None])
    rhythm = np.sum(rms[..., None] * _unit_rms(bumps, length), axis=1)

    # 1/f background with a per-clip exponent; no DC.
    exponent = rng.uniform(0.4, 0.9, (n, 1))
    background = np.where(freqs > 0.2, 1.0 / (freqs + 0.5) ** exponent, 0.0)
    background = noise * 0.8 * _unit_rms(background, length)

    gain = np.sqrt(rhythm ** 2 + background ** 2)                       # powers add
    white = np.fft.rfft(rng.standard_normal((n, length)), axis=-1)
    x = np.fft.irfft(white * gain, n=length, axis=-1)

    # Sleep spindles: 11-16 Hz bursts of 0.5-2 s.
    rows, t0 = _events(rng, labels, "spindle", seconds)
    freq, dur = rng.uniform(11.0, 16.0, len(rows)), rng.uniform(0.5, 2.0, len(rows))
    amp = rng.uniform(1.0, 2.0, len(rows))
    wave = np.sin(2 * np.pi * freq[:, None] * (t - t0[:, None]))
    np.add.at(x, rows, amp[:, None] * _hann_window(t, t0, dur) * wave)

    # K-complexes: a sharp negative wave followed by a broader positive one.
    rows, t0 = _events(rng, labels, "k_complex", seconds)
    amp = rng.uniform(2.0, 4.0, len(rows))[:, None]
    dt = t - t0[:, None]
    np.add.at(x, rows, amp * (-np.exp(-0.5 * (dt / 0.1) ** 2) + 0.6 * np.exp(-0.5 * ((dt - 0.35) / 0.2) ** 2)))

    # Eye movements: a fast deflection of random sign that decays over a fraction of a second.
    rows, t0 = _events(rng, labels, "eye_movement", seconds)
    amp = eye_movements * rng.uniform(1.5, 3.0, len(rows)) * rng.choice([-1.0, 1.0], len(rows))
    tau = rng.uniform(0.3, 1.0, len(rows))
    dt = t - t0[:, None]
    rise = 0.5 * (1.0 + np.tanh(dt / 0.03))
    np.add.at(x, rows, amp[:, None] * rise * np.exp(-np.maximum(dt, 0.0) / tau[:, None]))

    # Sawtooth waves: 2-5 Hz ramp trains lasting a few seconds.
    rows, t0 = _events(rng, labels, "sawtooth", seconds)
    freq, dur = rng.uniform(2.0, 4.5, len(rows)), rng.uniform(1.5, 4.0, len(rows))
    amp = rng.uniform(0.8, 1.5, len(rows))
    ramp = 2.0 * np.mod(freq[:, None] * (t - t0[:, None]), 1.0) - 1.0
    np.add.at(x, rows, amp[:, None] * _hann_window(t, t0, dur) * ramp)

    x *= rng.lognormal(0.0, 0.25, (n, 1)) / EEG_SCALE                   # amplitude varies per clip
    return x[:, None, :].astype(np.float32)


# --------------------------------------------------------------------------- infrared video

#: how each stage shifts the sleeper's motion, on a -1..1 scale scaled by ``video_signal``.
JITTER_LEVEL = np.array([1.0, 0.4, -0.3, -1.0, -0.5])   # W moves most, N3 least
BREATH_LEVEL = np.array([0.6, 0.2, -0.3, -1.0, 0.7])    # faster, shallower breathing when awake / REM
TWITCH_LEVEL = np.array([0.0, -0.4, -0.6, -1.0, 1.0])   # REM twitches
#: log-normal spread of per-clip restlessness, the main confounder of the video's stage signal.
RESTLESS_SPREAD = 0.2


def _soft(x: np.ndarray, sharpness: float) -> np.ndarray:
    """A smooth step from 0 to 1 around x = 0, so moving shapes change pixels sub-pixel by sub-pixel."""
    return 0.5 * (1.0 + np.tanh(sharpness * x))


def make_video(rng: np.random.Generator, labels: np.ndarray, arousal: np.ndarray, frames: int, height: int,
               width: int, fps: float, signal: float, noise: float, coupling: float,
               moved: np.ndarray | None = None) -> np.ndarray:
    """Grayscale thermal clips, (n, 1, T, H, W) float32 in [0, 1].

    How restless the sleeper is varies per clip regardless of the stage; ``coupling`` sets how much of
    that variation is the shared ``arousal`` the EEG also shows, the rest being private to the video.
    """
    n, T = len(labels), frames
    f32 = np.float32  # per-pixel work in single precision: half the memory traffic, same picture
    ys = (np.linspace(-1.0, 1.0, height)[:, None] * (height / width)).astype(f32)
    xs = np.linspace(-1.0, 1.0, width, dtype=f32)[None, :]
    seconds = np.arange(T) / fps

    # Stage-dependent motion, each modulated by a per-sleeper factor that ignores the stage.
    shared = RESTLESS_SPREAD * coupling
    restless = np.exp(shared * arousal + np.sqrt(RESTLESS_SPREAD ** 2 - shared ** 2) * rng.standard_normal(n))
    jitter = 0.16 * np.exp(1.2 * signal * JITTER_LEVEL[labels]) * restless
    rate = 0.25 * (1.0 + 0.3 * signal * BREATH_LEVEL[labels]) * rng.lognormal(0.0, 0.1, n)
    depth = 0.05 * (1.0 - 0.5 * signal * BREATH_LEVEL[labels]) * rng.lognormal(0.0, 0.2, n)
    twitch_p = np.clip(0.1 * (1.0 + signal * 3.0 * TWITCH_LEVEL[labels]), 0.0, 1.0)

    # Pose: where the body lies, how it is turned, how big it is; then per-frame drift.
    steps = rng.normal(0.0, 1.0, (n, T, 3)) * jitter[:, None, None] * np.array([1.0, 1.0, 2.0])
    steps[:, 0] = 0.0
    pose = np.stack([rng.uniform(-0.25, 0.25, n), rng.uniform(-0.2, 0.2, n),
                     rng.uniform(-0.5, 0.5, n)], axis=-1)[:, None, :] + np.cumsum(steps, axis=1)
    # A major body movement (turning over) in the ``moved`` clips, at a random frame; independent of the stage.
    moved = np.zeros(n, dtype=bool) if moved is None else moved
    when = rng.integers(1, T, n)
    jump = rng.normal(0.0, 1.0, (n, 3)) * np.array([0.2, 0.2, 0.6]) * moved[:, None]
    pose += (np.arange(T)[None, :, None] >= when[:, None, None]) * jump[:, None, :]

    cx, cy, angle = (pose[..., k][..., None, None].astype(f32) for k in range(3))       # (n, T, 1, 1)
    size = rng.uniform(0.85, 1.15, n)[:, None]
    breath = 1.0 + depth[:, None] * np.sin(2 * np.pi * rate[:, None] * seconds + rng.uniform(0, 2 * np.pi, (n, 1)))
    a = ((0.6 * size)[..., None, None] * np.ones((1, T, 1, 1))).astype(f32)
    b = (0.25 * size * breath)[..., None, None].astype(f32)

    u = (xs - cx) * np.cos(angle) + (ys - cy) * np.sin(angle)      # along the body
    v = -(xs - cx) * np.sin(angle) + (ys - cy) * np.cos(angle)     # across it
    body = _soft(1.0 - (u / a) ** 2 - (v / b) ** 2, 3.0)

    # Blanket: damps the heat of the body below a random line across it.
    edge = rng.uniform(-0.3, 0.4, n).astype(f32)[:, None, None, None] * a
    cover = rng.uniform(0.3, 0.8, n).astype(f32)[:, None, None, None]
    body = body * (1.0 - (1.0 - cover) * _soft(u - edge, 8.0))

    # Head at one end of the body; twitches displace it for a single frame.
    twitch = (rng.random((n, T)) < twitch_p[:, None]) * rng.normal(0.0, 0.2, (n, T))
    hu = (-0.85 * a[..., 0, 0] + twitch)[..., None, None].astype(f32)
    hx = cx + hu * np.cos(angle)
    hy = cy + hu * np.sin(angle)
    radius = (0.17 * size[..., None, None]).astype(f32)
    head = _soft(1.0 - ((xs - hx) ** 2 + (ys - hy) ** 2) / radius ** 2, 3.0)

    # Bed: a faintly warm rectangle at a random offset.
    bx, by = (rng.uniform(-0.1, 0.1, n).astype(f32)[:, None, None, None] for _ in range(2))
    bed = _soft(0.85 - np.abs(xs - bx), 10.0) * _soft(0.55 - np.abs(ys - by), 10.0)

    clip = 0.08 + 0.12 * bed + 0.55 * body + 0.25 * head
    # Camera: auto-gain per clip, flicker per frame, sensor noise.
    clip = clip * rng.uniform(0.75, 1.15, (n, 1, 1, 1)).astype(f32) * rng.normal(1.0, 0.04, (n, T, 1, 1)).astype(f32)
    clip += rng.uniform(-0.05, 0.05, (n, 1, 1, 1)).astype(f32) + f32(noise) * rng.standard_normal(clip.shape, dtype=f32)
    return np.clip(clip, 0.0, 1.0)[:, None]


# --------------------------------------------------------------------------- the plugin class


class _Split(torch.utils.data.Dataset):
    """One generated split, held in memory as tensors."""

    def __init__(self, student: np.ndarray, teacher: np.ndarray, labels: np.ndarray,
                 true_labels: np.ndarray | None = None) -> None:
        self.student = torch.from_numpy(student)
        self.teacher = torch.from_numpy(teacher)
        self.labels = torch.from_numpy(labels.astype(np.int64))
        #: the stages the signals were drawn from; differs from ``labels`` only in the train split, where clips are
        #: unscored (``UNLABELLED``) or their score is wrong (``label_noise``, ``movement_bias``).
        #: Kept for tests and diagnostics; never part of an item, so no method can see it.
        self.true_labels = self.labels if true_labels is None else torch.from_numpy(true_labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for a split of {len(self)} samples")
        return {"student": self.student[i], "teacher": self.teacher[i],
                "label": int(self.labels[i]), "index": i}


class SyntheticSleep(Dataset):
    """Generated sleep stages: clear EEG for the teacher, faint infrared video for the student."""

    name = "synthetic"
    Options = SyntheticOptions
    default_teacher = "tiny-eeg"
    default_student = "tiny-3dcnn"
    modalities = ("eeg", "video")
    fixed_student_inputs = True   # the clips are generated once and held in memory
    splits = ("train", "test")
    class_names = CLASS_NAMES
    #: tuned on 2 CPU cores (v3): the teacher trains in ~6-15 s to ~0.88 test accuracy on the 120 noisy labels, a
    #: student in ~6 s (a whole `kdbench run` with a cached teacher ~11 s wall); the baseline student reaches
    #: ~0.57 (0.415 for always answering W), distilled students 0.67-0.77.
    run_defaults = {
        "epochs": 30,
        "batch_size": 32,
        "optimizer": {"name": "adam", "lr": 3e-3, "weight_decay": 0.0},
        "schedule": {"name": "cosine"},   # lets the student's BatchNorm statistics settle
        "teacher_training": {"epochs": 30, "batch_size": 32,
                             "optimizer": {"name": "adam", "lr": 3e-3, "weight_decay": 0.0}},
    }

    def __init__(self, options: SyntheticOptions, seed: int) -> None:
        super().__init__(options, seed)
        o = options
        self.info = DatasetInfo(
            class_names=CLASS_NAMES,
            teacher_input_shape=(1, int(round(o.eeg_rate * o.eeg_seconds))),
            student_input_shape=(1, o.frames, o.height, o.width),
        )
        self._cache: dict[str, _Split] = {}

    def split(self, name: str, fields: tuple[str, ...] = FIELDS) -> torch.utils.data.Dataset:
        """Generate a split on first use; each split has its own random stream, so sizes don't leak. Both
        inputs are in memory, so every item carries both whatever ``fields`` asks for."""
        if name not in self.splits:
            raise KeyError(f"dataset {self.name!r} has no split {name!r}; it has {', '.join(self.splits)}")
        if name not in self._cache:
            self._cache[name] = self._generate(name)
        return self._cache[name]

    def _generate(self, name: str) -> _Split:
        o = self.options
        size = o.train_size if name == "train" else o.test_size
        stream = np.random.SeedSequence([self.seed, self.splits.index(name)])
        label_rng, eeg_rng, video_rng, arousal_rng, noise_rng, move_rng, score_rng = (
            np.random.default_rng(s) for s in stream.spawn(7))
        labels = draw_labels(label_rng, size)
        arousal = arousal_rng.standard_normal(size)
        moved = move_rng.random(size) < o.movement_rate
        eeg = make_eeg(eeg_rng, labels, arousal, o.eeg_rate, o.eeg_seconds, o.eeg_noise, o.eeg_eye_movements)
        video = make_video(video_rng, labels, arousal, o.frames, o.height, o.width, o.fps,
                           o.video_signal, o.video_noise, o.arousal_coupling, moved)
        # Scorers' errors reach only the labels one trains on; the test split is scored against the truth.
        given = labels
        if name == "train":
            given = corrupt_labels(noise_rng, labels, o.label_noise)
            given = sway_labels(move_rng, given, labels, moved, o.movement_bias)
            given = unscore(score_rng, given, labels, o.labelled_fraction)
        return _Split(video, eeg, given, labels)

    def fingerprint(self) -> str:
        blob = json.dumps({"dataset": type(self).__qualname__, "version": GENERATOR_VERSION,
                           "options": self.options.model_dump(mode="json"), "seed": self.seed},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


@hookimpl
def register_datasets(register):
    register(SyntheticSleep)
