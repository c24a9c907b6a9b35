"""Subject-wise splits: every epoch of a subject lands on the same side, so no test sleeper is ever seen in training.

SACD (section V-A) splits its subjects per apnea-severity group (AHI < 5, 5-15, 15-30, > 30): 80 % of each
group for training -- a fifth of those for validation -- and 20 % for testing. Rounding each group on its
own would leave a small dataset with no test subject at all (20 % of a group of two rounds to zero), so the
totals are fixed first (20 % of all subjects for test, 20 % of the remaining ones for validation; at least one
test subject when there are 2 or more, and at least one validation subject when 2 or more remain after the
test draw, so that 3 subjects give 1/1/1 and training always keeps one) and shared out over the groups by
largest remainder, ties broken by the seed. Which subjects of a group go where is a seeded shuffle of their
sorted names.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

AHI_GROUPS = ("AHI<5", "AHI 5-15", "AHI 15-30", "AHI>30", "AHI unknown")


def ahi_group(ahi: float | None) -> str:
    """The clinical groups of the paper: normal < 5 <= mild < 15 <= moderate <= 30 < severe."""
    if ahi is None or math.isnan(ahi):
        return AHI_GROUPS[4]
    if ahi < 5:
        return AHI_GROUPS[0]
    if ahi < 15:
        return AHI_GROUPS[1]
    if ahi <= 30:
        return AHI_GROUPS[2]
    return AHI_GROUPS[3]


def _share(total: int, sizes: list[int], rng: np.random.Generator) -> list[int]:
    """Split ``total`` over groups in proportion to ``sizes`` (largest remainder, seeded tie-break)."""
    whole = sum(sizes)
    if whole == 0 or total == 0:
        return [0] * len(sizes)
    quota = [total * s / whole for s in sizes]
    counts = [int(np.floor(q)) for q in quota]
    order = sorted(range(len(sizes)), key=lambda g: (-(quota[g] - counts[g]), rng.random()))
    for g in order[: total - sum(counts)]:
        counts[g] += 1
    return counts


def _target(n: int, fraction: float, minimum: int) -> int:
    k = int(round(n * fraction))
    return max(k, 1) if n >= minimum and fraction > 0 else k


def assign(groups: dict[str, str], seed: int, test_fraction: float = 0.2, val_fraction: float = 0.2) -> dict[str, str]:
    """``{subject: group}`` -> ``{subject: "train" | "val" | "test"}``, stratified by group and seeded."""
    names = sorted(groups)
    rng = np.random.default_rng([seed, zlib.crc32(b"subject-splits")])
    by_group: dict[str, list[str]] = {}
    for name in names:
        by_group.setdefault(groups[name], []).append(name)
    keys = sorted(by_group)
    members = {g: [by_group[g][i] for i in rng.permutation(len(by_group[g]))] for g in keys}
    n = len(names)
    tests = _share(_target(n, test_fraction, 2), [len(members[g]) for g in keys], rng)
    rest = {g: members[g][t:] for g, t in zip(keys, tests)}
    pool = sum(len(r) for r in rest.values())
    vals = _share(_target(pool, val_fraction, 2), [len(rest[g]) for g in keys], rng)
    out: dict[str, str] = {}
    for g, t, v in zip(keys, tests, vals):
        for i, name in enumerate(members[g]):
            out[name] = "test" if i < t else "val" if i < t + v else "train"
    return out
