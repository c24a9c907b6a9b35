"""The check that stands between a dataset and a training run.

A full check may decode every file (a truncated video shows only when read), which is too slow to repeat
on every run, so its report is stored under ``$KDBENCH_CACHE_DIR/checks`` keyed by the dataset's content
fingerprint: it runs again only when a file or a sampling parameter changes.
"""

from __future__ import annotations

import os
from typing import Callable

from ..errors import KdbenchError
from ..paths import cache_dir
from .report import DataReport, Problem


def _stored(dataset) -> os.PathLike:
    """Keyed by the content fingerprint and the folder: a copy elsewhere gets its own report (and its own path in it)."""
    import hashlib

    where = hashlib.sha256(str(getattr(dataset, "root", "")).encode()).hexdigest()[:12]
    return cache_dir() / "checks" / f"{dataset.name}-{dataset.fingerprint()}-{where}.json"


def check(dataset, *, progress: bool = False, echo: Callable[[str], None] = print, reuse: bool = True) -> DataReport:
    """The dataset's report, from the store when its content is unchanged; stored after computing it."""
    path = _stored(dataset)
    if reuse and path.exists():
        return DataReport.from_json(path.read_text())
    if reuse:
        echo(f"checking dataset {dataset.name!r} (once per content; `kdbench data check` prints the report)")
    report = dataset.check(progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(report.to_json())
    os.replace(tmp, path)
    return report


def require_usable(dataset, *, skip_bad: bool, progress: bool = False,
                   echo: Callable[[str], None] = print) -> list[Problem]:
    """Refuse a dataset with problems, or with ``skip_bad`` leave out the items they name; returns those problems."""
    from ..contracts import Dataset

    if type(dataset).check is Dataset.check:  # generated in memory: nothing on disk that could be bad
        return []
    report = check(dataset, progress=progress, echo=echo)
    if report.usable:
        return []
    if not skip_bad:
        hint = "fix them, or pass --skip-bad to leave out the bad items" if report.skippable else "fix them first"
        raise KdbenchError(f"dataset {dataset.name!r} has {len(report.problems)} problem(s), listed above; {hint}",
                           details=report.render())
    if not report.skippable:
        raise KdbenchError(f"dataset {dataset.name!r} has problems that --skip-bad cannot leave out (marked [dataset] "
                           f"above); fix them first", details=report.render())
    bad = report.bad_items()
    dataset.skip(bad)
    empty = [name for name in ("train", "test") if name in dataset.splits and len(dataset.split(name)) == 0]
    if empty:
        raise KdbenchError(f"dataset {dataset.name!r}: leaving out the {len(bad)} bad item(s) leaves no items in the "
                           f"{' and '.join(empty)} split(s); fix the problems listed above", details=report.render())
    echo(f"--skip-bad: left out {len(bad)} item(s) of dataset {dataset.name!r} ({len(report.problems)} problem(s))")
    return report.problems
