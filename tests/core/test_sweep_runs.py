"""Sweeps for real: worker processes, one store, MLflow's real SQLite store (and a real tracking server).

Each test runs `kdbench sweep` as a user would, in a subprocess, on the tiny synthetic settings.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

from tests.conftest import run_process

TINY_SET = """
[set]
epochs = 2
batch_size = 16
"dataset.train_size" = 60
"dataset.test_size" = 30
"teacher_training.epochs" = 1
"teacher_training.batch_size" = 32
"""


def student_runs(workdir, uri=None):
    import mlflow

    client = mlflow.MlflowClient(uri or workdir.uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=1000) if experiments else []
    return [r for r in runs if r.data.tags.get("kdbench.role") == "student"]


def by_hash(runs) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in runs:
        out.setdefault(r.data.tags["kdbench.config_hash"], []).append(r)
    return out


def test_a_sweep_runs_every_cell_once_and_a_failing_cell_stops_no_other(workdir):
    (workdir.path / "s.toml").write_text("""
[grid]
dataset = "synthetic"
distiller = ["baseline", "kd", "pkt"]
seed = [0, 1]
[[cells]]
row = "broken"
dataset = "synthetic"
distiller = "kd"
seed = 0
set = { "teacher.checkpoint" = "no-such-teacher.pt" }
""" + TINY_SET)
    first = run_process("sweep", "s.toml", "--max-parallel", "2", cwd=workdir.path)
    assert first.code == 1, first.err
    assert "done 6 / skipped 0 (already finished) / failed 1" in first.out
    failures = [line for line in first.err.splitlines() if "failed:" in line]
    assert len(failures) == 1 and "no-such-teacher.pt" in failures[0] and "Traceback" not in first.err
    starts = [line for line in first.out.splitlines() if "] start " in line and "] start   teacher" not in line]
    assert len(starts) == 7  # one line per cell as it starts ...
    assert sum("] done " in line and "accuracy" in line for line in first.out.splitlines()) == 6  # ... and ends
    runs = student_runs(workdir)
    assert Counter(r.info.status for r in runs) == {"FINISHED": 6}  # the broken cell failed before any run
    assert len(by_hash(runs)) == 6
    # two shared teachers (seeds 0 and 1), each trained once, before the cells fanned out
    teachers = [r for r in workdir.runs() if r.data.tags.get("kdbench.role") == "teacher"]
    assert len(teachers) == 2 and {r.info.status for r in teachers} == {"FINISHED"}

    again = run_process("sweep", "s.toml", "--max-parallel", "2", cwd=workdir.path)
    assert again.code == 1
    assert "7 cells, 6 already done, 1 to run" in again.out
    assert "done 0 / skipped 6 (already finished) / failed 1" in again.out
    assert len(student_runs(workdir)) == 6


def children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            out += [int(p) for p in handle.read().split()]
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_sweep_killed_with_kill_9_runs_only_the_missing_cells_when_started_again(workdir):
    (workdir.path / "s.toml").write_text("""
[grid]
dataset = "synthetic"
distiller = ["baseline", "kd"]
seed = [0, 1, 2]
""" + TINY_SET.replace("epochs = 2", "epochs = 40"))
    # 40 epochs (≈ 3 s a cell): a cell seen midway must still be midway when killed; at 6 (≈ 0.5 s) it could
    # finish between the poll that saw it and the kill, leaving no run KILLED
    sweep = subprocess.Popen([sys.executable, "-m", "kdbench.cli", "sweep", "s.toml", "--max-parallel", "2"],
                             cwd=workdir.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # until a cell is done and another is midway, past its first checkpoint
        runs = student_runs(workdir)
        midway = [r for r in runs if r.info.status == "RUNNING" and (workdir.path / "kdbench-runs" /
                  r.data.tags["kdbench.config_hash"] / "checkpoint.pt").exists()]
        if any(r.info.status == "FINISHED" for r in runs) and midway:
            break
        time.sleep(0.2)
    else:
        sweep.kill()
        raise AssertionError(f"the sweep never had a finished and a checkpointed running cell at once: {runs}")
    workers = children(sweep.pid)
    assert workers
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    while time.monotonic() < deadline and any(alive(pid) for pid in workers):  # the kernel sends them SIGTERM
        time.sleep(0.3)
    assert not any(alive(pid) for pid in workers)
    before = student_runs(workdir)
    finished_before = {h for h, rs in by_hash(before).items() if any(r.info.status == "FINISHED" for r in rs)}
    # the cells midway ended KILLED (a run caught while MLflow was still creating it may stay RUNNING: the
    # next sweep closes it, see below)
    assert sum(r.info.status in ("KILLED", "RUNNING") for r in before) >= 1
    assert 1 <= len(finished_before) < 6

    again = run_process("sweep", "s.toml", "--max-parallel", "2", cwd=workdir.path)
    assert again.code == 0, again.err
    assert f"6 cells, {len(finished_before)} already done, {6 - len(finished_before)} to run" in again.out
    after = by_hash(student_runs(workdir))
    assert len(after) == 6
    for digest, runs in after.items():
        finished = [r for r in runs if r.info.status == "FINISHED"]
        assert len(finished) == 1, digest  # no cell ran twice to the end
        assert not any(r.info.status == "RUNNING" for r in runs)
    for run in midway:  # the checkpointed cell continued in its own MLflow run
        assert [r.info.run_id for r in after[run.data.tags["kdbench.config_hash"]]] == [run.info.run_id]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_parallel_cells_against_an_mlflow_server_all_end_finished(workdir, tmp_path_factory):
    """The lab set-up of docs/sweeps.md: `mlflow server` on a SQLite backend, workers given its http:// URI.
    The workers are also given a (simulated) GPU each: ``--gpus 0,1`` on this CPU machine, where device
    "auto" falls back to the CPU, still gives each worker its own ``CUDA_VISIBLE_DEVICES``."""
    server_dir = tmp_path_factory.mktemp("server")
    port = free_port()
    mlflow_bin = os.path.join(os.path.dirname(sys.executable), "mlflow")
    server = subprocess.Popen([mlflow_bin, "server", "--backend-store-uri", f"sqlite:///{workdir.path / 'mlflow.db'}",
                               "--artifacts-destination", str(server_dir / "artifacts"), "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"], cwd=server_dir,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        (workdir.path / "s.toml").write_text("""
[grid]
dataset = "synthetic"
distiller = ["baseline", "kd"]
seed = [0, 1]
""" + TINY_SET)
        result = run_process("sweep", "s.toml", "--gpus", "0,1", "--tracking-uri", uri, cwd=workdir.path)
        assert result.code == 0, result.err
        runs = student_runs(workdir, uri)
        assert Counter(r.info.status for r in runs) == {"FINISHED": 4} and len(by_hash(runs)) == 4
        slots = {line.rsplit(" on ", 1)[1] for line in result.out.splitlines() if "] start " in line}
        assert slots == {"gpu 0", "gpu 1"}
        assert {r.data.tags.get("kdbench.cuda_visible_devices") for r in runs} == {"0", "1"}
        again = run_process("sweep", "s.toml", "--tracking-uri", uri, cwd=workdir.path)
        assert "4 cells, 4 already done, 0 to run" in again.out
    finally:
        server.terminate()
        server.wait(timeout=30)
