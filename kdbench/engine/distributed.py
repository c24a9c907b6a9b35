"""DDP for one run (one sweep cell): torchrun starts K ranks on this node; each prepares and fits the same config,
on its share of every global batch; rank 0 alone tracks the run in MLflow and writes its checkpoint.

Why it is built this way (docs/distributed.md says what it means for the results):

- ``torchrun --standalone``: the rendezvous store listens on a free port the launcher picks, so two cells on one
  node never collide and nobody chooses a MASTER_PORT.
- The launcher (:func:`run_distributed`) learns the outcome from files, not from exit codes. Rank 0 writes the
  result JSON; a rank that fails writes ``<result>.rank<r>`` with its reason and the time. The earliest failure is
  the cause: the later ones are ranks whose collective broke because that rank left. Every rank exits 0, so
  torchrun adds no failure report of its own to the one line the user sees.
- Signals: torchrun runs in its own session and the launcher, when interrupted, sends SIGTERM to the ranks.
  Rank 0 turns the first signal into KeyboardInterrupt (its MLflow run ends KILLED) and ignores later ones, which
  could cut the closing of the run short. The other ranks ignore them and end when rank 0 has gone: had they left
  first, rank 0 could be caught in a broken collective and its run would end FAILED.
- The teacher stage (training and caching the teacher, storing its outputs) runs on rank 0 alone while the others
  wait; they prepare afterwards and find everything in the cache. K ranks never write one cache file, and the
  teacher is the one a one-process run trains (its cache key does not, and should not, name a process count).

A rank by hand: ``python -m torch.distributed.run --standalone --nproc-per-node K -m kdbench.engine.distributed
CONFIG.json RESULT.json [--fresh] [--progress]``, CONFIG.json holding a resolved ``RunConfig.model_dump(mode="json")``
(or any config layer: each rank resolves it, with the dataset's defaults).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from ..config import RunConfig, resolve
from ..errors import KdbenchError, first_line
from ..plugins import plugins
from . import loop
from .fit import default_tracker, fit_student, fit_teacher_stage
from .plan import prepare
from .teacher_outputs import weights_digest

#: how long the other ranks wait for rank 0's teacher stage, which may take hours. Only that wait (on a gloo
#: group of its own) is this long: training's collectives keep torch's timeout, after which a rank stuck on
#: a peer that failed (NCCL does not notice a peer that left) is ended, and torchrun ends the others
TEACHER_WAIT = timedelta(days=2)


def torchrun_command(config_json: Path, result_json: Path, nproc: int, *, resume: bool = True,
                     progress: bool = False) -> list[str]:
    """The command that fits ``config_json`` over ``nproc`` ranks on this node; ``resume`` continues the config's
    checkpoint (as a sweep cell does), ``progress`` shows rank 0's progress bars."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", "kdbench.engine.distributed", str(config_json), str(result_json),
            *([] if resume else ["--fresh"]), *(["--progress"] if progress else [])]


def run_distributed(config_json: Path, result_json: Path, nproc: int, *, env: dict[str, str] | None = None,
                    log=None, resume: bool = True, progress: bool = False) -> dict:
    """Fit ``config_json`` over ``nproc`` ranks and return the result: ``{"status": "done", "run_id",
    "config_hash", "metrics", "teacher_metrics", "ranks", "student_weights"}`` (the digest of the student's
    weights on each rank: all equal) or ``{"status": "failed", "reason": one line}``; ``result_json`` keeps the
    full record. The ranks' output, and a failure's details (a data-check report, a bug's traceback), go to
    ``log``: a callable taking one line at a time, a file path (appended), or None for this process's own
    output. ``env`` is added to this process's environment. Ctrl-C (or SIGTERM turned into KeyboardInterrupt,
    as the CLI does) stops the ranks, rank 0's MLflow run ending KILLED, and is re-raised once they have ended."""
    config_json, result_json = Path(config_json), Path(result_json)
    layer = json.loads(config_json.read_text())
    if "batch_size" in layer:  # a resolved config has it: refused before anything starts (else by the ranks)
        loop.per_rank_batch(layer["batch_size"], nproc)
    for stale in [result_json, *reports(result_json)]:
        stale.unlink(missing_ok=True)
    full_env = {**os.environ, **(env or {})}
    # torchrun would set 1 (with a warning); the CPU's cores shared out serve gloo ranks better
    full_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    relay = log if callable(log) else None
    with open(log, "ab") if isinstance(log, str | Path) else nullcontext() as file:
        out = subprocess.PIPE if relay else file
        proc = subprocess.Popen(torchrun_command(config_json, result_json, nproc, resume=resume, progress=progress),
                                env=full_env, stdout=out, stderr=None if out is None else subprocess.STDOUT,
                                text=relay is not None,
                                start_new_session=True)  # a terminal's Ctrl-C reaches the ranks through us only
        try:
            finish(proc, relay)
        except BaseException:
            stop(proc)
            finish(proc, relay)
            raise
    return outcome(result_json, proc.returncode, log)


def finish(proc: subprocess.Popen, relay) -> None:
    """Wait for torchrun, handing its output to ``relay`` line by line if it is piped."""
    if relay is not None:
        for line in proc.stdout:
            relay(line.rstrip("\n"))
    proc.wait()


def fit_distributed(config: RunConfig, nproc: int, *, resume: bool, progress: bool) -> dict:
    """:func:`run_distributed` for a resolved config (``kdbench run --nproc-per-node K``)."""
    with tempfile.TemporaryDirectory(prefix="kdbench-ddp-") as tmp:
        config_json = Path(tmp) / "config.json"
        config_json.write_text(json.dumps(config.model_dump(mode="json")))
        return run_distributed(config_json, Path(tmp) / "result.json", nproc, resume=resume, progress=progress)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to each rank (torchrun's children). Before its ranks exist, torchrun itself is told to stop (it
    then stops whatever it started)."""
    ranks = children(proc.pid)
    for pid in ranks:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    if not ranks and proc.poll() is None:
        proc.terminate()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc; none where there is no /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(stat.parent.name))
    return found


def reports(result_json: Path) -> list[Path]:
    return sorted(result_json.parent.glob(f"{result_json.name}.rank*"))


def outcome(result_json: Path, code: int, log) -> dict:
    """Rank 0's result; else the earliest failure a rank reported (its details sent to ``log``); else what
    torchrun's exit status says."""
    failures = []
    for path in reports(result_json):
        failures.append(json.loads(path.read_text()))
        path.unlink()
    if result_json.exists():
        result = json.loads(result_json.read_text())
        if result.get("status") == "done":
            return result
    if failures:
        result = min(failures, key=lambda failure: failure["time"])
    else:
        result = {"status": "failed", "reason": f"the ranks ended without a result (torchrun exit status {code}); "
                                                f"their output says why", "details": ""}
    write_json(result_json, result)
    if result["details"]:
        if callable(log):
            log(result["details"].rstrip("\n"))
        elif log is not None:
            with open(log, "a") as file:
                file.write(result["details"])
        else:
            print(result["details"].rstrip("\n"), file=sys.stderr)
    return {"status": "failed", "reason": result["reason"]}


def write_json(path: Path, data: dict) -> None:
    """Written whole or not at all: the launcher never reads half a result."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


# -- a rank ---------------------------------------------------------------------------------------------------

def handle_signals(rank: int) -> None:
    """Rank 0: the first Ctrl-C/SIGTERM becomes KeyboardInterrupt, later ones are ignored. Other ranks: ignored."""

    def interrupt(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt if rank == 0 else signal.SIG_IGN)


def join(config: RunConfig) -> None:
    """Join the process group: NCCL on CUDA (each rank on the GPU of its LOCAL_RANK), gloo on the CPU."""
    device = loop.resolve_device(config.device)
    if device.type == "cuda":
        local, gpus = int(os.environ["LOCAL_RANK"]), torch.cuda.device_count()
        if device.index is not None:
            raise KdbenchError(f"device {config.device!r} puts every rank on one GPU; use --device cuda (each rank "
                               f"takes its own GPU)")
        if int(os.environ["LOCAL_WORLD_SIZE"]) > gpus:
            raise KdbenchError(f"--nproc-per-node {os.environ['LOCAL_WORLD_SIZE']} asks for more ranks than the "
                               f"{gpus} GPU(s) here; use at most {gpus}")
        torch.cuda.set_device(local)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise KdbenchError(f"DDP runs on CUDA GPUs or on the CPU, not on {device.type!r}; use --device cuda or cpu")
    dist.init_process_group(backend)


def fit_rank(config: RunConfig, rank: int, *, resume: bool, progress: bool) -> dict:
    """Prepare and fit on this rank: rank 0 first runs the teacher stage alone (the others wait, then prepare and
    find the teacher and its outputs in the cache); all ranks then fit the student together."""
    echo = (lambda message: print(message, file=sys.stderr, flush=True)) if rank == 0 else (lambda message: None)
    tracker = default_tracker(config)  # MLflow on rank 0, nothing elsewhere
    patient = dist.new_group(backend="gloo", timeout=TEACHER_WAIT)
    if rank == 0:
        prepared = prepare(config, plugins(), resume=resume, progress=progress, echo=echo)
        fit_teacher_stage(prepared, tracker, progress=progress, echo=echo)
    dist.barrier(group=patient)
    if rank != 0:
        prepared = prepare(config, plugins(), resume=resume, progress=False, echo=echo)
    dist.barrier(group=patient)  # every rank has read the checkpoint before rank 0 reopens or starts the run
    result = fit_student(prepared, tracker, progress=progress, echo=echo)
    digests: list[str | None] = [None] * dist.get_world_size()  # evidence that the ranks ended as one
    dist.all_gather_object(digests, weights_digest(prepared.student)[:16])
    return {"status": "done", "run_id": result.run_id, "config_hash": result.config_hash,
            "metrics": result.scores.as_dict(), "teacher_metrics": result.teacher_scores.as_dict(),
            "ranks": dist.get_world_size(), "student_weights": digests}


def failure(error: BaseException, rank: int) -> dict:
    if isinstance(error, KeyboardInterrupt):
        reason, details = f"rank {rank} was interrupted (Ctrl-C or SIGTERM)", ""
    elif isinstance(error, KdbenchError):
        reason, details = str(error), error.details
    else:  # a bug, or a collective broken by a rank that left first (then it is not the earliest failure)
        reason, details = f"rank {rank}: {type(error).__name__}: {first_line(error)}", traceback.format_exc()
    return {"status": "failed", "reason": reason, "details": details, "rank": rank, "time": time.time()}


def main(argv: list[str]) -> int:
    config_json, result_json, *flags = argv
    result_json = Path(result_json)
    rank = int(os.environ.get("RANK", "0"))
    handle_signals(rank)
    try:
        config = resolve([json.loads(Path(config_json).read_text())], plugins())
        join(config)
        result = fit_rank(config, rank, resume="--fresh" not in flags, progress="--progress" in flags)
        if rank == 0:
            write_json(result_json, result)
    except BaseException as error:  # noqa: BLE001 - every way a rank ends is reported to the launcher
        write_json(result_json.with_name(f"{result_json.name}.rank{rank}"), failure(error, rank))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
