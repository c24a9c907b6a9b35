"""Holding signals for the length of a block that must not be cut in two (torch-free, so tracking can use it)."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any


@contextlib.contextmanager
def signals_deferred():
    """Hold Ctrl-C, SIGTERM and SIGUSR2 (submitit's timeout/preemption signal, on which it requeues a SLURM
    job) until the block is done (their handlers then run). A signal raised inside ``torch.save`` would leave
    its zip writer half-closed, and the interrupt would surface as a RuntimeError (run FAILED, a traceback,
    and under submitit a job that ends there instead of being requeued) instead of ending the run KILLED
    with the previous checkpoint intact.

    Done with Python-level handlers that note the signal, not by masking it: in a process with other threads
    (torch's), the kernel hands a process-directed signal to any thread that does not mask it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[tuple[int, Any]] = []
    held = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
    before = {sig: signal.signal(sig, lambda signum, frame: pending.append((signum, frame))) for sig in held}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        # each signal once, in the order they came; the first handler that raises ends this (a preempted
        # SLURM job gets SIGTERM, which submitit ignores, then SIGUSR2, on which it requeues)
        first = {}
        for signum, frame in pending:
            first.setdefault(signum, frame)
        for signum, frame in first.items():
            handler = before[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)
