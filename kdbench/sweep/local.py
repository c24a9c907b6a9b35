"""The local launcher: a pool of worker processes on this machine, each pulling the next job from one queue.

One worker per slot: a slot is a GPU (its own ``CUDA_VISIBLE_DEVICES``; with ``nproc_per_node = K``, K GPUs)
or, without GPUs, one of ``--max-parallel`` CPU processes. Workers live for the whole sweep, so torch and the
plugins are imported once per slot, not once per cell. A worker that dies mid-job fails that job only; the
slot starts a new worker for the next one.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError


@dataclass
class Slot:
    name: str
    env: dict[str, str] = field(default_factory=dict)


def make_slots(gpus: list[str] | None, max_parallel: int | None, nproc: int = 1) -> list[Slot]:
    """``--gpus 0,1,2,3`` → one slot per GPU (per K GPUs with DDP); else ``--max-parallel`` CPU slots (default 1)."""
    if gpus:
        if len(gpus) < nproc:
            raise ConfigError(f"--nproc-per-node {nproc} needs at least {nproc} GPUs, --gpus lists {len(gpus)}")
        groups = [gpus[i:i + nproc] for i in range(0, len(gpus) - nproc + 1, nproc)]
        slots = [Slot(f"gpu {','.join(g)}", {"CUDA_VISIBLE_DEVICES": ",".join(g)}) for g in groups]
        return slots[:max_parallel] if max_parallel else slots
    count = max_parallel or 1
    # N processes on a CPU: each gets its share of the cores (N processes of all-core OpenMP mostly wait)
    threads = {} if "OMP_NUM_THREADS" in os.environ else {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // count))}
    return [Slot(f"worker {i + 1}", dict(threads)) for i in range(count)]


@dataclass
class Job:
    key: str                 # the cell's config hash, or "teacher:<key>"
    payload: dict[str, Any]  # what :func:`kdbench.sweep.job.run_job` takes
    log: str                 # where the job's output goes
    label: str = ""


Event = tuple[str, Job, Slot, dict[str, Any] | None]  # ("start" | "end", job, slot, outcome)


class Worker:
    """One ``python -m kdbench.sweep.worker`` process, fed one job at a time."""

    def __init__(self, slot: Slot) -> None:
        self.slot = slot
        env = {**os.environ, **slot.env, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "kdbench.sweep.worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env, text=True, bufsize=1)

    def do(self, job: Job) -> dict[str, Any] | None:
        """The job's outcome, or None if the worker died."""
        try:
            self.process.stdin.write(json.dumps({"job": job.payload, "log": job.log}) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except (BrokenPipeError, OSError):
            return None
        return json.loads(line) if line else None

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, interrupt: bool) -> None:
        """Ask it to end (stdin closed; SIGTERM too when interrupting), without waiting: see :meth:`wait`."""
        if self.alive():
            if interrupt:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.stdin.close()
            except OSError:
                pass

    def wait(self) -> None:
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Pool:
    """One long-lived thread per slot, each owning its worker process. (Workers are started from their slot's
    thread, and that thread lives as long as the pool: Linux sends the parent-death signal when the *thread*
    that started a child ends, not only the process.)"""

    def __init__(self, slots: list[Slot], warm: int = 0) -> None:
        self.slots = slots
        self.warm = warm   # how many slots start their worker at once, before their first job
        self.todo: queue.Queue[Job | None] = queue.Queue()
        self.events: queue.Queue[Event] = queue.Queue()
        self.workers: dict[str, Worker] = {}
        self.threads: list[threading.Thread] = []
        self.stopping = threading.Event()

    def run(self, jobs: list[Job], on_event: Callable[[Event], None]) -> dict[str, dict[str, Any]]:
        """Run ``jobs`` on the slots (each slot takes the next job when it is free); ``on_event`` is called in
        this thread as jobs start and end. Returns job key → outcome."""
        if not self.threads:
            self.threads = [threading.Thread(target=self._serve, args=(slot, i < self.warm), daemon=True)
                            for i, slot in enumerate(self.slots)]
            for thread in self.threads:
                thread.start()
        for job in jobs:
            self.todo.put(job)
        outcomes: dict[str, dict[str, Any]] = {}
        while len(outcomes) < len(jobs):
            event = self.events.get()
            if event[0] == "end":
                outcomes[event[1].key] = event[3]
            on_event(event)
            if event[0] == "end" and event[3]["status"] == "interrupted":
                raise KeyboardInterrupt
        return outcomes

    def _serve(self, slot: Slot, warm: bool) -> None:
        if warm:   # import torch, the plugins and MLflow now, while the shared teachers train on another slot
            self.workers[slot.name] = Worker(slot)
        while (job := self.todo.get()) is not None:
            if self.stopping.is_set():
                continue
            worker = self.workers.get(slot.name)
            if worker is None or not worker.alive():
                worker = self.workers[slot.name] = Worker(slot)
            self.events.put(("start", job, slot, None))
            outcome = worker.do(job)
            if outcome is None:
                code = worker.process.wait()
                outcome = {"status": "interrupted" if self.stopping.is_set() or code in (130, -2, -15) else "failed",
                           "reason": f"its worker process ended (exit {code}); see {job.log}"}
            self.events.put(("end", job, slot, outcome))

    def close(self, interrupt: bool = False) -> None:
        self.stopping.set()
        workers = list(self.workers.values())
        for worker in workers:  # before their threads end (see the class docstring)
            worker.stop(interrupt)
        for worker in workers:  # all asked first, then waited for: their interpreters shut down in parallel
            worker.wait()
        for _ in self.threads:
            self.todo.put(None)
        for thread in self.threads:
            thread.join(timeout=5)
