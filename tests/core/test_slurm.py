"""The SLURM launcher, run with submitit's local executor (``--slurm-local``; there is no cluster here): the
same pickled jobs, signal handlers and requeues as on SLURM, as local processes. Nothing is mocked: a
preemption is submitit's own signal sent to the job's process, a crash is a SIGKILL."""

import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

from kdbench.engine.checkpoint import load

TINY_SETS = ("--set", "dataset.train_size=60", "--set", "dataset.test_size=30", "--set", "epochs=2",
             "--set", "batch_size=16", "--set", "teacher_training.epochs=1", "--set", "teacher_training.batch_size=32")
TWO_CELLS = """
[grid]
dataset = "synthetic"
distiller = ["kd", "baseline"]
"""
ONE_CELL = """
[grid]
dataset = "synthetic"
distiller = "kd"
"""


def students(workdir):
    return [r for r in workdir.runs() if r.data.tags.get("kdbench.role") == "student"]


def job_processes(folder: Path) -> list[int]:
    """The pids of the running job processes of submitit's local executor whose job files are in ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in argv and str(folder).encode() in argv:
            found.append(int(entry.name))
    return found


def in_background(action):
    """Run ``action`` in a thread while the sweep runs in the test's thread; ``errors`` gets what it raised."""
    errors: list[BaseException] = []

    def guarded():
        try:
            action()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    thread = threading.Thread(target=guarded, daemon=True)
    thread.start()
    return thread, errors


def wait_for(predicate, what: str, seconds: float = 180):
    deadline = time.monotonic() + seconds
    while not (found := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.1)
    return found


def test_a_sweep_runs_as_job_arrays_and_a_second_run_starts_nothing(workdir, cli):
    (workdir.path / "sweep.toml").write_text(TWO_CELLS)
    args = ("sweep", "sweep.toml", "--launcher", "slurm", "--slurm-local", "--slurm-folder", "jobs", *TINY_SETS)
    first = cli(*args)
    assert first.code == 0, first.out + first.err
    assert "2 cells, 0 already done, 2 to run" in first.out and "done 2 / skipped 0" in first.out
    runs = students(workdir)
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    assert {r.data.tags["kdbench.distiller"] for r in runs} == {"kd", "baseline"}
    # the shared teacher, then each cell, in a job of its own; each cell's run names its job
    started = dict(re.findall(r"start +(\S+) .*  on local job (\d+)", first.out))
    assert set(started) == {"teacher", "kd", "baseline"}, first.out
    host = socket.gethostname()
    assert {r.data.tags["kdbench.distiller"]: r.data.tags["kdbench.slurm_job"] for r in runs} == \
        {d: f"local {started[d]} on {host}" for d in ("kd", "baseline")}
    assert len(list((workdir.path / "jobs").glob("*_submitted.pkl"))) == 3

    again = cli(*args)
    assert again.code == 0 and "2 cells, 2 already done, 0 to run" in again.out and " start " not in again.out
    assert len(list((workdir.path / "jobs").glob("*_submitted.pkl"))) == 3
    assert len(students(workdir)) == 2


def test_a_preempted_cell_is_requeued_and_continues_its_run(workdir, cli):
    """submitit's preemption signal (SIGUSR2, what its local executor sends a job before its time limit, and SLURM
    with ``--signal``) reaches the cell mid-training: submitit calls the job's checkpoint() and runs it again
    in a new process, which resumes the cell's checkpoint in the same MLflow run."""
    (workdir.path / "sweep.toml").write_text(ONE_CELL)
    folder = workdir.path / "jobs"
    seen = {}

    def preempt():
        checkpoints = workdir.path / "kdbench-runs"
        path = wait_for(lambda: next(checkpoints.rglob("checkpoint.pt"), None), "the first checkpoint")
        wait_for(lambda: load(path)["epoch"] >= 2, "epoch 2")
        seen["run_id"] = load(path)["run_id"]
        [seen["pid"]] = job_processes(folder)
        os.kill(seen["pid"], signal.SIGUSR2)

    thread, errors = in_background(preempt)
    done = cli("sweep", "sweep.toml", "--launcher", "slurm", "--slurm-local", "--slurm-folder", str(folder),
               *TINY_SETS, "--set", "epochs=12")
    thread.join(timeout=5)
    assert not errors and not thread.is_alive(), errors
    assert done.code == 0, done.out + done.err
    [job] = re.findall(r"on local job (\d+)", done.out)
    log = (folder / f"{job}_0_log.out").read_text()  # both incarnations' output, and submitit's own lines
    assert "this job is preempted" in log and "Calling checkpoint method" in log and f"Requeued job {job}" in log
    [resumed] = re.findall(rf"resuming run {seen['run_id']} after epoch (\d+)", log)

    [run] = students(workdir)
    assert run.info.run_id == seen["run_id"] and run.info.status == "FINISHED"
    assert run.data.tags["kdbench.pid"] != str(seen["pid"])  # reopened by the job's next process
    assert run.data.tags["kdbench.slurm_job"] == f"local {job} on {socket.gethostname()}"
    from mlflow import MlflowClient

    steps = sorted(m.step for m in MlflowClient(workdir.uri).get_metric_history(run.info.run_id, "accuracy"))
    before = int(resumed)  # epochs checkpointed before the preemption: logged once, never trained again
    assert before >= 2 and steps[:before] == list(range(1, before + 1))
    assert sorted(set(steps)) == list(range(1, 13)) and len(steps) <= 13  # at most the epoch cut short, twice


def test_a_job_killed_on_the_cluster_fails_its_cell_naming_its_log(workdir, cli):
    (workdir.path / "sweep.toml").write_text(ONE_CELL)
    folder = workdir.path / "jobs"

    def kill():
        [pid] = wait_for(lambda: job_processes(folder), "the job's process")
        os.kill(pid, signal.SIGKILL)

    thread, errors = in_background(kill)
    done = cli("sweep", "sweep.toml", "--launcher", "slurm", "--slurm-local", "--slurm-folder", str(folder),
               *TINY_SETS)
    thread.join(timeout=5)
    assert not errors and not thread.is_alive(), errors
    assert done.code == 1 and "done 0 / skipped 0 (already finished) / failed 1" in done.out
    [job] = re.findall(r"on local job (\d+)", done.out)
    [reason] = [line for line in done.err.splitlines() if "failed:" in line]
    assert reason.endswith(f"its local job {job} ended without an outcome; see {folder}/{job}_0_log.err"), reason
    assert "Traceback" not in done.out + done.err


def test_a_requeued_job_takes_over_its_run_left_running_on_another_node(workdir, cli, monkeypatch):
    """A job killed outright (a preemption past its grace time, a node failure) leaves its run RUNNING, tagged
    with the node it ran on. The same SLURM job, requeued on another node, resumes it; another job may not."""
    from mlflow import MlflowClient

    from kdbench.tracking import process_tags

    args = ("run", "--distiller", "kd", "--dataset", "synthetic", "--config", "tiny.toml", "--no-progress")
    assert cli(*args).code == 0
    [run] = students(workdir)
    client = MlflowClient(workdir.uri)
    client.update_run(run.info.run_id, status="RUNNING")  # as the killed job left it, on node-07
    for key, value in {"kdbench.host": "node-07", "kdbench.pid": "4321", "kdbench.slurm_job": "777_3"}.items():
        client.set_tag(run.info.run_id, key, value)

    monkeypatch.setenv("SLURM_JOB_ID", "780")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "777")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")  # another task of the array
    other = cli(*args, "--resume")
    assert other.code != 0 and "which is still running (pid 4321 on host node-07)" in other.err
    assert len(other.err.strip().splitlines()) == 1

    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")  # the same task, requeued
    assert process_tags()["kdbench.slurm_job"] == "777_3"
    same = cli(*args, "--resume")
    assert same.code == 0, same.err
    assert f"resuming run {run.info.run_id} after epoch 2" in same.err and "is now marked KILLED" in same.err
    [after] = students(workdir)
    assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
    assert after.data.tags["kdbench.host"] == socket.gethostname() and after.data.tags["kdbench.slurm_job"] == "777_3"
    assert "ran batch job 777_3 before it was requeued" in after.data.tags["kdbench.closed"]


def test_bad_slurm_options_are_one_line(workdir, cli, monkeypatch):
    (workdir.path / "sweep.toml").write_text(ONE_CELL)
    monkeypatch.setenv("PATH", str(workdir.path / "no-slurm-here"))  # so no sweep is submitted to a real cluster
    for extra, message in ((("--slurm-local", "--slurm-time", "0"), "--slurm-time 0: give the minutes"),
                           ((), "SLURM's sbatch is not on this machine's PATH")):
        result = cli("sweep", "sweep.toml", "--launcher", "slurm", *extra, *TINY_SETS)
        assert result.code != 0 and message in result.err, result.err
        assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
