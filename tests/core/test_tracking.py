"""The tracking layer against real MLflow stores: safe creation of a SQLite store by many processes at once,
tracking URIs that cannot work refused before anything trains, artifacts beside the database (and readable
after the folder moves), `kdbench runs`, stale runs, the student's weights as an artifact, a quiet MLflow."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from kdbench.tracking import check_store, close_if_stale, download_artifact

TINY = ("--dataset", "synthetic", "--distiller", "kd", "--epochs", "1", "--set", "dataset.train_size=60",
        "--set", "dataset.test_size=30", "--set", "teacher_training.epochs=1", "--no-progress")
RUN = ("run", *TINY)


def quiet(message):
    pass


def schema_head() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def all_runs(uri):
    import mlflow

    client = mlflow.MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def by_role(runs, role):
    return [r for r in runs if r.data.tags.get("kdbench.role") == role]


def one_line_error(result) -> bool:
    return (result.code == 2 and result.err.startswith("kdbench: error: ") and result.err.count("\n") == 1
            and "Traceback" not in result.err)


# -- many processes, one fresh store ------------------------------------------------------------------------

def test_eight_processes_open_one_fresh_store_at_once(tmp_path, cli, monkeypatch):
    db = tmp_path / "store" / "mlflow.db"  # neither the database nor its folder exists yet
    uri = f"sqlite:///{db}"
    env = {k: v for k, v in os.environ.items() if k not in ("KDBENCH_VERBOSE", "MLFLOW_TRACKING_URI")}
    env["KDBENCH_CACHE_DIR"] = str(tmp_path / "cache")
    runs = [subprocess.Popen([sys.executable, "-m", "kdbench", *RUN, "--seed", str(seed), "--tracking-uri", uri],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for seed in (1, 2)]
    opener = "import sys; from kdbench.tracking import check_store; check_store(sys.argv[1])"
    openers = [subprocess.Popen([sys.executable, "-c", opener, uri], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(8)]
    done = [(p.args, *p.communicate(timeout=600), p.returncode) for p in runs + openers]
    for args, out, err, code in done:
        assert code == 0, f"{args}\n{err}"
        assert "Traceback" not in err and "INFO" not in err, err  # MLflow's and alembic's chatter stays off
    for _, out, _, _ in done[:2]:
        assert "MLflow run" in out

    with sqlite3.connect(db) as con:  # intact: no half-done migration, at the newest schema
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert not [t for t in tables if t.startswith("_alembic_tmp_")]
        assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [(schema_head(),)]
    tracked = all_runs(uri)
    assert len(by_role(tracked, "teacher")) == 2 and len(by_role(tracked, "student")) == 2
    assert {r.info.status for r in tracked} == {"FINISHED"}

    monkeypatch.chdir(tmp_path)  # a later run works (it reuses the cached teacher of seed 1)
    monkeypatch.setenv("KDBENCH_CACHE_DIR", str(tmp_path / "cache"))
    later = cli(*RUN, "--seed", "1", "--tracking-uri", uri, "--set", "output_dir=later")
    assert later.code == 0, later.err
    assert [r.info.status for r in by_role(all_runs(uri), "student")] == ["FINISHED"] * 3


# -- refused before anything trains -------------------------------------------------------------------------

def timed(cli, *args):
    started = time.monotonic()
    result = cli(*args)
    return result, time.monotonic() - started


def refused_fast(cli, workdir, *args, ran=None):
    result, elapsed = ran or timed(cli, *args)
    assert one_line_error(result), result.err
    # a bound on a hang, not a benchmark: before, a read-only folder took 116 s and http://127.0.0.1:9 260 s
    assert elapsed < 10, f"refused after {elapsed:.0f} s"
    assert not (workdir.path / "cache").exists() and not (workdir.path / "kdbench-runs").exists()  # nothing trained
    assert workdir.runs() == []
    return result.err


@pytest.mark.parametrize("uri,message", [
    ("http://127.0.0.1:9", ("nothing answers at http://127.0.0.1:9 (127.0.0.1:9: Connection refused): start the "
                            "tracking server")),
    ("bogus://x", "unknown tracking URI scheme 'bogus://' in bogus://x: use sqlite:///"),
    ("file:///tmp/x", ("MLflow 3 refuses folder stores like file:///tmp/x: track into a SQLite store instead, "
                       "e.g. --tracking-uri sqlite:////tmp/x.db")),
])
def test_a_store_that_cannot_work_is_refused_in_seconds(workdir, cli, uri, message):
    assert message in refused_fast(cli, workdir, *RUN, "--tracking-uri", uri)


def test_teacher_training_checks_the_store_too(workdir, cli):
    err = refused_fast(cli, workdir, "teacher", "train", "--dataset", "synthetic", "--epochs", "1", "--no-progress",
                       "--tracking-uri", "http://127.0.0.1:9")
    assert "nothing answers at http://127.0.0.1:9" in err


@contextmanager
def unprivileged():
    """Root ignores permission bits (a chmod 0o555 folder stays writable for it), so as root the refusal is
    checked with the effective user and group set to nobody (65534), a user the modes do stop; they are
    restored after. As any other user the modes alone do it."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_a_sqlite_store_that_cannot_be_written_is_refused(workdir, cli, mlflow_template):
    # a path whose parent is a file (refused for root as well); this call also imports what the run command
    # needs before its store is checked, which the calls below, as nobody, could not read from root's home
    (workdir.path / "afile").write_text("")
    err = refused_fast(cli, workdir, *RUN, "--tracking-uri", f"sqlite:///{workdir.path}/afile/sub/mlflow.db")
    assert f"{workdir.path / 'afile'} is a file, not a folder" in err

    base = Path(tempfile.mkdtemp(prefix="kdbench-readonly-"))  # outside pytest's folders, which nobody cannot enter
    try:
        base.chmod(0o755)
        existing, empty, shared = base / "existing", base / "empty", base / "shared"
        for folder in (existing, empty, shared):
            folder.mkdir()
        shutil.copy(mlflow_template, existing / "mlflow.db")
        shutil.copy(mlflow_template, shared / "mlflow.db")
        (shared / "mlflow.db").chmod(0o444)
        existing.chmod(0o555)
        empty.chmod(0o555)
        shared.chmod(0o777)  # a folder anyone may write, holding a database nobody may
        with unprivileged():
            ran = [timed(cli, *RUN, "--tracking-uri", f"sqlite:///{folder}/mlflow.db")
                   for folder in (existing, empty, shared)]
        old, new, locked = (refused_fast(cli, workdir, ran=outcome) for outcome in ran)
        assert f"its folder {existing} is not writable (Permission denied" in old
        assert f"its folder {empty} is not writable (Permission denied" in new
        assert f"{shared / 'mlflow.db'} is not writable (Permission denied" in locked
        assert not (empty / "mlflow.db").exists()
    finally:
        for folder in base.iterdir():
            folder.chmod(0o755)
        shutil.rmtree(base)


def half_migrated(template: Path, db: Path, *, at_head: bool) -> Path:
    """A store as an interrupted migration leaves it: alembic's temporary copy of a table still there, and,
    unless the migration was finished by another process, the recorded revision short of the newest."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    shutil.copy(template, db)
    head = schema_head()
    before = ScriptDirectory.from_config(_get_alembic_config("")).get_revision(head).down_revision
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE _alembic_tmp_params (key VARCHAR(250) NOT NULL, value VARCHAR(8000))")
        if not at_head:
            con.execute("UPDATE alembic_version SET version_num = ?", (before,))
    return db


def test_a_half_migrated_store_is_refused_with_what_to_do(tmp_path, mlflow_template, cli):
    db = half_migrated(mlflow_template, tmp_path / "broken.db", at_head=False)
    result = cli("runs", "--tracking-uri", f"sqlite:///{db}")
    assert one_line_error(result), result.err
    assert f"the MLflow store {db} is half-migrated (table _alembic_tmp_params was left by an interrupted" in result.err
    assert "it holds no runs: delete it (and broken.db.lock) and run again" in result.err
    # the same leftover in a store whose migration another process finished is harmless: accepted
    fine = half_migrated(mlflow_template, tmp_path / "finished.db", at_head=True)
    check_store(f"sqlite:///{fine}")
    assert cli("runs", "--tracking-uri", f"sqlite:///{fine}").out == "no runs\n"


def test_listing_a_store_that_does_not_exist_creates_nothing(tmp_path, cli):
    result = cli("runs", "--tracking-uri", f"sqlite:///{tmp_path}/none/mlflow.db")
    assert one_line_error(result) and f"no MLflow store at {tmp_path}/none/mlflow.db" in result.err
    assert not (tmp_path / "none").exists()


# -- artifacts beside the database, and the student's weights ------------------------------------------------

def test_artifacts_live_beside_the_store_and_move_with_it(tmp_path, mlflow_template, cli, monkeypatch):
    import mlflow

    from kdbench.config import resolve
    from kdbench.engine import prepare
    from kdbench.engine.checkpoint import load_state_strict
    from kdbench.plugins import plugins

    store = tmp_path / "project" / "store"
    store.mkdir(parents=True)
    shutil.copy(mlflow_template, store / "mlflow.db")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the command runs in another folder than the store's
    monkeypatch.setenv("KDBENCH_CACHE_DIR", str(tmp_path / "cache"))
    own = tmp_path / "own-artifacts"
    mlflow.MlflowClient(uri).create_experiment("mine", artifact_location=str(own))  # an existing experiment

    assert cli(*RUN, "--tracking-uri", uri).code == 0
    assert cli(*RUN, "--tracking-uri", uri, "--experiment", "mine", "--set", "output_dir=mine").code == 0
    runs = all_runs(uri)
    [student] = [r for r in by_role(runs, "student") if r.data.params["tracking.experiment"] == "kdbench"]
    [teacher] = by_role(runs, "teacher")
    [theirs] = [r for r in by_role(runs, "student") if r.data.params["tracking.experiment"] == "mine"]
    beside = store / "mlartifacts" / "kdbench"
    for path in ("student/student.pt", "config.json", "confusion_matrix.png"):
        assert (beside / student.info.run_id / "artifacts" / path).is_file(), path
    assert (beside / teacher.info.run_id / "artifacts" / "teacher" / "teacher.pt").is_file()
    assert (own / theirs.info.run_id / "artifacts" / "student" / "student.pt").is_file()  # kept its own location
    assert sorted(p.name for p in elsewhere.iterdir()) == ["kdbench-runs", "mine"]  # no mlruns/ or mlartifacts/ here

    shutil.move(tmp_path / "project", tmp_path / "moved")  # the whole folder, database and artifacts
    moved = f"sqlite:///{tmp_path / 'moved' / 'store' / 'mlflow.db'}"
    path = download_artifact(moved, student.info.run_id, "student/student.pt")
    assert path.is_relative_to(tmp_path / "moved")
    blob = torch.load(path, weights_only=True)
    assert blob["student"] == "tiny-3dcnn" and blob["options"] == {"width": 8, "embedding_dim": 32, "dropout": 0.2}
    assert blob["config"]["distiller"]["name"] == "kd" and blob["config"]["tracking"]["uri"] == uri
    shown = cli("runs", "show", student.info.run_id, "--tracking-uri", moved)
    assert shown.code == 0 and "student/student.pt" in shown.out and str(tmp_path / "moved") in shown.out

    # the weights are the student's: loaded into a freshly built one, it scores what the run scored
    config = resolve([blob["config"], {"tracking": {"uri": moved}, "output_dir": str(tmp_path / "check")}], plugins())
    fresh = prepare(config, plugins(), progress=False, echo=quiet)
    load_state_strict(fresh.student, blob["state_dict"], "student")
    assert fresh.training.evaluate().accuracy == pytest.approx(student.data.metrics["final_accuracy"])


def test_memory_tracker_records_the_student_weights_and_the_process(tmp_path, monkeypatch):
    from kdbench.config import resolve
    from kdbench.engine import fit, prepare
    from kdbench.plugins import plugins
    from kdbench.tracking import MemoryTracker

    monkeypatch.setenv("KDBENCH_CACHE_DIR", str(tmp_path / "cache"))
    config = resolve([{"dataset": {"name": "synthetic", "train_size": 60, "test_size": 30}, "epochs": 1,
                       "teacher_training": {"epochs": 1}, "distiller": {"name": "kd"},
                       "output_dir": str(tmp_path / "runs")}], plugins())
    prepared = prepare(config, plugins(), progress=False, echo=quiet)
    tracker = MemoryTracker()
    fit(prepared, tracker=tracker, progress=False, echo=quiet)
    [teacher] = [r for r in tracker.runs.values() if r["tags"]["kdbench.role"] == "teacher"]
    [student] = [r for r in tracker.runs.values() if r["tags"]["kdbench.role"] == "student"]
    for run in (teacher, student):
        assert run["tags"]["kdbench.pid"] == str(os.getpid()) and run["tags"]["kdbench.host"]
    assert "student/student.pt" in student["files"]
    blob = student["saved"]["student/student.pt"]
    assert blob["student"] == "tiny-3dcnn" and blob["config"] == config.model_dump(mode="json")
    weights = prepared.student.state_dict()
    assert blob["state_dict"].keys() == weights.keys()
    assert all(torch.equal(blob["state_dict"][k], weights[k].cpu()) for k in weights)


# -- kdbench runs, stale runs ---------------------------------------------------------------------------------

def started_and_killed(workdir) -> str:
    """A real run whose process dies without a word (SIGKILL): its MLflow run stays RUNNING."""
    proc = subprocess.Popen([sys.executable, "-m", "kdbench", "run", "--distiller", "kd", "--dataset", "synthetic",
                             "--config", "tiny.toml", "--epochs", "200", "--no-progress", "--set", "output_dir=killed"],
                            cwd=workdir.path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=os.environ.copy())
    deadline = time.monotonic() + 300
    for line in proc.stderr:
        if line.startswith("epoch 1/200") or time.monotonic() > deadline:
            break
    proc.kill()
    proc.wait(timeout=60)
    [run] = [r for r in workdir.runs() if r.data.params.get("output_dir") == "killed"]
    assert run.info.status == "RUNNING"
    return run.info.run_id


def test_runs_lists_shows_and_closes_stale_runs(workdir, cli):
    import mlflow

    assert cli("run", "--distiller", "kd", "--dataset", "synthetic", "--config", "tiny.toml", "--no-progress").code == 0
    killed = started_and_killed(workdir)
    client = mlflow.MlflowClient(workdir.uri)
    experiment = client.get_experiment_by_name("kdbench").experiment_id
    older = client.create_run(experiment, tags={"kdbench.role": "student"}).info.run_id  # no host/pid tags
    here = {"kdbench.host": __import__("socket").gethostname()}
    alive = client.create_run(experiment, tags={**here, "kdbench.pid": str(os.getpid())}).info.run_id
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = client.create_run(experiment, tags={**here, "kdbench.pid": str(gone.pid)}).info.run_id
    runs = {r.info.run_id: r for r in workdir.runs()}
    [student] = [rid for rid, r in runs.items() if r.data.tags.get("kdbench.role") == "student"
                 and r.info.status == "FINISHED"]
    [teacher] = [rid for rid, r in runs.items() if r.data.tags.get("kdbench.role") == "teacher"]

    listed = cli("runs")
    assert listed.code == 0 and len(listed.out.splitlines()) == 2 + 6
    header = listed.out.splitlines()[0].split()
    assert header[:3] == ["run", "id", "role"] and "accuracy" in header and "config" in header
    line = next(x for x in listed.out.splitlines() if x.startswith(student))
    stored = runs[student]
    assert line.split()[1:9] == ["student", "synthetic", "tiny-eeg", "tiny-3dcnn", "kd", "0",
                                  stored.data.tags["kdbench.config_hash"], "FINISHED"]
    assert line.split()[9] == f"{stored.data.metrics['final_accuracy']:.4f}"
    assert {x.split()[0] for x in cli("runs", "--tag", "distiller=kd", "--status", "finished").out.splitlines()[2:]} \
        == {student}
    assert {x.split()[0] for x in cli("runs", "--tag", "kdbench.role=teacher").out.splitlines()[2:]} == {teacher}

    stale = cli("runs", "--stale")
    rows = {x.split()[0]: x for x in stale.out.splitlines()[2:]}
    assert set(rows) == {killed, older, dead}  # the live one is not stale
    assert "dead: pid" in rows[killed] and "unknown: no kdbench.host/kdbench.pid tags" in rows[older]
    assert "process    dead: pid" in cli("runs", "show", killed).out

    assert close_if_stale(workdir.uri, dead) is True
    assert close_if_stale(workdir.uri, alive) is False and close_if_stale(workdir.uri, older) is False
    assert close_if_stale(workdir.uri, student) is False

    closed = cli("runs", "--close")
    assert closed.code == 0 and f"closed 1 run as KILLED: {killed}" in closed.out
    assert "left 1 RUNNING" in closed.out and "--close --force" in closed.out
    status = {r.info.run_id: r.info.status for r in workdir.runs()}
    assert (status[killed], status[dead], status[older], status[alive]) == ("KILLED", "KILLED", "RUNNING", "RUNNING")
    assert client.get_run(killed).data.tags["kdbench.closed"].startswith("stale: pid")
    forced = cli("runs", "--close", "--force")
    assert f"closed 1 run as KILLED: {older}" in forced.out
    assert cli("runs", "--stale").out == "no stale runs\n"
    client.set_terminated(alive, "FINISHED")
    assert "RUNNING" not in {r.info.status for r in workdir.runs()}

    shown = cli("runs", "show", student)
    assert shown.code == 0
    for expected in ("status     FINISHED", "kdbench.distiller", "kdbench.pid", "distiller.temperature",
                     "final_accuracy", "teacher_accuracy", "student/student.pt", "config.json",
                     "confusion_matrix.png", "params (the resolved config)"):
        assert expected in shown.out, expected
    missing = cli("runs", "show", "0" * 32)
    assert one_line_error(missing) and "no run '00000000000000000000000000000000'" in missing.err
    assert one_line_error(cli("runs", "--experiment", "nosuch"))


def test_mlflow_stays_quiet_unless_verbose(workdir, cli, monkeypatch):
    monkeypatch.setenv("KDBENCH_VERBOSE", "0")
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    first = cli("run", "--distiller", "kd", "--dataset", "synthetic", "--config", "tiny.toml", "--no-progress")
    assert first.code == 0
    [teacher] = by_role(workdir.runs(), "teacher")
    again = ("run", "--distiller", "kd", "--dataset", "synthetic", "--config", "tiny.toml", "--no-progress",
             "--teacher-checkpoint", f"runs:/{teacher.info.run_id}")
    plain = cli(*again, "--set", "output_dir=plain")
    assert plain.code == 0 and "Downloading artifacts" not in plain.err and "INFO" not in plain.err
    # a local store's artifacts are read in place (nothing to download); with --verbose MLflow's own logging
    # is let through at INFO
    import logging

    loud = cli("--verbose", *again, "--set", "output_dir=loud")
    assert loud.code == 0 and logging.getLogger("mlflow").level == logging.INFO
    monkeypatch.setenv("KDBENCH_VERBOSE", "0")  # a new command, as a new process would start
    quiet = cli(*again, "--set", "output_dir=quiet")
    assert quiet.code == 0 and logging.getLogger("mlflow").level == logging.WARNING
