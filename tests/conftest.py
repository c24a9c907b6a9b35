"""Shared fixtures: an isolated working directory with a ready MLflow store, and CLI runners.

MLflow 3 needs ~10 s to create a SQLite store, and processes creating one at once race, so the store is
created once per test session and copied into each test's directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from kdbench.cli import main

TINY = """
epochs = 2
batch_size = 16

[dataset]
name = "synthetic"
train_size = 60
test_size = 30

[teacher_training]
epochs = 1
batch_size = 32
"""


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    import mlflow

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()  # creates and migrates the schema
    return path


@pytest.fixture(scope="session")
def session_store_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('default-store') / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def default_store(session_store_uri, monkeypatch):
    """The engine checks (and opens) the tracking store while preparing a run, even for tests that track
    into memory: those get one store per session (created by the first that needs it), never ./mlflow.db."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", session_store_uri)


@dataclass
class Workdir:
    path: Path

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.path / 'mlflow.db'}"

    def runs(self):
        import mlflow

        client = mlflow.MlflowClient(self.uri)
        experiments = [e.experiment_id for e in client.search_experiments()]
        return client.search_runs(experiments) if experiments else []


@pytest.fixture
def workdir(tmp_path, monkeypatch, mlflow_template) -> Workdir:
    """A fresh working directory (cwd) holding a copy of the MLflow store and its own teacher cache."""
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KDBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "tiny.toml").write_text(TINY)
    return Workdir(tmp_path)


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run ``kdbench ARGS`` in this process (fast: torch and MLflow are imported once)."""

    def invoke(*args: str) -> Result:
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def run_process(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300) -> Result:
    """Run ``kdbench ARGS`` as a real process, as a user would."""
    full_env = {**os.environ, **(env or {})}
    done = subprocess.run([sys.executable, "-m", "kdbench.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for modules of many tiny forward passes: on a busy 2-core machine two OpenMP
    threads mostly wait on each other (seen: a tiny forward pass 50x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
