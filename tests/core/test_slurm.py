"""A requeued SLURM job and its run: it takes over its own run left RUNNING on another node, and its requeue
signal never breaks a checkpoint save. (A real requeue, through submitit, is tested with the launcher.)"""

import os
import signal
import socket

from kdbench.engine.checkpoint import load, save_atomic, signals_deferred


def students(workdir):
    return [r for r in workdir.runs() if r.data.tags.get("kdbench.role") == "student"]


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


def test_the_requeue_signal_waits_for_a_checkpoint_save(tmp_path):
    received = []
    previous = signal.signal(signal.SIGUSR2, lambda *_: received.append("during" if saving else "after"))
    try:
        saving = True
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGUSR2)
            save_atomic({"epoch": 3}, tmp_path / "ck.pt")
            saving = False
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert received == ["after"] and load(tmp_path / "ck.pt") == {"epoch": 3}
