"""``python -m kdbench.sweep.worker``: one process of a local sweep's pool (one per GPU, or ``--max-parallel``).

It imports torch and the plugins once, then reads jobs from stdin, one JSON line each
(``{"job": {...}, "log": PATH}``), runs each with everything it prints going to that job's log file, and answers
each with one JSON outcome line on what was its stdout. It ends when stdin closes. If the sweep's process dies,
even by ``kill -9``, the kernel sends this process SIGTERM (Linux's parent-death signal), which ends the cell's
MLflow run KILLED with its checkpoint kept, so the next sweep resumes it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys

from .job import run_job

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == 1:  # the parent died before prctl took effect
            raise SystemExit(1)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def output_to(path: str):
    """Both stdout and stderr (Python's and the C level's: torch, MLflow) go to ``path`` meanwhile."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        try:
            yield log
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


def main() -> int:
    die_with_parent()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # Ctrl-C reaches the whole process group: end the run KILLED
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed outside a job goes to stderr, never into the answers
    try:
        from ..plugins import plugins

        plugins()  # loaded once, before the first job
        import mlflow  # noqa: F401  (every job tracks: its import is paid while the worker waits for work)
        for line in sys.stdin:
            request = json.loads(line)
            with output_to(request["log"]) as log:
                outcome = run_job(request["job"], echo=lambda message: print(message, file=log, flush=True))
            try:
                answers.write(json.dumps(outcome) + "\n")
            except OSError:  # the sweep is gone; the run was ended above, the next sweep sees it
                os._exit(1)  # not a normal exit: flushing the answers again would only fail again
            if outcome["status"] == "interrupted":
                return 130
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # stdin closed: the sweep is over, nothing to end KILLED
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
