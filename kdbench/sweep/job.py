"""One unit of a sweep's work, as any launcher runs it: a cell (one student run) or a shared teacher stage.

A job is a JSON-able dict: ``{"kind": "cell" | "teacher", "config": <resolved run config>, "nproc": K}``.
:func:`run_job` does it in this process (or, for a cell with ``nproc > 1``, in ``K`` torchrun ranks) and
returns an outcome dict that never carries a traceback: ``status`` is ``done``, ``failed`` (with a one-line
``reason``) or ``interrupted``. The full traceback of an unexpected error goes to the job's log.

Cells always prepare with ``resume=True``: a cell with a checkpoint continues it, in the same MLflow run,
whether the sweep was killed, restarted or requeued by SLURM.
"""

from __future__ import annotations

import json
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import KdbenchError, first_line


def run_job(job: dict[str, Any], *, echo=print, progress: bool = False) -> dict[str, Any]:
    started = time.monotonic()
    try:
        outcome = _run(job, echo=echo, progress=progress)
    except KeyboardInterrupt:
        return {"status": "interrupted", "reason": "interrupted", "seconds": time.monotonic() - started}
    except KdbenchError as error:
        echo(f"kdbench: error: {error}")
        outcome = {"status": "failed", "reason": first_line(error)}
    except Exception as error:  # a bug or a library's failure: the cell fails, the sweep goes on
        echo(traceback.format_exc())
        outcome = {"status": "failed", "reason": f"{type(error).__name__}: {first_line(error)}"}
    return {**outcome, "seconds": time.monotonic() - started}


def _run(job: dict[str, Any], *, echo, progress: bool) -> dict[str, Any]:
    from ..config import resolve
    from ..plugins import plugins

    nproc = int(job.get("nproc") or 1)
    if job["kind"] == "cell" and nproc > 1:
        return _run_distributed(job, nproc, echo)
    from ..engine import fit, fit_teacher_stage, prepare, prepare_teacher_stage
    from ..engine.fit import default_tracker

    config = resolve([job["config"]], plugins())
    if job["kind"] == "teacher":
        prepared = prepare_teacher_stage(config, plugins(), progress=progress, echo=echo)   # no student needed
        fit_teacher_stage(prepared, default_tracker(config), progress=progress, echo=echo)
        return {"status": "done", "teacher": f"{prepared.source.kind}:{prepared.source.location}"}
    prepared = prepare(config, plugins(), resume=True, progress=progress, echo=echo)
    result = fit(prepared, progress=progress, echo=echo)
    return {"status": "done", "run_id": result.run_id, "config_hash": result.config_hash,
            "metrics": {k: v for k, v in result.scores.as_dict().items() if not k.startswith("acc_")}}


def _run_distributed(job: dict[str, Any], nproc: int, echo) -> dict[str, Any]:
    from ..engine.distributed import run_distributed

    with tempfile.TemporaryDirectory(prefix="kdbench-cell-") as tmp:
        config_json, result_json = Path(tmp) / "config.json", Path(tmp) / "result.json"
        config_json.write_text(json.dumps(job["config"]))
        return run_distributed(config_json, result_json, nproc, log=echo)
