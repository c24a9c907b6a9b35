"""Sweep scheduling: how close a sweep's makespan comes to the ideal, with one and with two workers.

A sweep file of N small cells (distillers on the embedded ``synthetic`` dataset, so the cells take different
times) is run with ``kdbench sweep FILE --max-parallel P`` for P = 1 and 2, each in a fresh output folder,
teacher cache and tracking store (a copy of one empty store made once: creating a SQLite store costs ~7 s).
The sweep prints a line as each job starts and ends; this script stamps each line as it arrives, so it knows
when every job held a worker. For each P, from that one run:

- ``cell phase``: first cell start → last cell end; ``ideal`` = the sum of the cell times of the same run / P;
  ``makespan / ideal`` (1 = no slot ever idle while a cell waited) and the idle fraction
  ``1 − Σ cell times / (P · makespan)``: the share of worker time spent waiting for the last cells. The first
  job a worker runs also pays for that process's first-time work (before `2473b22` it started the process
  itself: importing torch, the plugins and MLflow; since then the workers start with the pool, and what is
  left is the first run's own set-up); the ratio is given again with that cell counted as a typical (median)
  one.
- ``whole``: the sweep command from start to exit: imports and planning, the shared teacher (trained once,
  as its own job, before any cell; counted here and not in the cell phase), the cells, the workers' exit.

Only the ratios mean something; the speed-up of P = 2 over P = 1 is given too, but on this 2-core machine
P = 2 also measures CPU contention: the sweep gives each CPU worker ``OMP_NUM_THREADS = cores / P``
(kdbench/sweep/local.py), so P = 1 runs its cells on 2 threads and P = 2 runs two cells on 1 thread each.

    python benchmarks/sweep_scheduling.py [--quick] [--json out.json]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]

FULL = {"distillers": ["baseline", "kd", "fitnet", "pkt", "rkd", "crd", "cmc", "sacd"],
        "set": {"epochs": 4, "teacher_training.epochs": 4, "dataset.train_size": 400, "dataset.test_size": 200},
        "parallel": (1, 2)}
QUICK = {"distillers": ["baseline", "kd"], "parallel": (1,),
         "set": {"epochs": 1, "teacher_training.epochs": 1, "dataset.train_size": 96, "dataset.test_size": 48}}

LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] (start|done|failed)\s+(.*?)  (?:on (.*)|\d+ s)")
CLOSED = re.compile(r"^\[\d\d:\d\d:\d\d\] \d+ s$")  # printed once the pool's workers have exited


def sweep_file(folder: Path, shape: dict) -> Path:
    sets = "\n".join(f'"{k}" = {json.dumps(v)}' for k, v in shape["set"].items())
    path = folder / "bench_sweep.toml"
    path.write_text(f'title = "sweep scheduling benchmark"\n\n[grid]\ndataset = "synthetic"\n'
                    f"distiller = {json.dumps(shape['distillers'])}\nseed = [0]\n\n[set]\n{sets}\n")
    return path


def template_store(folder: Path) -> Path:
    """One empty SQLite tracking store, created once and copied for every sweep."""
    db = folder / "template.db"
    code = f"from kdbench.tracking import check_store; check_store({f'sqlite:///{db}'!r})"
    subprocess.run([PY, "-c", code], check=True, env=child_env(folder / "template-cache"), cwd=folder,
                   capture_output=True)
    return db


def child_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MLFLOW_TRACKING_URI")}
    path = env.get("PYTHONPATH")
    env.update(KDBENCH_CACHE_DIR=str(cache), PYTHONUNBUFFERED="1",
               PYTHONPATH=f"{ROOT}{os.pathsep}{path}" if path else str(ROOT))
    return env


def one_sweep(folder: Path, toml: Path, template: Path | None, parallel: int) -> dict:
    """Runs the sweep in ``folder``; from when each job held a worker (seconds since launch), the figures."""
    folder.mkdir()
    db = folder / "mlflow.db"
    if template is not None:
        shutil.copy(template, db)
    argv = [PY, "-m", "kdbench", "sweep", str(toml), "--max-parallel", str(parallel),
            "--tracking-uri", f"sqlite:///{db}", "--set", f"output_dir={folder / 'runs'}"]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=folder, env=child_env(folder / "cache"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    jobs: dict[str, dict] = {}
    lines, closed, started_workers = [], None, set()
    for line in proc.stdout:
        now = time.perf_counter() - start
        lines.append(line)
        if CLOSED.match(line.strip()):
            closed = now
        m = LINE.match(line)
        if m:
            kind, label, worker = m.groups()
            job = jobs.setdefault(label, {"teacher": label.startswith("teacher ")})
            job["start" if kind == "start" else "end"] = now
            if kind == "start":  # a worker process is started (imports torch, the plugins) with its first job
                job["first_on_worker"] = worker not in started_workers
                started_workers.add(worker)
            if kind == "failed":
                raise RuntimeError(f"a job failed: {line.strip()}")
    if proc.wait() != 0:
        raise RuntimeError(f"the sweep failed ({proc.returncode}):\n{''.join(lines[-20:])}")
    whole = time.perf_counter() - start
    cells = [j for j in jobs.values() if not j["teacher"]]
    teachers = [j for j in jobs.values() if j["teacher"]]
    first, last = min(j["start"] for j in cells), max(j["end"] for j in cells)
    busy = sum(j["end"] - j["start"] for j in cells)
    makespan = last - first
    ideal = busy / parallel
    # the same ratio if starting a worker cost nothing: a cell that started one counted as a typical cell
    typical = statistics.median([j["end"] - j["start"] for j in cells if not j["first_on_worker"]] or [0.0])
    startup = sum(j["end"] - j["start"] - typical for j in cells if j["first_on_worker"])
    return {"parallel": parallel, "cells": len(cells), "whole_s": whole, "cell_phase_s": makespan,
            "makespan_over_ideal_without_worker_start": makespan / ((busy - startup) / parallel),
            "sum_cell_s": busy, "ideal_s": ideal, "makespan_over_ideal": makespan / ideal,
            "idle_fraction": 1 - busy / (parallel * makespan),
            "teacher_phase_s": sum(j["end"] - j["start"] for j in teachers),
            "before_first_job_s": min(j["start"] for j in jobs.values()),
            "pool_close_s": (closed or whole) - last, "exit_after_close_s": whole - (closed or whole),
            "cells_starting_a_worker": sum(j["first_on_worker"] for j in cells),
            "cells_starting_a_worker_s": sum(j["end"] - j["start"] for j in cells if j["first_on_worker"]),
            "median_other_cell_s": typical,
            "cell_s": sorted(round(j["end"] - j["start"], 2) for j in cells)}


def run(quick: bool = False) -> dict:
    shape = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="kdbench-bench-sweep-") as tmp:
        folder = Path(tmp)
        toml = sweep_file(folder, shape)
        template = None if quick else template_store(folder)
        results = {p: one_sweep(folder / f"p{p}", toml, template, p) for p in shape["parallel"]}
    rows = [("| P | cells | Σ cell times (s) | ideal = Σ / P (s) | cell phase (s) | makespan ÷ ideal | idle | "
             "cells that started a worker (s) | makespan ÷ ideal without worker start | teacher phase (s) | "
             "pool close (s) | whole sweep (s) |"),
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results.values():
        rows.append(f"| {r['parallel']} | {r['cells']} | {r['sum_cell_s']:.1f} | {r['ideal_s']:.1f} | "
                    f"{r['cell_phase_s']:.1f} | {r['makespan_over_ideal']:.3f} | {r['idle_fraction']:.1%} | "
                    f"{r['cells_starting_a_worker']} ({r['cells_starting_a_worker_s']:.1f}) | "
                    f"{r['makespan_over_ideal_without_worker_start']:.3f} | {r['teacher_phase_s']:.1f} | {r['pool_close_s']:.1f} | "
                    f"{r['whole_s']:.1f} |")
    figures = {f"p{p}_{k}": (round(v, 4) if isinstance(v, float) else v) for p, r in results.items()
               for k, v in r.items() if k != "parallel"}
    notes = [f"{len(shape['distillers'])} cells ({', '.join(shape['distillers'])}) on `synthetic`, seed 0, "
             f"set {shape['set']}; each P in a fresh store, cache and output folder"
             + (" (quick: P = 1 only, and the sweep creates its store)." if quick else ".")]
    if 1 in results and 2 in results:
        one, two = results[1], results[2]
        figures["speedup_cell_phase_p2_over_p1"] = round(one["cell_phase_s"] / two["cell_phase_s"], 3)
        figures["speedup_whole_p2_over_p1"] = round(one["whole_s"] / two["whole_s"], 3)
        figures["cell_time_p2_over_p1"] = round(two["sum_cell_s"] / one["sum_cell_s"], 3)
        notes.append(f"Speed-up of P = 2 over P = 1: cell phase ×{figures['speedup_cell_phase_p2_over_p1']}, "
                     f"whole sweep ×{figures['speedup_whole_p2_over_p1']}; the cells take "
                     f"×{figures['cell_time_p2_over_p1']} as much worker time at P = 2 (two cells on 2 cores, "
                     "1 thread each, against one cell on 2 threads at P = 1; and see the next note). The two "
                     "sweeps run one after the other, so this speed-up is at the mercy of the machine's other "
                     "load (two OpenMP threads on a busy 2-core machine slow down far more than one); "
                     "makespan ÷ ideal compares times within one sweep.")
    notes += [
        ("A cell's time is how long it held its worker (start line → end line). The shared teacher is its own "
         "job on worker 1, before the cells, so at P = 2 the first cell worker 2 takes is that worker's first "
         "job: it pays the process's first-time work (the workers themselves start with the pool, importing "
         "torch, the plugins and MLflow while the teacher trains)."),
        ("Without worker start: the ideal recomputed as if a worker's first job took the median time of the "
         "others, i.e. the makespan against what it would be if that first-time work were free."),
        "Pool close: from the last cell's end to the line the sweep prints once its workers have exited.",
    ]
    return {"name": "sweep_scheduling", "title": "Sweep scheduling: makespan against the ideal",
            "table": "\n".join(rows), "notes": notes, "figures": figures}


def main() -> None:
    from run_all import script_main  # this script's folder is on sys.path when it runs

    script_main(__doc__, run, "P = 1 only, 2 tiny cells (checks the machinery; about 40 s)")


if __name__ == "__main__":
    main()
