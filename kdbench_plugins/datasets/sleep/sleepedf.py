"""The ``sleepedf`` dataset: PhysioNet Sleep-EDF (expanded), EEG only.

PhysioNet ships each night as ``SC4ssNE0-PSG.edf`` with ``SC4ssNxx-Hypnogram.edf`` (ss = subject, N = night;
the hypnogram's 7th character is the scorer's and differs), in a flat folder or in ``sleep-cassette/``.
Both the teacher and the student read the same EEG epoch (EEG teachers, MC2SleepNet, EEG-to-EEG
distillation); with ``context`` > 0 the teacher reads the sequence of epochs around it. Recordings run for
about a day, mostly awake, so wake more than ``trim_wake`` minutes away from the first and last sleep epoch
is left out, as DeepSleepNet, AttnSleep and MNE's tutorial do.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import Field

from kdbench.contracts import DatasetInfo
from kdbench.data import resolve_root
from kdbench.errors import first_line

from .common import (
    EEGReader,
    Night,
    SleepDataset,
    SleepOptions,
    compare_lengths,
    context_params,
    dropped_counts,
    report_truncation,
    teacher_shape,
)
from .hypnogram import CLASS_NAMES, EPOCH, read_hypnogram
from .psg import match_channel, read_header
from .splits import assign
from .synth import SleepEDFSynthOptions

SUBFOLDER = "sleep-cassette"


class SleepEDFOptions(SleepOptions):
    channel: str = Field("EEG Fpz-Cz", description="EEG channel (Sleep-EDF: 'EEG Fpz-Cz' or 'EEG Pz-Oz')")
    trim_wake: float | None = Field(30.0, ge=0.0, description="minutes of wake kept before the first and after "
                                                             "the last sleep epoch; 0 or null keeps all wake")


class SleepEDF(SleepDataset):
    """PhysioNet Sleep-EDF nights: one EEG epoch is both the teacher's and the student's input."""

    name = "sleepedf"
    Options = SleepEDFOptions
    default_teacher = "attnsleep"
    default_student = "tiny-eeg"
    modalities = ("eeg", "eeg")
    #: the global defaults (teacher: Adam lr 1e-3, wd 1e-3, batch 128 as AttnSleep) stand; nothing differs.
    run_defaults: ClassVar[dict] = {}
    SynthOptions = SleepEDFSynthOptions

    def __init__(self, options: SleepEDFOptions, seed: int) -> None:
        super().__init__(options, seed)
        # with context > 0 the teacher reads the sequence around the epoch and the student the epoch alone
        self.info = DatasetInfo(CLASS_NAMES, teacher_shape(options), (1, int(round(EPOCH * options.rate))))

    @classmethod
    def synthesize(cls, root: Path, options, seed: int, echo) -> None:
        from .synth import write_sleepedf

        write_sleepedf(root, options, seed, echo)

    def _params(self) -> dict:
        o = self.options
        return {"channel": o.channel, "rate": o.rate, "trim_wake": o.trim_wake or 0,
                "test_fraction": o.test_fraction, "val_fraction": o.val_fraction, **context_params(o)}

    def _reader(self) -> EEGReader:
        return EEGReader(self.nights, self.options, self.root)

    # ------------------------------------------------------------- index

    def _index(self) -> Path:
        root = resolve_root(self.options.root, self.name)
        folder = root
        if not any(root.glob("*-PSG.edf")) and (root / SUBFOLDER).is_dir():
            folder = root / SUBFOLDER
        psgs = {p.name[:6]: p for p in sorted(folder.glob("*-PSG.edf"))}
        found: dict[str, list[Path]] = {}
        for p in sorted(folder.glob("*-Hypnogram.edf")):
            found.setdefault(p.name[:6], []).append(p)
        hyps = {name: paths[0] for name, paths in found.items()}
        for name, paths in found.items():
            if len(paths) > 1:
                # Which scorer's is meant cannot be told from the files: the night is indexed with the first (so
                # its items are known) and all its items are bad until one file is removed.
                self.files += paths[1:]
                listed = ", ".join(p.name for p in paths[:-1]) + f" and {paths[-1].name}"
                self._problems.add("two-hypnograms", self._rel(paths[0], root), f"{len(paths)} hypnograms for one "
                                   f"night: {listed}; remove {'one' if len(paths) == 2 else 'all but one'}", night=name)
        if not psgs and not hyps:
            self._problems.add("empty", str(root), f"no *-PSG.edf / *-Hypnogram.edf files here nor in {SUBFOLDER}/; "
                               f"point dataset.root at a copy of PhysioNet Sleep-EDF")
            return root
        names = sorted(set(psgs) | set(hyps))
        self.assignment = assign({n[:5]: "all" for n in names}, self.seed, self.options.test_fraction,
                                 self.options.val_fraction)
        self.notes.append(f"splits by subject (both nights together), seed {self.seed}")
        for name in names:
            self.nights.append(self._index_night(root, name, psgs.get(name), hyps.get(name)))
        return root

    @staticmethod
    def _rel(path: Path, root: Path) -> str:
        return str(path.relative_to(root))

    def _index_night(self, root: Path, name: str, psg: Path | None, hyp_path: Path | None) -> Night:
        night = Night(name, name[:5], psg=psg, hypnogram=hyp_path)
        add = self._problems.add
        hyp = None
        if hyp_path is None:
            add("missing-hypnogram", self._rel(psg, root), f"no {name}??-Hypnogram.edf beside it", night=name)
        else:
            self.files.append(hyp_path)
            hyp = read_hypnogram(hyp_path)
            if hyp.error:
                add("bad-hypnogram", self._rel(hyp_path, root), hyp.error, night=name)
                hyp = None
        window_end = None
        if hyp is not None:
            lo, hi = self._window(hyp.codes)
            window_end = hi if self.options.trim_wake else None
            epochs = np.flatnonzero(hyp.codes >= 0)
            trimmed = epochs[(epochs < lo) | (epochs >= hi)]
            night.epochs = epochs[(epochs >= lo) & (epochs < hi)].astype(np.int32)
            night.labels = hyp.codes[night.epochs]
            if len(trimmed):
                self.dropped[f"wake epochs more than {self.options.trim_wake:g} min from sleep"] += len(trimmed)
            dropped_counts(hyp, self.dropped)
            self.stage4 += hyp.stage4
        header = None
        if psg is None:
            add("missing-psg", self._rel(hyp_path, root), f"no {name}E0-PSG.edf beside it", night=name)
        else:
            self.files.append(psg)
            header, why = read_header(psg)
            if header is None:
                add("bad-psg", self._rel(psg, root), why, night=name)
            else:
                night.channel = match_channel(self.options.channel, header.channels)
                if night.channel is None:
                    add("channel", self._rel(psg, root), f"no EEG channel {self.options.channel!r} (set "
                        f"dataset.channel to one of: {', '.join(header.channels)})", night=name)
        if hyp is not None and header is not None:
            compare_lengths(self._problems, self.dropped, night, hyp, header.as_promised(), self._rel(hyp_path, root),
                            window_end)
            report_truncation(self._problems, self.notes, night, header, self._rel(psg, root))
        night.usable = hyp is not None and header is not None and night.channel is not None
        return night

    def _window(self, codes: np.ndarray) -> tuple[int, int]:
        """[first sleep - trim, last sleep + trim] in epochs; everything when trimming is off."""
        minutes = self.options.trim_wake
        sleep = np.flatnonzero((codes >= 1) & (codes <= 4))
        if not minutes:
            return 0, len(codes)
        if not len(sleep):
            self.notes.append("a night without sleep epochs lost all its epochs to wake trimming")
            return 0, 0
        margin = int(round(minutes * 60.0 / EPOCH))
        return max(0, int(sleep[0]) - margin), int(sleep[-1]) + margin + 1

    def _deep_problems(self, progress: bool):
        from tqdm import tqdm

        from .common import Problems

        found = Problems()
        for n, night in enumerate(tqdm(self.nights, desc="sleepedf check", unit="night", disable=not progress)):
            held = night.epochs[night.epochs < self.reader.whole_epochs(n)] if night.usable else []
            if len(held):  # a truncated PSG's lost epochs are reported already
                try:
                    self.reader.eeg(n, int(held[-1]))
                except Exception as error:  # noqa: BLE001
                    found.add("eeg-read", self._rel(night.psg, self.root),
                              f"cannot read EEG samples ({first_line(error)})", night.keys())
        return found.resolve({}), []
