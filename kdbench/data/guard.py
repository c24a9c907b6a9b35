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
from .clips import FIELDS
from .report import DataReport, Problem


def stored_report(dataset, fields: tuple[str, ...]) -> os.PathLike:
    """Keyed by the content fingerprint, the folder and the fields checked: a copy elsewhere gets its own report
    (and its own path in it), and a teacher-only check is not taken for a full one."""
    import hashlib

    where = hashlib.sha256(f"{getattr(dataset, 'root', '')}|{','.join(fields)}".encode()).hexdigest()[:12]
    return cache_dir() / "checks" / f"{dataset.name}-{dataset.fingerprint()}-{where}.json"


def check(dataset, *, fields: tuple[str, ...] = FIELDS, progress: bool = False,
          echo: Callable[[str], None] = print, reuse: bool = True) -> DataReport:
    """The dataset's report for what ``fields`` need, from the store when its content is unchanged; stored
    after computing it."""
    path = stored_report(dataset, fields)
    if reuse and path.exists():
        return DataReport.from_json(path.read_text())
    if reuse:
        echo(f"checking dataset {dataset.name!r} (once per content; `kdbench data check` prints the report)")
    report = dataset.check(fields=fields, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(report.to_json())
    os.replace(tmp, path)
    return report


def require_usable(dataset, *, skip_bad: bool, fields: tuple[str, ...] = FIELDS, progress: bool = False,
                   echo: Callable[[str], None] = print) -> list[Problem]:
    """Refuse a dataset with problems in what ``fields`` need, or with ``skip_bad`` leave out the items they
    name; returns those problems. A dataset held in memory has nothing on disk that could be bad."""
    from ..contracts import FileDataset

    if not isinstance(dataset, FileDataset):
        return []
    report = check(dataset, fields=fields, progress=progress, echo=echo)
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
