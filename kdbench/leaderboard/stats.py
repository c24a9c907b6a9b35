"""The numbers of a leaderboard: seeds aggregated per entry, the best of each group, each row against its baseline.

- An entry's metric is the mean over its finished seeds ± the sample standard deviation (ddof = 1), with n.
- Units are the paper's: accuracy, MF1 and per-class accuracy in %, κ as a fraction (:func:`scale`).
- The best of a group, per metric, is the entry with the highest mean (every entry tied at it, up to
  float rounding).
- A row is compared with its baseline (:func:`baseline_of`) on the seeds both have finished: the mean of the
  paired accuracy differences (percentage points) with its t-interval, ``mean ± t(0.975, n−1)·sd/√n``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from .collect import Board, Entry, Reported

LEVEL = 0.95
NAN = float("nan")


def scale(metric: str) -> float:
    """Tracked fractions → the paper's units: % for everything but κ."""
    return 1.0 if metric == "kappa" else 100.0


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float  # NaN when n < 2
    n: int


def summarize(values: list[float]) -> Stat:
    n = len(values)
    if n == 0:
        return Stat(NAN, NAN, 0)
    return Stat(statistics.fmean(values), statistics.stdev(values) if n > 1 else NAN, n)


@dataclass(frozen=True)
class Paired:
    """Row minus baseline over the seeds both have: mean, sd of the differences, t-interval (None for one pair)."""

    mean: float
    std: float
    low: float | None
    high: float | None
    n: int


def paired(ours: dict[int, float], base: dict[int, float], level: float = LEVEL) -> Paired | None:
    seeds = sorted(set(ours) & set(base))
    if not seeds:
        return None
    diffs = [ours[s] - base[s] for s in seeds]
    n, mean = len(diffs), statistics.fmean(diffs)
    if n < 2:
        return Paired(mean, NAN, None, None, n)
    from scipy.stats import t

    sd = statistics.stdev(diffs)
    half = float(t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return Paired(mean, sd, mean - half, mean + half, n)


def baseline_of(entry: Entry, entries: list[Entry]) -> Entry | None:
    """The entry a row is compared with: the row its block names (``compare_to``; in its own group if there is
    one there), else a baseline entry (distiller ``baseline``, or a block marked ``baseline = true``) of the same
    table with the same dataset and student; among several, the one with the same teacher, then the first in
    file order. Baseline entries themselves have none."""
    if entry.compare_to is not None:
        named = [e for e in entries if e.row == entry.compare_to and e is not entry]
        return ([e for e in named if e.group == entry.group] or named or [None])[0]
    if entry.baseline:
        return None
    config = entry.config
    candidates = [e for e in entries if e.baseline and e.config.dataset.name == config.dataset.name
                  and e.config.student.name == config.student.name]
    same_teacher = [e for e in candidates if e.config.teacher.name == config.teacher.name]
    return (same_teacher or candidates or [None])[0]


@dataclass
class Line:
    """One entry's numbers as the table shows them."""

    entry: Entry
    stats: dict[str, Stat]  # every metric, in the paper's units
    paper: dict[str, Reported]  # metric → the paper's number
    best: set[str] = field(default_factory=set)  # the metrics in which this entry leads its group
    base: Entry | None = None
    paired: Paired | None = None

    @property
    def n(self) -> int:
        return len(self.entry.runs)

    @property
    def asked(self) -> int:
        return len(self.entry.cells)

    @property
    def short(self) -> bool:
        """Some but not all of the seeds the table asks for have finished."""
        return 0 < self.n < self.asked

    def diff(self, metric: str) -> float | None:
        """Ours minus the paper's."""
        stat, paper = self.stats.get(metric), self.paper.get(metric)
        return stat.mean - paper.value if stat is not None and stat.n and paper is not None else None


def values(entry: Entry, metric: str) -> dict[int, float]:
    """Seed → this metric of the entry's run, in the paper's units."""
    return {seed: run.metrics[metric] * scale(metric) for seed, run in entry.runs.items() if metric in run.metrics}


def compute(board: Board) -> list[Line]:
    lines = []
    for entry in board.entries:
        stats = {m: summarize(list(values(entry, m).values())) for m in board.metrics}
        paper = {m: board.paper[(entry.group, entry.row, m)] for m in board.metrics
                 if (entry.group, entry.row, m) in board.paper}
        base = baseline_of(entry, board.entries)
        compared = paired(values(entry, "accuracy"), values(base, "accuracy")) if base is not None else None
        lines.append(Line(entry, stats, paper, base=base, paired=compared))
    for group in dict.fromkeys(line.entry.group for line in lines):
        members = [line for line in lines if line.entry.group == group]
        for metric in board.metrics:
            means = [line.stats[metric].mean for line in members if line.stats[metric].n]
            if means:
                top = max(means)
                for line in members:  # ties (up to float rounding) all lead
                    if line.stats[metric].n and math.isclose(line.stats[metric].mean, top, rel_tol=1e-9,
                                                             abs_tol=1e-12):
                        line.best.add(metric)
    return lines
