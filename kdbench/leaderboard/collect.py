"""Reading a table: its sweep file's cells, resolved, and the FINISHED student runs the store holds of them.

A cell *is* its resolved config, so runs are matched to cells by their ``kdbench.config_hash`` tag; when one
config ran more than once, its newest FINISHED run counts. Each store is read in one ``mlflow.search_runs``
query (student runs, FINISHED, in the cells' experiments). A store that does not exist is refused, never
created: there is nothing in it to show.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import KdbenchError
from ..sweep.plan import PlannedCell, resolve_cells, stores
from ..sweep.spec import Sweep, load

#: a student run's final scores are tracked as final_<metric>
FINAL = "metrics.final_"
HASH = "tags.kdbench.config_hash"
OVERALL = ("accuracy", "mf1", "kappa")
PAPER_HEADER = ["group", "row", "metric", "value", "std"]
STUDENTS = "tags.`kdbench.role` = 'student' and attributes.status = 'FINISHED'"


class Reported(NamedTuple):
    """One number of the paper's CSV: its value and std as numbers, and as printed (shown as printed)."""

    value: float
    std: float | None
    text: str
    std_text: str


@dataclass
class Run:
    run_id: str
    uri: str
    #: the final scores, named without the ``final_`` prefix, as tracked (fractions)
    metrics: dict[str, float]


@dataclass
class Entry:
    """One row of the leaderboard: a (group, row) label, its cells (one per seed) and their finished runs."""

    group: str
    row: str
    cells: list[PlannedCell] = field(default_factory=list)
    runs: dict[int, Run] = field(default_factory=dict)  # seed → the newest FINISHED run of that cell

    @property
    def config(self):
        return self.cells[0].config

    @property
    def seeds(self) -> list[int]:
        return [p.cell.seed for p in self.cells]

    @property
    def baseline(self) -> bool:
        """A baseline row: its block says ``baseline = true``, or its distiller is ``baseline`` and its block
        names no row to compare with (``compare_to``)."""
        if any(p.cell.baseline for p in self.cells):
            return True
        return self.config.distiller.name == "baseline" and self.compare_to is None

    @property
    def compare_to(self) -> str | None:
        """The row label its block names with ``compare_to``, if any."""
        return next((p.cell.compare_to for p in self.cells if p.cell.compare_to), None)

    @property
    def label(self) -> str:
        return " / ".join(part for part in (self.group, self.row) if part)


@dataclass
class Board:
    """A table ready to aggregate: the sweep, its entries in file order (runs filled in by :func:`read`),
    the paper's numbers and where the leaderboard run itself is logged."""

    sweep: Sweep
    entries: list[Entry]
    #: (group, row, metric) → the paper's number, in the paper's units
    paper: dict[tuple[str, str, str], Reported]
    #: the store and experiment of the first cell: where the leaderboard run goes
    uri: str
    experiment: str
    #: dataset name → its plugin's class names (``Dataset.class_names``; empty when the data decides them)
    known_classes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: the classes of the per-class accuracy columns, in the dataset's order (set by :func:`read`)
    classes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.sweep.name

    @property
    def metrics(self) -> list[str]:
        """Every metric aggregated: accuracy, mf1, kappa and one acc_<class> per class."""
        return [*OVERALL, *(f"acc_{c}" for c in self.classes)]

    @property
    def columns(self) -> list[str]:
        """The metrics the table shows, from the sweep file's ``columns``."""
        shown: list[str] = []
        for column in self.sweep.spec.columns:
            shown += [f"acc_{c}" for c in self.classes] if column == "per_class" else [column]
        return shown

    def unmatched_paper(self) -> list[tuple[str, str]]:
        """(group, row) labels the paper's CSV has numbers for but the table has no entry for."""
        here = {(e.group, e.row) for e in self.entries}
        return sorted({(g, r) for g, r, _ in self.paper} - here)


def prepare(name_or_path: str, seeds: list[int] | None = None, cli_layer: dict[str, Any] | None = None) -> Board:
    """The sweep file read and resolved, the paper's CSV read, and every store the cells use checked (refused
    in one line if it does not exist); no run is read yet."""
    from ..plugins import plugins
    from ..runs import open_client
    from ..tracking import tracking_uri

    sweep = load(name_or_path, seeds)
    planned = resolve_cells(sweep, cli_layer or {}, plugins())
    paper = read_paper(sweep)
    for uri in stores(planned):
        open_client(uri)
    first = planned[0].config
    known = {name: tuple(getattr(plugins()["datasets"].get(name).cls, "class_names", ()))
             for name in dict.fromkeys(p.config.dataset.name for p in planned)}
    return Board(sweep, entries_of(planned), paper, tracking_uri(first.tracking.uri), first.tracking.experiment,
                 known)


def entries_of(planned: list[PlannedCell]) -> list[Entry]:
    """Cells grouped by their (group, row) label, in file order; a seed listed twice counts once."""
    by_label: dict[tuple[str, str], Entry] = {}
    for p in planned:
        entry = by_label.setdefault(p.cell.entry, Entry(*p.cell.entry))
        if p.cell.seed not in entry.seeds:
            entry.cells.append(p)
    return list(by_label.values())


def read(board: Board) -> Board:
    """Fill in each entry's runs (one query per store) and the class order of the per-class columns."""
    from ..tracking import tracking_uri

    for uri, experiments in stores([p for e in board.entries for p in e.cells]).items():
        frame, ids = query(uri, experiments)
        newest = newest_runs(frame)
        for entry in board.entries:
            for p in entry.cells:
                if tracking_uri(p.config.tracking.uri) != uri:
                    continue
                found = newest.get((ids.get(p.config.tracking.experiment), p.digest))
                if found is not None:
                    entry.runs[p.cell.seed] = Run(found["run_id"], uri, final_metrics(found))
    board.classes = class_order(board)
    return board


def query(uri: str, experiments: set[str]):
    """The FINISHED student runs of these experiments, newest first, in one ``mlflow.search_runs`` query; and
    the experiments' ids (experiments that do not exist yet hold no runs and are left out)."""
    import pandas as pd

    from ..tracking import import_mlflow

    mlflow = import_mlflow()
    client = mlflow.MlflowClient(uri)
    ids = {}
    for name in sorted(experiments):
        found = client.get_experiment_by_name(name)
        if found is not None and found.lifecycle_stage == "active":
            ids[name] = found.experiment_id
    if not ids:
        return pd.DataFrame(), ids
    mlflow.set_tracking_uri(uri)
    frame = mlflow.search_runs(experiment_names=sorted(ids), filter_string=STUDENTS, output_format="pandas",
                               order_by=["attributes.start_time DESC"])
    return frame, ids


def newest_runs(frame) -> dict[tuple[str, str], Any]:
    """(experiment id, config hash) → the newest run's row of the query's frame."""
    if frame.empty or HASH not in frame.columns:
        return {}
    frame = frame[frame[HASH].notna()].sort_values("start_time", ascending=False, kind="stable")
    newest = frame.drop_duplicates(["experiment_id", HASH])
    return {(row["experiment_id"], row[HASH]): row for _, row in newest.iterrows()}


def final_metrics(row) -> dict[str, float]:
    out = {}
    for column, value in row.items():
        if column.startswith(FINAL) and value is not None and not math.isnan(value):
            out[column[len(FINAL):]] = float(value)
    return out


def read_confusion(run: Run) -> dict | None:
    """A run's ``confusion_matrix.json`` ({class_names, matrix}), or None if it has none."""
    from ..tracking import download_artifact

    try:
        path = download_artifact(run.uri, run.run_id, "confusion_matrix.json")
        data = json.loads(Path(path).read_text())
    except (KdbenchError, OSError, ValueError):
        return None
    if not isinstance(data, dict) or not {"class_names", "matrix"} <= set(data):
        return None
    return data


def class_order(board: Board) -> list[str]:
    """The classes of the per-class columns: the table's datasets' own (``Dataset.class_names``, in label
    order), else those of each dataset's first ``confusion_matrix.json``; then any other class with a per-class
    accuracy in the runs or the paper's CSV (the paper's order, then by name)."""
    present = {m[4:] for e in board.entries for r in e.runs.values() for m in r.metrics if m.startswith("acc_")}
    paper = [m[4:] for (_, _, m) in board.paper if m.startswith("acc_")]
    order: list[str] = []
    for dataset, names in board.known_classes.items():
        if not names:
            runs = (r for e in board.entries if e.config.dataset.name == dataset for r in e.runs.values())
            confusion = next((c for c in map(read_confusion, runs) if c is not None), None)
            names = confusion["class_names"] if confusion else ()
        order += [c for c in names if c not in order]
    order += [c for c in paper if c not in order]
    return order + sorted(present - set(order))


def read_paper(sweep: Sweep) -> dict[tuple[str, str, str], Reported]:
    """The paper's numbers (``paper = "..."`` in the sweep file): a CSV with header group,row,metric,value,std."""
    path = sweep.paper_csv
    if path is None:
        return {}
    if not path.is_file():
        raise KdbenchError(f"sweep file {str(sweep.path)!r}: paper = {sweep.spec.paper!r} names {path}, which does "
                           f"not exist; fix the path (relative to the sweep file) or drop the line")
    out: dict[tuple[str, str, str], Reported] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != PAPER_HEADER:
            raise KdbenchError(f"{path}: the first line must be {','.join(PAPER_HEADER)} "
                               f"(found {','.join(header or []) or 'nothing'})")
        for number, line in enumerate(reader, start=2):
            if not any(part.strip() for part in line):
                continue
            if len(line) != len(PAPER_HEADER):
                raise KdbenchError(f"{path}, line {number}: {len(line)} fields, expected 5 ({','.join(PAPER_HEADER)})")
            group, row, metric, value, std = line
            if metric not in OVERALL and not (metric.startswith("acc_") and len(metric) > 4):
                raise KdbenchError(f"{path}, line {number}: unknown metric {metric!r} (accuracy, mf1, kappa or "
                                   f"acc_<class>)")
            try:
                out[(group, row, metric)] = Reported(float(value), float(std) if std.strip() else None,
                                                     value.strip(), std.strip())
            except ValueError:
                raise KdbenchError(f"{path}, line {number}: value {value!r} / std {std!r} is not a number") from None
    return out
