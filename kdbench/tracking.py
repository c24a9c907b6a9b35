"""Tracking: where a run's params, metrics and artifacts go.

The engine talks to a :class:`Tracker`; :class:`MlflowTracker` is the real one (a run that always ends
FINISHED, FAILED or KILLED), :class:`MemoryTracker` keeps everything in dicts, for engine tests that need
no store. MLflow is imported lazily (it costs ~4 s), so ``kdbench list`` and friends stay fast.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_URI = "sqlite:///mlflow.db"


def tracking_uri(configured: str | None) -> str:
    """The configured URI, else $MLFLOW_TRACKING_URI, else MLflow 3's embedded SQLite default.

    A relative SQLite path is made absolute here: MLflow caches one store per URI string, so a
    relative one would keep pointing at the first working directory's file.
    """
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        uri = prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → MLflow params ``{"optimizer.lr": "0.001", ...}``."""
    out: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def source_commit() -> str | None:
    """The git commit of the kdbench checkout this code runs from, if it runs from one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@contextmanager
def tracked_run(uri: str, experiment: str, *, run_name: str | None = None, tags: dict[str, str] | None = None,
                run_id: str | None = None) -> Iterator[Any]:
    """Start (or, with ``run_id``, reopen) an MLflow run and end it with the status it deserves.

    KeyboardInterrupt (Ctrl-C, and SIGTERM, which the CLI turns into one) ends it KILLED, any other
    exception FAILED; the exception is re-raised either way.
    """
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # keep the store's set-up chatter off the console
    mlflow.set_tracking_uri(uri)
    if run_id is None:
        mlflow.set_experiment(experiment)
    try:
        run = mlflow.start_run(run_id=run_id, run_name=run_name, tags=tags)
    except mlflow.exceptions.MlflowException as error:
        if run_id is None:
            raise
        from .errors import KdbenchError

        raise KdbenchError(f"cannot reopen MLflow run {run_id} in {uri} ({str(error).splitlines()[0]}); "
                           f"use the tracking URI it was started with, or run without --resume") from None
    try:
        yield run
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


class Tracker:
    """What the engine records, and nothing more: one run at a time, opened with :meth:`run`."""

    def run(self, *, name: str, tags: dict[str, str], run_id: str | None = None):
        """A context manager: start (or, with ``run_id``, reopen) a run; yields its id; ends it as it ended."""
        raise NotImplementedError

    def log_params(self, params: dict[str, str]) -> None:
        raise NotImplementedError

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        raise NotImplementedError

    def log_dict(self, data: dict, artifact: str) -> None:
        raise NotImplementedError

    def log_file(self, path: Path, artifact_dir: str) -> None:
        raise NotImplementedError

    def log_confusion(self, confusion, class_names, title: str) -> None:
        """The confusion matrix as ``confusion_matrix.json`` and a PNG figure."""
        self.log_dict({"class_names": list(class_names), "matrix": confusion.tolist()}, "confusion_matrix.json")


class MlflowTracker(Tracker):
    """Runs in an MLflow store (``uri``), in experiment ``experiment``."""

    def __init__(self, uri: str, experiment: str) -> None:
        self.uri, self.experiment = uri, experiment

    def run(self, *, name, tags, run_id=None):
        @contextmanager
        def opened():
            with tracked_run(self.uri, self.experiment, run_name=name, tags=tags if run_id is None else None,
                             run_id=run_id) as active:
                yield active.info.run_id
        return opened()

    def log_params(self, params):
        import mlflow

        mlflow.log_params(params)

    def log_metrics(self, metrics, step=None):
        import mlflow

        mlflow.log_metrics(metrics, step=step)

    def log_dict(self, data, artifact):
        import mlflow

        mlflow.log_dict(data, artifact)

    def log_file(self, path, artifact_dir):
        import mlflow

        mlflow.log_artifact(str(path), artifact_path=artifact_dir)

    def log_confusion(self, confusion, class_names, title):
        super().log_confusion(confusion, class_names, title)
        log_confusion_matrix(confusion, class_names, title)


class MemoryTracker(Tracker):
    """Keeps runs in memory: ``runs[run_id]`` holds status, tags, params, metrics (``{name: [(step, value)]}``),
    dicts and file names. For tests of the engine that need no MLflow store."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self._current: dict[str, Any] | None = None

    def run(self, *, name, tags, run_id=None):
        @contextmanager
        def opened():
            if run_id is None:
                rid = f"memory-{len(self.runs)}"
                self.runs[rid] = {"name": name, "tags": dict(tags), "params": {}, "metrics": {}, "dicts": {},
                                  "files": [], "status": "RUNNING"}
            else:
                rid = run_id
                self.runs[rid]["status"] = "RUNNING"
            self._current = self.runs[rid]
            try:
                yield rid
            except KeyboardInterrupt:
                self._current["status"] = "KILLED"
                raise
            except BaseException:
                self._current["status"] = "FAILED"
                raise
            else:
                self._current["status"] = "FINISHED"
            finally:
                self._current = None
        return opened()

    def log_params(self, params):
        self._current["params"].update(params)

    def log_metrics(self, metrics, step=None):
        for key, value in metrics.items():
            self._current["metrics"].setdefault(key, []).append((step, float(value)))

    def log_dict(self, data, artifact):
        self._current["dicts"][artifact] = data

    def log_file(self, path, artifact_dir):
        self._current["files"].append(f"{artifact_dir}/{Path(path).name}")


def log_confusion_matrix(confusion, class_names, title: str, artifact: str = "confusion_matrix.png") -> None:
    """Log the confusion matrix of the active MLflow run as a PNG figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    size = max(4.0, 0.45 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=90 if len(class_names) > 8 else 0)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(class_names) <= 12:
        peak = confusion.max() if confusion.size else 0
        for (i, j), value in __import__("numpy").ndenumerate(confusion):
            ax.text(j, i, str(value), ha="center", va="center",
                    color="white" if peak and value > peak / 2 else "black")
    fig.tight_layout()
    mlflow.log_figure(fig, artifact)
    plt.close(fig)
