"""Running a planned sweep: shared teachers first, then the cells, on a launcher; one line per cell as it starts
and ends, an overall bar, and a summary whose failures each have their one-line reason.

A launcher has two methods: ``run(jobs, on_event) -> {job key: outcome}`` and ``close(interrupt)``; the local
pool (:mod:`.local`) and SLURM (:mod:`.slurm`) both do.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from .local import Job, Pool, make_slots
from .plan import PlannedCell, teacher_key
from .spec import Sweep


def clock() -> str:
    return time.strftime("%H:%M:%S")


def echo(message: str, bar=None) -> None:
    if bar is not None:
        bar.write(message)
    else:
        click.echo(message)


def teacher_jobs(pending: list[PlannedCell]) -> tuple[list[Job], dict[str, str]]:
    """One job per teacher that two or more pending cells share (a lone cell prepares its own teacher).
    Returns the jobs and, for each cell hash, the teacher job key it waits for."""
    groups: dict[str, list[PlannedCell]] = {}
    for p in pending:
        groups.setdefault(teacher_key(p.config), []).append(p)
    jobs, waits = [], {}
    for key, cells in groups.items():
        if len(cells) < 2:
            continue
        first = cells[0]
        log = Path(first.config.output_dir) / "teachers" / f"{key}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        c = first.config
        jobs.append(Job(f"teacher:{key}", {"kind": "teacher", "config": first.payload()}, str(log),
                        f"teacher {c.teacher.name} on {c.dataset.name} seed {c.seed} (for {len(cells)} cells)"))
        for p in cells:
            waits[p.digest] = f"teacher:{key}"
    return jobs, waits


def cell_jobs(pending: list[PlannedCell], nproc: int) -> list[Job]:
    jobs = []
    for p in pending:
        log = p.checkpoint.parent / "cell.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        verb = "resume" if p.state == "resume" else "start"
        jobs.append(Job(p.digest, {"kind": "cell", "config": p.payload(), "nproc": nproc}, str(log),
                        f"{p.name} ({p.digest[:8]}{', resume' if verb == 'resume' else ''}"
                        f"{f', DDP x{nproc}' if nproc > 1 else ''})"))
    return jobs


def metrics_text(outcome: dict) -> str:
    m = outcome.get("metrics") or {}
    return "  ".join(f"{k} {m[k]:.3f}" for k in ("accuracy", "mf1", "kappa") if k in m)


def make_launcher(launcher: str, gpus, max_parallel, nproc, slurm, cells: int = 0):
    """``cells``: how many cells will run; that many local workers (at most one per slot) start at once."""
    if launcher == "slurm":
        from .slurm import SlurmLauncher

        return SlurmLauncher(slurm, gpus_per_cell=nproc if gpus else 0, max_parallel=max_parallel)
    return Pool(make_slots(gpus, max_parallel, nproc), warm=cells)


def run_sweep(sweep: Sweep, planned: list[PlannedCell], *, launcher: str, gpus, max_parallel, nproc, slurm,
              progress: bool) -> int:
    from tqdm import tqdm


    done = [p for p in planned if p.state == "done"]
    pending = [p for p in planned if p.state != "done"]
    resumed = sum(p.state == "resume" for p in pending)
    click.echo(f"sweep {sweep.name}: {len(planned)} cells, {len(done)} already done, {len(pending)} to run"
               + (f" ({resumed} resume a checkpoint)" if resumed else ""))
    outcomes: dict[str, dict] = {}
    interrupted = False
    if pending:
        t_jobs, waits = teacher_jobs(pending)
        c_jobs = cell_jobs(pending, nproc)
        runner = make_launcher(launcher, gpus, max_parallel, nproc, slurm, cells=len(c_jobs))
        bar = tqdm(total=len(t_jobs) + len(c_jobs), unit="job", disable=not progress, leave=False)
        started = time.monotonic()

        def on_event(event) -> None:
            kind, job, slot, outcome = event
            if kind == "start":
                echo(f"[{clock()}] start   {job.label}  on {slot.name}", bar)
                return
            bar.update(1)
            seconds = f"{outcome.get('seconds', 0):.0f} s"
            if outcome["status"] == "done":
                echo(f"[{clock()}] done    {job.label}  {seconds}  {metrics_text(outcome)}".rstrip(), bar)
            else:
                echo(f"[{clock()}] {outcome['status']:<7} {job.label}  {seconds}  {outcome.get('reason', '')}", bar)

        try:
            if t_jobs:
                echo(f"[{clock()}] {len(t_jobs)} shared teacher(s) first, so no two cells train one in parallel", bar)
                teacher_outcomes = runner.run(t_jobs, on_event)
                failed_teachers = {k: o for k, o in teacher_outcomes.items() if o["status"] != "done"}
                interrupted = any(o["status"] == "interrupted" for o in teacher_outcomes.values())
                kept = []
                for job in c_jobs:
                    why = failed_teachers.get(waits.get(job.key, ""))
                    if why:
                        outcomes[job.key] = {"status": "failed", "reason": f"its teacher: {why.get('reason')}"}
                        bar.update(1)
                    else:
                        kept.append(job)
                c_jobs = kept
            if not interrupted:
                outcomes.update(runner.run(c_jobs, on_event))
        except KeyboardInterrupt:
            interrupted = True
        finally:
            interrupted = interrupted or any(o["status"] == "interrupted" for o in outcomes.values())
            runner.close(interrupt=interrupted)
            bar.close()
        click.echo(f"[{clock()}] {time.monotonic() - started:.0f} s")
    return summary(planned, outcomes, interrupted)


def summary(planned: list[PlannedCell], outcomes: dict[str, dict], interrupted: bool) -> int:
    ran = [p for p in planned if p.digest in outcomes and outcomes[p.digest]["status"] == "done"]
    failed = [p for p in planned if p.digest in outcomes and outcomes[p.digest]["status"] == "failed"]
    skipped = [p for p in planned if p.state == "done"]
    missing = len(planned) - len(ran) - len(failed) - len(skipped)
    click.echo(f"\ndone {len(ran)} / skipped {len(skipped)} (already finished) / failed {len(failed)}"
               + (f" / not run {missing} (interrupted: run the sweep again to finish them)" if missing else ""))
    for p in failed:
        click.echo(f"  failed: {p.name} ({p.digest}): {outcomes[p.digest].get('reason')}", err=True)
    if interrupted:
        return 130
    return 1 if failed or missing else 0
