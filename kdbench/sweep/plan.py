"""Planning a sweep: every cell resolved to its run config and hash, and what the store already holds.

Everything refusable is refused here, before any cell starts: an unknown plugin or option in any cell, a store
that cannot work. The store and the experiments are created here, in the sweep's own process, so the cells'
processes never race to create a fresh SQLite store. What is done is read in one query.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import RunConfig, config_hash, resolve
from ..errors import ConfigError, KdbenchError
from .spec import Cell, Sweep


@dataclass
class PlannedCell:
    cell: Cell
    config: RunConfig
    digest: str
    #: "done" (a FINISHED run of this config hash is in the store), "resume" (a checkpoint is waiting), "new"
    state: str = "new"
    run_id: str | None = None

    @property
    def name(self) -> str:
        c = self.config
        return f"{c.distiller.name} {c.dataset.name} {c.teacher.name}→{c.student.name} seed {c.seed}"

    @property
    def checkpoint(self) -> Path:
        return Path(self.config.output_dir) / self.digest / "checkpoint.pt"

    def payload(self) -> dict[str, Any]:
        """What a worker needs: the resolved config (it resolves to the same hash anywhere)."""
        return self.config.model_dump(mode="json")


def resolve_cells(sweep: Sweep, cli_layer: dict[str, Any], plugins) -> list[PlannedCell]:
    planned = []
    for cell in sweep.cells:
        try:
            config = resolve([*cell.layers, cli_layer], plugins)
        except KdbenchError as error:
            where = " / ".join(part for part in (cell.group, cell.row) if part)
            raise type(error)(f"sweep file {str(sweep.path)!r}, cell {where} (seed {cell.seed}): {error}") from None
        planned.append(PlannedCell(cell, config, config_hash(config)))
    by_hash: dict[str, PlannedCell] = {}
    for p in planned:
        if p.digest in by_hash and by_hash[p.digest].cell.entry != p.cell.entry:
            other = by_hash[p.digest].cell
            raise ConfigError(f"sweep file {str(sweep.path)!r}: cells {other.group}/{other.row} and "
                              f"{p.cell.group}/{p.cell.row} are the same run (config {p.digest}); "
                              f"make them differ or drop one")
        by_hash[p.digest] = p
    return planned


def stores(planned: list[PlannedCell]) -> dict[str, set[str]]:
    """Tracking URI → experiment names the cells track into."""
    from ..tracking import tracking_uri

    out: dict[str, set[str]] = {}
    for p in planned:
        out.setdefault(tracking_uri(p.config.tracking.uri), set()).add(p.config.tracking.experiment)
    return out


def open_stores(planned: list[PlannedCell]) -> None:
    """Create (or check) every store and experiment the cells use, in this process, before any cell starts."""
    from ..tracking import check_store, experiment_id

    for uri, experiments in stores(planned).items():
        check_store(uri)
        for name in sorted(experiments):
            experiment_id(uri, name)


def student_runs(uri: str, experiments: set[str]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """In one ``mlflow.search_runs`` query: config hash → the newest FINISHED student run, and config hash →
    the student runs still marked RUNNING."""
    from ..tracking import import_mlflow

    mlflow = import_mlflow()
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=sorted(experiments), output_format="list",
                              filter_string="tags.`kdbench.role` = 'student'", order_by=["attributes.start_time DESC"])
    done: dict[str, str] = {}
    running: dict[str, list[str]] = {}
    for run in runs:
        digest = run.data.tags.get("kdbench.config_hash")
        if digest and run.info.status == "FINISHED":
            done.setdefault(digest, run.info.run_id)
        elif digest and run.info.status == "RUNNING":
            running.setdefault(digest, []).append(run.info.run_id)
    return done, running


def mark_done(planned: list[PlannedCell], *, close_stale: bool = False) -> list[str]:
    """Set each cell's state: done (FINISHED run in its store), resume (a checkpoint waits) or new. With
    ``close_stale``, a pending cell's runs left RUNNING by a process that is gone (a crash, a ``kill -9``
    before the run could be ended) are marked KILLED; returns their ids."""
    from ..tracking import close_if_stale, tracking_uri

    closed = []
    for uri, experiments in stores(planned).items():
        done, running = student_runs(uri, experiments)
        for p in planned:
            if tracking_uri(p.config.tracking.uri) != uri:
                continue
            if p.digest in done:
                p.state, p.run_id = "done", done[p.digest]
                continue
            if p.checkpoint.exists():
                p.state = "resume"
            if close_stale:
                closed += [run_id for run_id in running.get(p.digest, []) if close_if_stale(uri, run_id)]
    return closed


#: the parts of a config that decide its teacher's weights and stored outputs
TEACHER_PARTS = ("dataset", "teacher", "teacher_training", "seed", "skip_bad", "direction")


def teacher_key(config: RunConfig) -> str:
    """Cells with equal keys share one teacher: trained (or loaded) and its outputs stored once, before them."""
    payload = config.model_dump(include=set(TEACHER_PARTS), mode="json")
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
