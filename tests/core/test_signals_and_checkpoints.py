"""A real process stopped by SIGTERM ends its MLflow run KILLED; checkpoints are never half-written."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from kdbench.engine.checkpoint import load, load_state_strict, save_atomic
from kdbench.errors import KdbenchError


def test_sigterm_marks_the_run_killed_and_keeps_the_checkpoint(workdir):
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdbench", "run", "--distiller", "kd", "--dataset", "synthetic", "--config",
         "tiny.toml", "--epochs", "200", "--no-progress"],
        cwd=workdir.path, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    lines = []
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # wait until the student has finished an epoch
        lines.append(line)
        if line.startswith("epoch 2/200") or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(lines) + rest
    assert "kdbench: interrupted" in rest and "Traceback" not in rest
    [student] = [r for r in workdir.runs() if r.data.tags.get("kdbench.role") == "student"]
    assert student.info.status == "KILLED"
    [ckpt] = list((workdir.path / "kdbench-runs").rglob("checkpoint.pt"))
    assert load(ckpt)["epoch"] >= 1  # the signal may land while epoch 2 is being saved
    assert not list((workdir.path / "kdbench-runs").rglob("*.tmp"))


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


def test_failed_save_leaves_the_old_checkpoint(tmp_path):
    path = tmp_path / "ck.pt"
    save_atomic({"epoch": 1}, path)
    with pytest.raises(RuntimeError):
        save_atomic({"epoch": 2, "bad": Unpicklable()}, path)
    assert load(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_unreadable_checkpoint_is_one_line(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(KdbenchError, match="is unreadable"):
        load(tmp_path / "junk.pt")


def test_strict_loading_names_the_first_mismatch():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    state = model.state_dict()
    wrong_shape = {**state, "1.weight": torch.zeros(2, 5)}
    with pytest.raises(KdbenchError, match=r"key '1.weight' has shape \(2, 5\).*expects \(2, 4\)"):
        load_state_strict(model, wrong_shape, "teacher")
    missing = {k: v for k, v in state.items() if k != "0.bias"}
    with pytest.raises(KdbenchError, match="key '0.bias' is missing"):
        load_state_strict(model, missing, "teacher")
    with pytest.raises(KdbenchError, match="unexpected key 'extra'"):
        load_state_strict(model, {**state, "extra": torch.zeros(1)}, "teacher")


def test_a_run_killed_hard_is_closed_when_its_checkpoint_is_overwritten(workdir, mlflow_template):
    args = [sys.executable, "-m", "kdbench", "run", "--distiller", "kd", "--dataset", "synthetic", "--config",
            "tiny.toml", "--no-progress", "--tracking-uri", workdir.uri]
    proc = subprocess.Popen([*args, "--epochs", "200"], cwd=workdir.path, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # wait until a student checkpoint exists
        if line.startswith("epoch 2/200") or time.monotonic() > deadline:
            break
    proc.kill()  # kill -9: no chance to end its MLflow run
    proc.wait(timeout=60)
    [dead] = [r for r in workdir.runs() if r.data.tags.get("kdbench.role") == "student"]
    assert dead.info.status == "RUNNING"
    # the same configuration again, without --resume: it overwrites that checkpoint, so it closes the dead run
    again = subprocess.Popen([*args, "--epochs", "200"], cwd=workdir.path, stderr=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    seen = []
    for line in again.stderr:
        seen.append(line)
        if line.startswith("epoch 1/200") or time.monotonic() > deadline + 120:
            break
    # while it runs, a third copy is refused: two processes would write one checkpoint
    third = subprocess.run([*args, "--epochs", "200"], cwd=workdir.path, capture_output=True, text=True,
                           env=os.environ.copy(), timeout=300)
    assert third.returncode == 2 and "which is still running (pid" in third.stderr and "Traceback" not in third.stderr
    # ... and so is one that resumes it against another store: the checkpoint names the store its run lives in
    shutil.copy(mlflow_template, workdir.path / "other.db")
    elsewhere = subprocess.run([*args[:-1], f"sqlite:///{workdir.path / 'other.db'}", "--epochs", "200", "--resume"],
                               cwd=workdir.path, capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert elsewhere.returncode == 2 and "which is still running (pid" in elsewhere.stderr, elsewhere.stderr
    again.send_signal(signal.SIGTERM)  # it has shown what it does; stop it the clean way
    again.communicate(timeout=60)
    assert f"note: run {dead.info.run_id}, whose process died, is now marked KILLED\n" in seen, "".join(seen)
    statuses = {r.info.run_id: r.info.status for r in workdir.runs() if r.data.tags.get("kdbench.role") == "student"}
    assert statuses[dead.info.run_id] == "KILLED" and "RUNNING" not in statuses.values() and len(statuses) == 2


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2])
def test_a_signal_during_a_save_waits_for_the_save(tmp_path, signum):
    """SIGTERM (or SIGUSR2, submitit's requeue signal) sent while torch.save writes arrives after the file is
    complete (it used to break the zip writer and surface as a RuntimeError, ending the run FAILED with a
    traceback, and a SLURM task failed instead of being requeued)."""
    from kdbench.engine.checkpoint import signals_deferred

    received = []
    previous = signal.signal(signum, lambda *_: received.append("during" if saving else "after"))
    try:
        saving = True
        with signals_deferred():
            os.kill(os.getpid(), signum)
            save_atomic({"weights": torch.zeros(1000)}, tmp_path / "ck.pt")
            saving = False
    finally:
        signal.signal(signum, previous)
    assert received == ["after"] and torch.equal(load(tmp_path / "ck.pt")["weights"], torch.zeros(1000))
