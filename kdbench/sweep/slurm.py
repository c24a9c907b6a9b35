"""The SLURM launcher: each batch of a sweep's jobs (its shared teachers, then its cells) as one SLURM job
array, submitted and watched through submitit.

Every task of the array runs one job (:func:`kdbench.sweep.job.run_job`) on one node (with ``--gpus``, as
many GPUs as the cell has DDP processes); at most ``--max-parallel`` tasks run at once
(``slurm_array_parallelism``). This process only submits and watches: it polls the tasks every few seconds,
reports each one's start and end, and reads its outcome from submitit's result file.

Requeues. SLURM signals a task (SIGUSR2) ``signal_delay_s`` = 90 s before its time limit, and on a
preemption if the cluster sends preempted jobs that signal; submitit then calls :meth:`SweepTask.checkpoint`
and requeues the task (after at most 3 timeouts; preemptions do not count). Since cells prepare with
``resume=True``, the next incarnation continues from the cell's last epoch checkpoint, in the same MLflow
run, which the earlier one ended KILLED on its way out. A task killed outright (a preemption without the
signal, with SLURM's ``PreemptMode=REQUEUE``; a node failure) leaves its run RUNNING, tagged with its node:
the requeued task recognises it by its ``kdbench.slurm_job`` tag as its own and takes it over (see
:func:`kdbench.tracking.process_state`).

``--slurm-local`` uses submitit's local executor instead: the same pickled jobs, the same signal handling
and requeues, as local processes. That is how this module is tested (there is no cluster here); it starts
every task at once (it knows no array parallelism).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

import submitit
from submitit.core.utils import FailedJobError

from ..errors import ConfigError, KdbenchError, first_line
from .local import Event, Job, Slot

#: SLURM states of a task that has started (any later state means it is done)
STARTED = {"RUNNING", "COMPLETING", "COMPLETED"}


class SweepTask(submitit.helpers.Checkpointable):
    """What each task of the array runs: one sweep job, in the task's own process, printing to the task's
    submitit log (``<folder>/<job id>_0_log.out``)."""

    def __call__(self, job: dict[str, Any]) -> dict[str, Any]:
        from .job import run_job

        return run_job(job, echo=print)

    def checkpoint(self, job: dict[str, Any]) -> submitit.helpers.DelayedSubmission:
        """Called by submitit, in the task, on a timeout or a preemption: requeue the same job, unchanged.
        Nothing is saved here: the cell's checkpoint, written after every epoch, is all its state (and this
        runs in a signal handler, in the middle of an epoch)."""
        return submitit.helpers.DelayedSubmission(self, job)


class SlurmLauncher:
    """``options``: ``partition`` (None: the cluster's default), ``time`` (minutes per task), ``folder``
    (submitit's job files and logs), ``local`` (submitit's local executor instead of SLURM)."""

    def __init__(self, options: dict[str, Any], *, gpus_per_cell: int = 0, max_parallel: int | None = None) -> None:
        self.local = bool(options.get("local"))
        self.partition = options.get("partition")
        self.minutes = options.get("time")
        self.folder = options.get("folder") or "kdbench-slurm"
        self.gpus, self.max_parallel = gpus_per_cell, max_parallel
        if not isinstance(self.minutes, int) or self.minutes < 1:
            raise ConfigError(f"--slurm-time {self.minutes}: give the minutes each job may run, at least 1")
        if not self.local and shutil.which("sbatch") is None:
            raise ConfigError("--launcher slurm: SLURM's sbatch is not on this machine's PATH; run the sweep on "
                              "a login node of the cluster, or use --launcher local")
        self.poll_seconds = 1.0 if self.local else 5.0
        self.submitted: list[submitit.Job] = []

    def executor(self, jobs: list[Job]) -> submitit.AutoExecutor:
        executor = submitit.AutoExecutor(folder=self.folder, cluster="local" if self.local else "slurm")
        nproc = max(int(j.payload.get("nproc") or 1) for j in jobs)
        loaders = max(int(j.payload["config"].get("num_workers") or 0) for j in jobs)
        executor.update_parameters(
            name=f"kdbench-{jobs[0].payload['kind']}", timeout_min=self.minutes, nodes=1, tasks_per_node=1,
            gpus_per_node=self.gpus, cpus_per_task=nproc * (1 + loaders),  # each DDP rank: itself + its loaders
            slurm_partition=self.partition, slurm_array_parallelism=self.max_parallel or len(jobs))
        return executor

    def name(self, task: submitit.Job) -> str:
        return f"local job {task.job_id}" if self.local else f"SLURM job {task.job_id}"

    def slot(self, task: submitit.Job) -> Slot:
        return Slot(self.name(task))

    def outcome(self, task: submitit.Job) -> dict[str, Any]:
        """The outcome the task's :func:`run_job` returned, or a failure naming the task's log."""
        try:
            result = task.result()
        except Exception as error:  # noqa: BLE001 - the task's process failed, or never wrote its result
            # SLURM's state says why (OUT_OF_MEMORY, NODE_FAIL, TIMEOUT, CANCELLED...); the local executor's
            # says nothing (its controller ends FINISHED whatever became of the job's process)
            detail = last_error(error) or ("" if self.local else f"state {task.state}")
            return {"status": "failed", "reason": f"its {self.name(task)} ended without an outcome"
                                                  f"{f' ({detail})' if detail else ''}; see {task.paths.stderr}"}
        if not isinstance(result, dict) or "status" not in result:
            return {"status": "failed", "reason": f"its {self.name(task)} returned {result!r}"}
        return result

    def run(self, jobs: list[Job], on_event: Callable[[Event], None]) -> dict[str, dict[str, Any]]:
        """Submit ``jobs`` as one array and wait for all of them, calling ``on_event`` as each starts and ends.
        Returns job key → outcome; a task that ended without one (killed, out of memory, timed out too often)
        has failed, with a reason naming its log."""
        if not jobs:
            return {}
        try:
            tasks = self.executor(jobs).map_array(SweepTask(), [job.payload for job in jobs])
        except FailedJobError as error:  # what submitit raises when sbatch refuses (a bad partition, time, ...)
            raise KdbenchError(f"SLURM refused the job array: {first_line(error)}") from None
        self.submitted.extend(tasks)
        started: set[str] = set()
        outcomes: dict[str, dict[str, Any]] = {}
        while True:
            for job, task in zip(jobs, tasks):
                if job.key in outcomes:
                    continue
                done = task.done()
                if job.key not in started and (done or task.state.upper() in STARTED):
                    started.add(job.key)
                    on_event(("start", job, self.slot(task), None))
                if done:
                    outcomes[job.key] = self.outcome(task)
                    on_event(("end", job, self.slot(task), outcomes[job.key]))
            if len(outcomes) == len(jobs):
                return outcomes
            time.sleep(self.poll_seconds)

    def close(self, interrupt: bool = False) -> None:
        """With ``interrupt`` (Ctrl-C, or a job interrupted), cancel every task that is not done; the others
        have ended. On SLURM the running ones are first sent SIGINT, so that each ends its MLflow run KILLED
        (its checkpoint kept for the next sweep): ``scancel`` alone sends SIGTERM, which submitit ignores
        (it waits for its requeue signal), then SIGKILL. Without ``interrupt`` nothing is stopped: after an
        error in this process, the tasks still running finish their cells on their own (the next sweep skips
        or resumes them)."""
        if not interrupt:
            return
        pending = [task for task in self.submitted if not task.done()]
        if pending and not self.local:
            subprocess.run(["scancel", "--signal=INT", *(task.job_id for task in pending)], capture_output=True,
                           check=False)
        for task in pending:
            task.cancel(check=False)  # local: SIGINT to the task's controller, which stops the task


def last_error(error: Exception) -> str | None:
    """The last line of the traceback of a task that raised (``FailedJobError``: e.g. submitit's own "timed-out
    too many times"); None for a task that never wrote a result."""
    if isinstance(error, FailedJobError):
        parts = str(error).split("-" * 22)  # submitit puts the task's traceback between two such lines
        trace = parts[1].strip().splitlines() if len(parts) > 2 else []
        return trace[-1].strip() if trace else first_line(error)
    return None
