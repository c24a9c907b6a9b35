"""Where the predicted epochs sit in time: video seconds, the PSG's clock, and the wall clock.

Video time ``v`` is PSG time ``offset + v`` (``offset`` is the PSG time of the video's first frame, the
``video_offset`` of the ``s3ve`` dataset's ``subjects.csv``). Predicted epoch ``j`` covers video seconds
``start + j * epoch`` onwards. When ``offset + start`` is a whole number of epochs the predictions lie on
the PSG's scoring grid and ``first_psg_epoch`` says which PSG epoch is the first predicted one; files in
the hypnogram formats are then written in PSG epochs, so they line up with (and can replace) a
lab's hypnogram.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

#: how far (s) an epoch may start from the PSG's grid and still be taken as on it (as the hypnogram reader)
GRID_SLACK = 1.0


@dataclass(frozen=True)
class Timeline:
    start: float                  # video second where the first epoch starts
    offset: float                 # PSG time of the video's first frame
    epoch: float                  # seconds per epoch
    clock: dt.datetime | None     # wall-clock time of PSG time 0, when known

    @classmethod
    def aligned(cls, offset: float, epoch: float, clock: dt.datetime | None = None) -> Timeline:
        """The first epoch on the PSG's grid that starts inside the video and not before the PSG: PSG epoch
        ``max(0, ceil(offset / epoch))``, at video second ``epoch * that - offset``."""
        first = max(0, math.ceil(offset / epoch - 1e-9))
        return cls(max(0.0, first * epoch - offset), offset, epoch, clock)

    def psg_time(self, j) -> float:
        return self.offset + self.start + self.epoch * j

    @property
    def first_psg_epoch(self) -> int | None:
        """The PSG epoch of predicted epoch 0, or None when the predictions are off the PSG's grid."""
        k = self.psg_time(0) / self.epoch
        return int(round(k)) if round(k) >= 0 and abs(k - round(k)) * self.epoch <= GRID_SLACK else None

    def wall(self, j) -> dt.datetime | None:
        return self.clock + dt.timedelta(seconds=self.psg_time(j)) if self.clock else None
