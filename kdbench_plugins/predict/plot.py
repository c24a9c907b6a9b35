"""The hypnogram picture: stages over clock time (the PSG's above the prediction's, when given), each stage's
probability beneath. Stages are drawn top to bottom W, REM, N1, N2, N3, as sleep labs draw them, so deeper
sleep is lower and REM sits just under wake."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..datasets.sleep.hypnogram import CLASS_NAMES
from .timeline import Timeline

#: class index -> height in the drawing (W top, then REM, N1, N2, N3)
LEVEL = {0: 4, 4: 3, 1: 2, 2: 1, 3: 0}
COLORS = {"W": "#f2c14e", "N1": "#9ecae1", "N2": "#4292c6", "N3": "#08306b", "REM": "#e4572e"}


def _x(timeline: Timeline, n: int):
    """Epoch edges on the x axis: clock times when the clock is known, else hours from the first epoch."""
    if timeline.clock is not None:
        return [timeline.wall(j) for j in range(n + 1)], "clock time"
    return np.arange(n + 1) * timeline.epoch / 3600.0, "hours from the first epoch"


def _hypnogram(ax, x, stages: np.ndarray, title: str) -> None:
    levels = np.array([LEVEL.get(int(s), np.nan) for s in stages], float)  # unscored: a gap
    ax.step(x, np.append(levels, levels[-1:]), where="post", color="black", linewidth=0.9)
    for j in np.flatnonzero(stages == CLASS_NAMES.index("REM")):
        ax.plot([x[j], x[j + 1]], [LEVEL[4]] * 2, color=COLORS["REM"], linewidth=4, solid_capstyle="butt")
    for j in np.flatnonzero(stages < 0):   # unscored or movement: shaded, so a gap is not read as a stage
        ax.axvspan(x[j], x[j + 1], color="0.85", linewidth=0)
    ax.set_yticks([LEVEL[k] for k in range(len(CLASS_NAMES))], CLASS_NAMES)
    ax.set_ylim(-0.5, 4.5)
    ax.set_title(title, loc="left", fontsize=10)
    ax.grid(axis="x", alpha=0.3)


def plot_night(path: Path, stages: np.ndarray, probabilities: np.ndarray, timeline: Timeline, title: str,
               psg: np.ndarray | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(stages)
    x, xlabel = _x(timeline, n)
    rows = 3 if psg is not None else 2
    fig, axes = plt.subplots(rows, 1, figsize=(12, 2.2 * rows + 0.8), sharex=True,
                             gridspec_kw={"height_ratios": [2] * (rows - 1) + [1.5]})
    if psg is not None:
        _hypnogram(axes[0], x, psg, "PSG hypnogram (scored; grey: unscored or movement)")
        scored = psg >= 0
        agree = f"{(psg[scored] == stages[scored]).mean():.0%} of the scored epochs agree" if scored.any() \
            else "the PSG scores none of these epochs"
        _hypnogram(axes[1], x, stages, f"predicted from video ({agree})")
    else:
        _hypnogram(axes[0], x, stages, "predicted from video")
    ax = axes[-1]
    bottom = np.zeros(n)
    for k, name in enumerate(CLASS_NAMES):
        ax.fill_between(x, np.append(bottom + probabilities[:, k], bottom[-1] + probabilities[-1, k]),
                        np.append(bottom, bottom[-1]), step="post", color=COLORS[name], label=name, linewidth=0)
        bottom = bottom + probabilities[:, k]
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_xlabel(xlabel)
    if timeline.clock is not None:
        import matplotlib.dates as mdates

        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
