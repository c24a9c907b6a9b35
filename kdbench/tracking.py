"""Tracking: where a run's params, metrics and artifacts go, and the store they go to.

The engine talks to a :class:`Tracker`; :class:`MlflowTracker` is the real one (a run that always ends
FINISHED, FAILED or KILLED), :class:`MemoryTracker` keeps everything in dicts, for engine tests that need
no store, and :class:`NullTracker` records nothing (the ranks other than 0 of a DDP run). MLflow is imported
lazily (it costs ~4 s), so ``kdbench list`` and friends stay fast.

The store is checked before anything trains (:func:`check_store`, called by the engine's ``prepare``): a
tracking URI that cannot work is refused in one line within seconds, and a SQLite store is opened (created
and migrated if new) under an exclusive lock on ``<db>.lock``, so processes opening one fresh store at once
do not race through MLflow's schema migrations. Experiments kdbench creates in a SQLite store keep their
artifacts beside the database, in ``<db folder>/mlartifacts/<experiment>``. See docs/tracking.md.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from .errors import KdbenchError, first_line
from .signals import signals_deferred

DEFAULT_URI = "sqlite:///mlflow.db"
#: the folder beside a SQLite store that holds the artifacts of the experiments kdbench creates there
ARTIFACTS_DIR = "mlartifacts"
#: set (to 1) by ``kdbench --verbose``: MLflow's and alembic's INFO lines and progress bars are shown
VERBOSE_ENV = "KDBENCH_VERBOSE"
#: how long a process waits for another one that holds a store's lock while creating or migrating it
LOCK_TIMEOUT = 300.0
#: how long a tracking server may take to accept a connection, and to answer one request, when checked
SERVER_TIMEOUT = 5.0
DATABASE_SCHEMES = {"sqlite", "postgresql", "mysql", "mssql"}


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


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other URIs and in-memory databases)."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.split("+")[0].lower() != "sqlite":
        return None
    path = unquote(rest.split("?")[0])
    path = path.removeprefix("/")  # sqlite:///rel.db and sqlite:////abs/path.db
    return Path(path) if path and path != ":memory:" else None


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").lower() in {"1", "true", "yes"}


_silenced: set[str] = set()  # the environment variables set by import_mlflow (not by the user)


#: MLflow's own output that stays off kdbench's unless --verbose: artifact download progress bars, and the
#: "View run ... at: <server URL>" lines it prints to stdout when a run on a tracking server ends
QUIET_ENV = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


def import_mlflow():
    """``import mlflow``, kept quiet unless ``kdbench --verbose``: no INFO lines from MLflow or alembic
    (store creation, migrations), no artifact download progress bars, no run links printed to stdout."""
    for name, value in QUIET_ENV.items():  # read by MLflow each time; a user's own setting stays
        if not verbose() and name not in os.environ:
            os.environ[name] = value
            _silenced.add(name)
        elif verbose() and name in _silenced:
            os.environ.pop(name, None)
            _silenced.discard(name)
    import mlflow

    level = logging.INFO if verbose() else logging.WARNING
    for name in ("mlflow", "alembic"):  # MLflow gives both its handler; alembic's level is ours to set
        logging.getLogger(name).setLevel(level)
    return mlflow


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


# -- the store: checked, and opened under a lock, before anything trains ------------------------------------

_ready: set[str] = set()  # the URIs this process has checked and opened


def check_store(uri: str) -> None:
    """Refuse, in one line (:class:`KdbenchError`) and within seconds, a tracking URI that cannot work, then
    open the store (a new SQLite store is created under its lock), so that a refusal comes before anything
    trains. Once a URI has passed, later calls in the same process return at once."""
    if uri in _ready:
        import_mlflow()  # already imported: this only applies --verbose (or not) to what follows
        return
    scheme = urlsplit(uri).scheme.split("+")[0].lower()
    if uri in ("databricks", "databricks-uc", "uc"):
        scheme = "databricks"
    if scheme == "sqlite":
        path = sqlite_path(uri)
        if path is not None:
            _check_sqlite_file(uri, path)
            import_mlflow()  # before the lock: others wait for the lock only while a store is opened
            with store_lock(uri, path):
                _refuse_half_migrated(uri, path)
                _open(uri, f"; if its creation or an upgrade was interrupted it is half-migrated: move {path} aside "
                           f"(or restore it from a backup) and run again")
        else:
            _open(uri)
    elif scheme in ("http", "https"):
        _check_server(uri)
    elif scheme in DATABASE_SCHEMES or scheme == "databricks" or scheme in _plugin_schemes():
        _open(uri)
    elif scheme in ("", "file"):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
            folder = unquote(urlsplit(uri).path) if scheme else uri
            raise KdbenchError(f"MLflow 3 refuses folder stores like {uri}: track into a SQLite store instead, e.g. "
                               f"--tracking-uri sqlite:///{Path(folder or '.').resolve()}.db "
                               f"(`mlflow migrate-filestore` converts an existing folder store)")
        _open(uri)
    else:
        raise KdbenchError(f"unknown tracking URI scheme {scheme + '://'!r} in {uri}: use sqlite:///path/to/mlflow.db "
                           f"(runs on this host) or http(s)://host:port (an MLflow tracking server)")
    _ready.add(uri)


def _plugin_schemes() -> set[str]:
    from importlib.metadata import entry_points

    return {ep.name for ep in entry_points(group="mlflow.tracking_store")}


def _open(uri: str, hint: str = "") -> None:
    mlflow = import_mlflow()
    try:
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as error:  # noqa: BLE001 - whatever the store says, it is one line for the user
        raise KdbenchError(f"cannot open the MLflow store {uri}: {first_line(error)}{hint}") from None


def _check_sqlite_file(uri: str, db: Path) -> None:
    """The database's folder exists (created if need be) and is writable, and so is the database if it exists."""
    folder = db.parent
    if not folder.is_dir():
        blocker = next((p for p in [folder, *folder.parents] if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise KdbenchError(f"cannot create the MLflow store {uri}: {blocker} is a file, not a folder; "
                               f"pass a --tracking-uri whose folder can exist")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise KdbenchError(f"cannot create the MLflow store {uri}: its folder {folder} cannot be created "
                               f"({error.strerror or error}); pass a --tracking-uri in a folder you can "
                               f"write") from None
    if db.is_dir():
        raise KdbenchError(f"cannot use the MLflow store {uri}: {db} is a folder; name a database file, "
                           f"e.g. sqlite:///{db}/mlflow.db")
    try:  # a real write, not os.access: root ignores permission bits but not a read-only mount
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".kdbench-probe-"):
            pass
    except OSError as error:
        raise KdbenchError(f"cannot write the MLflow store {uri}: its folder {folder} is not writable "
                           f"({error.strerror or error}; SQLite writes its journal there); make it writable or pass "
                           f"a --tracking-uri in a folder you can write") from None
    if db.exists():
        try:
            with open(db, "r+b"):
                pass
        except OSError as error:
            raise KdbenchError(f"cannot write the MLflow store {uri}: {db} is not writable "
                               f"({error.strerror or error}); make it writable (chmod u+w) or pass another "
                               f"--tracking-uri") from None


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


@contextmanager
def store_lock(uri: str, db: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """An exclusive ``fcntl.flock`` on ``<db>.lock`` (created if needed), for creating or migrating a SQLite
    store: one process at a time on this host. The kernel drops the lock when its holder exits, however it
    exits, so a crash never leaves the store locked. (flock over NFS is unreliable: SQLite stores are per host.)"""
    import fcntl

    path = lock_path(db)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise KdbenchError(f"cannot lock the MLflow store {uri}: {path} cannot be opened "
                           f"({error.strerror or error}); make its folder writable") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                    raise KdbenchError(f"cannot lock the MLflow store {uri} ({path}: {error.strerror}); "
                                       f"a SQLite store needs a local disk, not a network one") from None
                if time.monotonic() > deadline:
                    raise KdbenchError(f"another process has held {path} for {timeout:.0f} s while opening the MLflow "
                                       f"store {uri}; wait for it to finish (or stop it), then run again") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # releases the lock


def _refuse_half_migrated(uri: str, db: Path) -> None:
    """An older crash (or a race of processes without this lock) can leave a store half-migrated: MLflow's
    migrations then fail on every later open (``table _alembic_tmp_params already exists``). Refused here,
    before MLflow touches it again; a leftover temporary table in a store at the newest schema is harmless."""
    if not db.exists() or db.stat().st_size == 0:
        return
    try:
        con = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, timeout=30)
        try:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            leftovers = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
            if not leftovers:
                return
            version = con.execute("SELECT version_num FROM alembic_version").fetchone() \
                if "alembic_version" in tables else None
            runs = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] if "runs" in tables else 0
        finally:
            con.close()
    except sqlite3.DatabaseError as error:
        raise KdbenchError(f"cannot open the MLflow store {uri}: {db} is not a usable SQLite database "
                           f"({error}); pass another --tracking-uri") from None
    from mlflow.store.db.utils import _get_latest_schema_revision

    if version and version[0] == _get_latest_schema_revision():
        return
    what = ("it holds no runs: delete it (and {lock}) and run again" if runs == 0 else
            f"it holds {runs} runs: restore it from a backup, or move it aside and start a new store")
    raise KdbenchError(f"the MLflow store {db} is half-migrated (table {leftovers[0]} was left by an interrupted "
                       f"schema migration, at revision {version[0] if version else 'none'}); "
                       + what.format(lock=lock_path(db).name))


def _check_server(uri: str) -> None:
    """Something must accept a connection within seconds, and answer an MLflow API request (no retries)."""
    parts = urlsplit(uri)
    host = parts.hostname
    if not host:
        raise KdbenchError(f"the tracking URI {uri} names no host: use http(s)://host:port")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise KdbenchError(f"the tracking URI {uri} has an invalid port: use http(s)://host:port") from None
    outcome: list[BaseException | None] = []

    def connect() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            socket.create_connection((host, port), timeout=SERVER_TIMEOUT).close()
            outcome.append(None)
        except OSError as error:
            outcome.append(error)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(SERVER_TIMEOUT + 1)
    error = outcome[0] if outcome else TimeoutError("no answer")
    if error is not None:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise KdbenchError(f"nothing answers at {uri} ({host}:{port}: {reason}): start the tracking server "
                           f"(mlflow server --backend-store-uri sqlite:///path/to/mlflow.db --host 0.0.0.0 "
                           f"--port {port}) or pass another --tracking-uri")
    mlflow = import_mlflow()
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                       "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(SERVER_TIMEOUT))})
    try:
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as error:  # noqa: BLE001
        raise KdbenchError(f"the MLflow tracking server at {uri} does not answer kdbench's request "
                           f"({first_line(error)}); check the URI (is an MLflow server listening there?) and "
                           f"its credentials (MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN)") from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# -- experiments and artifacts -------------------------------------------------------------------------------

def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment's artifacts go: beside a SQLite database (``<db folder>/mlartifacts/<name>``),
    else wherever the store decides (None)."""
    db = sqlite_path(uri)
    if db is None:
        return None
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._") or "experiment"
    return str(db.parent / ARTIFACTS_DIR / slug)


def experiment_id(uri: str, name: str) -> str:
    """The id of experiment ``name``, created if it does not exist (with its artifacts beside a SQLite store);
    an existing experiment keeps its artifact location."""
    mlflow = import_mlflow()
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location(uri, name))
        except mlflow.exceptions.MlflowException as error:
            found = client.get_experiment_by_name(name)  # another process created it meanwhile
            if found is None:
                raise KdbenchError(f"cannot create the MLflow experiment {name!r} in {uri}: "
                                   f"{first_line(error)}") from None
    if found.lifecycle_stage == "deleted":
        raise KdbenchError(f"the MLflow experiment {name!r} in {uri} is deleted: restore it (mlflow experiments "
                           f"restore --experiment-id {found.experiment_id}) or pass another --experiment")
    return found.experiment_id


def artifact_root(uri: str, run) -> str:
    """A run's artifact folder or URI. When a SQLite store's folder has been moved (with its ``mlartifacts``),
    the recorded absolute path no longer exists; the same place under the database's current folder is used."""
    recorded = run.info.artifact_uri
    db = sqlite_path(uri)
    local = _local_path(recorded)
    if db is None or local is None or local.exists():
        return recorded
    parts = local.parts
    if ARTIFACTS_DIR in parts:
        at = len(parts) - 1 - parts[::-1].index(ARTIFACTS_DIR)
        moved = db.parent.joinpath(ARTIFACTS_DIR, *parts[at + 1:])
        if moved.exists():
            return str(moved)
    return recorded


def _local_path(location: str) -> Path | None:
    if location.startswith("file://"):
        return Path(unquote(urlsplit(location).path))
    return Path(location) if "://" not in location and ":" not in location.split("/")[0] else None


def list_artifacts(uri: str, run) -> list[tuple[str, int | None]]:
    """Every artifact file of a run: (path, size in bytes)."""
    root = artifact_root(uri, run)
    local = _local_path(root)
    if local is not None:
        if not local.is_dir():
            return []
        return sorted((str(p.relative_to(local)), p.stat().st_size) for p in local.rglob("*") if p.is_file())
    client = import_mlflow().MlflowClient(uri)
    found, pending = [], [None]
    while pending:
        for info in client.list_artifacts(run.info.run_id, pending.pop()):
            (pending.append(info.path) if info.is_dir else found.append((info.path, info.file_size)))
    return sorted(found)


def download_artifact(uri: str, run_id: str, path: str, dest: Path | None = None) -> Path:
    """A run's artifact as a local file (or folder): read in place from a SQLite store's folder, even one that
    was moved; otherwise downloaded (into ``dest``, else a temporary folder)."""
    mlflow = import_mlflow()
    check_store(uri)
    try:
        run = mlflow.MlflowClient(uri).get_run(run_id)
        local = _local_path(artifact_root(uri, run))
        if local is not None and (local / path).exists():
            return local / path
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, tracking_uri=uri,
                                                        dst_path=str(dest) if dest else None))
    except mlflow.exceptions.MlflowException as error:
        raise KdbenchError(f"cannot fetch artifact {path!r} of run {run_id} from {uri}: {first_line(error)}") from None


# -- the run lifecycle ---------------------------------------------------------------------------------------

def batch_job() -> str | None:
    """The batch job this process runs in, which stays the same when the job is requeued: a SLURM job
    (``"1234_5"``, task 5 of job array 1234, else ``"1234"``), or a job of submitit's local executor, which
    stands in for SLURM in tests (``"local 5678 on HOST"``: its controller's pid, kept across requeues; it
    sets no ``SLURM_*`` variables). None outside a batch job."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    if env.get("SLURM_JOB_ID"):
        return env["SLURM_JOB_ID"]
    if env.get("SUBMITIT_EXECUTOR") == "local" and env.get("SUBMITIT_LOCAL_JOB_ID"):
        return f"local {env['SUBMITIT_LOCAL_JOB_ID']} on {socket.gethostname()}"
    return None


def process_tags() -> dict[str, str]:
    """Where a run's process lives, so ``kdbench runs --stale`` can tell a crashed run from a live one, and
    (``kdbench.slurm_job``) the batch job it runs in, so a requeued job can take over its own earlier run."""
    tags = {"kdbench.host": socket.gethostname(), "kdbench.pid": str(os.getpid())}
    if job := batch_job():
        tags["kdbench.slurm_job"] = job
    return tags


@contextmanager
def tracked_run(uri: str, experiment: str, *, run_name: str | None = None, tags: dict[str, str] | None = None,
                run_id: str | None = None) -> Iterator[Any]:
    """Start (or, with ``run_id``, reopen) an MLflow run and end it with the status it deserves.

    KeyboardInterrupt (Ctrl-C, and SIGTERM, which the CLI turns into one) and SystemExit (submitit exits a job
    it requeues on a timeout or a preemption that way) end it KILLED, any other exception FAILED; the
    exception is re-raised either way. A reopened run gets this process's :func:`process_tags`.
    """
    mlflow = import_mlflow()
    check_store(uri)
    mlflow.set_tracking_uri(uri)
    run = None
    try:
        with signals_deferred():  # a signal while the run is being created would leave it RUNNING, unowned
            try:
                if run_id is None:
                    run = mlflow.start_run(experiment_id=experiment_id(uri, experiment), run_name=run_name,
                                           tags=tags)
                else:
                    run = mlflow.start_run(run_id=run_id)
                    mlflow.set_tags(process_tags())
            except mlflow.exceptions.MlflowException as error:
                if run_id is None:
                    raise KdbenchError(f"cannot start an MLflow run in {uri}: {first_line(error)}") from None
                raise KdbenchError(f"cannot reopen MLflow run {run_id} in {uri} ({first_line(error)}); "
                                   f"use the tracking URI it was started with, or run without --resume") from None
        yield run
    except (KeyboardInterrupt, SystemExit):
        if run is not None:
            mlflow.end_run("KILLED")
        raise
    except BaseException:
        if run is not None:
            mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


def process_state(tags: dict[str, str]) -> tuple[str, str]:
    """Whether the process that tagged a run is alive:
    ("alive" | "dead" | "requeued" | "elsewhere" | "unknown", detail).

    Only a process on this host can be checked (``os.kill(pid, 0)``; a zombie counts as dead). A pid reused
    by another process since counts as alive: a live run is never taken for a dead one. One exception for
    another host: a run tagged with the batch job this process runs in (``kdbench.slurm_job``) was started
    by an earlier incarnation of this job, on the node it ran on before SLURM requeued it (a preemption or a
    timeout that killed it before it could end its run); SLURM starts a job again only once it is gone, so
    it is "requeued", and the job takes its run over. (kdbench's SLURM jobs are one node each; on the same
    host, the pid decides as for any run.)"""
    host, pid = tags.get("kdbench.host"), tags.get("kdbench.pid")
    if not host or not pid or not pid.isdigit():
        return "unknown", "no kdbench.host/kdbench.pid tags"
    if host != socket.gethostname():
        job = tags.get("kdbench.slurm_job")
        if job and job == batch_job():
            return "requeued", f"pid {pid} on host {host} ran batch job {job} before it was requeued"
        return "elsewhere", f"pid {pid} on host {host}"
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return "dead", f"pid {pid} is gone"
    except PermissionError:
        return "alive", f"pid {pid} runs (another user's)"
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        state = ""
    return ("dead", f"pid {pid} is a zombie") if state == "Z" else ("alive", f"pid {pid} runs")


def close_run(client, run_id: str, detail: str) -> None:
    client.set_tag(run_id, "kdbench.closed", f"stale: {detail}")
    client.set_terminated(run_id, "KILLED")


def find_run(client, run_id: str):
    """Run ``run_id`` of the store ``client`` reads, or None if that store does not have it."""
    mlflow = import_mlflow()
    try:
        return client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return None


def close_if_stale(uri: str, run_id: str) -> bool:
    """Mark run ``run_id`` KILLED if it is still RUNNING but its process is gone (on this host, or an earlier
    incarnation of this requeued batch job: see :func:`process_state`); returns whether it did. For the
    engine, when the checkpoint of a run is resumed or overwritten. A run without ``kdbench.host``/
    ``kdbench.pid`` tags (older kdbench), or of another host and job, is left alone."""
    check_store(uri)
    client = import_mlflow().MlflowClient(uri)
    run = find_run(client, run_id)
    if run is None or run.info.status != "RUNNING":
        return False
    state, detail = process_state(run.data.tags)
    if state not in ("dead", "requeued"):
        return False
    close_run(client, run_id, detail)
    return True


def live_owner(uri: str, run_id: str) -> str | None:
    """If run ``run_id`` is RUNNING in a process that is alive (or on another host, where it cannot be
    checked, unless it was this requeued batch job's: see :func:`process_state`), that process ("pid N
    runs"); else None. A checkpoint being written by a live run is not to be resumed or overwritten."""
    run = find_run(import_mlflow().MlflowClient(uri), run_id)
    if run is None or run.info.status != "RUNNING":
        return None
    state, detail = process_state(run.data.tags)
    return detail if state in ("alive", "elsewhere") else None


class Tracker:
    """What the engine records, and nothing more: one run at a time, opened with :meth:`run`."""

    def run(self, *, name: str, tags: dict[str, str], run_id: str | None = None):
        """A context manager: start (or, with ``run_id``, reopen) a run; yields its id; ends it as it ended."""
        raise NotImplementedError

    def holds(self, run_id: str) -> bool:
        """Whether this tracker's store has run ``run_id``, so a checkpoint's run can be reopened here rather than
        continued in a new one (a checkpoint folder is shared by every store its runs were tracked in)."""
        return True

    def log_params(self, params: dict[str, str]) -> None:
        raise NotImplementedError

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        raise NotImplementedError

    def log_dict(self, data: dict, artifact: str) -> None:
        raise NotImplementedError

    def log_file(self, path: Path, artifact_dir: str) -> None:
        raise NotImplementedError

    def log_torch(self, data: dict, artifact: str) -> None:
        """``torch.save(data)`` as the artifact ``artifact`` (``"student/student.pt"``)."""
        import torch

        folder, _, name = artifact.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(data, Path(tmp) / name)
            self.log_file(Path(tmp) / name, folder or None)

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

    def holds(self, run_id):
        return find_run(import_mlflow().MlflowClient(self.uri), run_id) is not None

    def log_params(self, params):
        import_mlflow().log_params(params)

    def log_metrics(self, metrics, step=None):
        import_mlflow().log_metrics(metrics, step=step)

    def log_dict(self, data, artifact):
        import_mlflow().log_dict(data, artifact)

    def log_file(self, path, artifact_dir):
        import_mlflow().log_artifact(str(path), artifact_path=artifact_dir)

    def log_confusion(self, confusion, class_names, title):
        super().log_confusion(confusion, class_names, title)
        log_confusion_matrix(confusion, class_names, title)


class NullTracker(Tracker):
    """Records nothing. The ranks other than 0 of a DDP run track with it: they run the same run as rank 0,
    which alone logs it (one MLflow run per cell, however many processes train it)."""

    def run(self, *, name, tags, run_id=None):
        return nullcontext(run_id)

    def log_params(self, params):
        pass

    def log_metrics(self, metrics, step=None):
        pass

    def log_dict(self, data, artifact):
        pass

    def log_file(self, path, artifact_dir):
        pass

    def log_torch(self, data, artifact):
        pass

    def log_confusion(self, confusion, class_names, title):
        pass


class MemoryTracker(Tracker):
    """Keeps runs in memory: ``runs[run_id]`` holds status, tags, params, metrics (``{name: [(step, value)]}``),
    dicts, file names and saved objects (``saved[artifact]``, from :meth:`log_torch`). For tests of the engine
    that need no MLflow store."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self._current: dict[str, Any] | None = None

    def run(self, *, name, tags, run_id=None):
        @contextmanager
        def opened():
            if run_id is None:
                rid = f"memory-{len(self.runs)}"
                self.runs[rid] = {"name": name, "tags": dict(tags), "params": {}, "metrics": {}, "dicts": {},
                                  "files": [], "saved": {}, "status": "RUNNING"}
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

    def holds(self, run_id):
        return run_id in self.runs

    def log_params(self, params):
        self._current["params"].update(params)

    def log_metrics(self, metrics, step=None):
        for key, value in metrics.items():
            self._current["metrics"].setdefault(key, []).append((step, float(value)))

    def log_dict(self, data, artifact):
        self._current["dicts"][artifact] = data

    def log_file(self, path, artifact_dir):
        self._current["files"].append(f"{artifact_dir}/{Path(path).name}" if artifact_dir else Path(path).name)

    def log_torch(self, data, artifact):
        self._current["files"].append(artifact)
        self._current["saved"][artifact] = data


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
