"""Teacher-output reuse in a sweep: the teacher's forward passes counted, and the wall time, with and without.

A sweep file of the nine distillers (kd, fitnet, pkt, rkd, crd, ifd, cmc, ccl, sacd) on small ``synthetic`` data
is written to a temporary folder and run by the real command, ``kdbench sweep FILE --max-parallel 1``, twice per
round, each time in a fresh teacher cache, tracking store and output folder: once as it is (``teacher_cache =
true``, the default: the sweep's shared-teacher job trains the teacher and stores its outputs once, every cell
reads them) and once with ``--set teacher_cache=false`` (every cell runs the frozen teacher on every batch of
every epoch). Rounds alternate which goes first (ABBA); the wall-time figure is the median of the per-round ratios.

How the forward passes are counted: the sweep's work happens in worker processes, so the benchmark installs, for
these runs only, a tiny kdbench plugin (an entry point in a temporary ``*.dist-info`` on ``PYTHONPATH``; kdbench
loads it in every process like any plugin) that wraps the ``tiny-eeg`` teacher's ``forward`` and appends one line
per call (phase, samples) to a file. The phase is read from the call stack: inside ``fit_teacher`` (the
teacher's own training and its per-epoch evaluation, the same in both variants), inside
``teacher_outputs.compute`` (storing the outputs), or anywhere else (the cells: the frozen teacher's forward in
each training step, scoring the teacher on the test split, probing its widths). The plugin only counts: the
numbers are what the engine really ran, not what its logs say it ran. Its cost (one short file append per
forward call) is far below a forward pass; it is there in both variants.

    python benchmarks/teacher_reuse.py [--quick] [--json out.json]
"""

from __future__ import annotations

import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DISTILLERS = ["kd", "fitnet", "pkt", "rkd", "crd", "ifd", "cmc", "ccl", "sacd"]
#: the dataset's default sizes (800 train / 400 test clips), fewer epochs than its 30; --quick: two cells, tiny data
FULL = {"epochs": 12, "dataset.train_size": 800, "dataset.test_size": 400, "teacher_training.epochs": 3}
QUICK = {"epochs": 1, "dataset.train_size": 64, "dataset.test_size": 32, "teacher_training.epochs": 1}
ROUNDS = {False: 2, True: 0}   # --quick runs its two sweeps at once instead
PHASES = ("teacher training", "storing outputs", "cells")

COUNTER = '''"""Counts the tiny-eeg teacher's forward passes for benchmarks/teacher_reuse.py (a kdbench plugin)."""
import os
import sys

from kdbench_plugins.teachers.tiny_eeg import TinyEEGNet

PATH = os.environ["KDBENCH_BENCH_COUNT"]
original = TinyEEGNet.forward


def phase():
    frame = sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "fit_teacher":
            return "teacher training"
        if code.co_name == "compute" and code.co_filename.endswith("teacher_outputs.py"):
            return "storing outputs"
        frame = frame.f_back
    return "cells"


def forward(self, x):
    with open(PATH, "a") as out:
        out.write(f"{phase()}\\t{x.shape[0]}\\n")
    return original(self, x)


TinyEEGNet.forward = forward
'''


def write_counter(folder: Path) -> None:
    """The counting plugin: a module and the dist-info that declares it as a ``kdbench`` entry point."""
    (folder / "kdbench_bench_counter.py").write_text(COUNTER)
    info = folder / "kdbench_bench_counter-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kdbench-bench-counter\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[kdbench]\nbench-teacher-counter = kdbench_bench_counter\n")


def sweep_file(path: Path, distillers: list[str], sizes: dict) -> None:
    lines = ['title = "teacher-output reuse benchmark"', "", "[grid]", 'dataset = "synthetic"',
             f"distiller = {json.dumps(distillers)}", "", "[set]"]
    lines += [f'"{key}" = {value}' for key, value in sizes.items()]
    path.write_text("\n".join(lines) + "\n")


def run_sweep(work: Path, name: str, sweep: Path, cells: int, plugin_dir: Path, extra: list[str]) -> dict:
    """One ``kdbench sweep`` in fresh folders; its wall time, the sweep's own clock and the counted forwards."""
    folder = work / name
    folder.mkdir()
    count = folder / "forwards.tsv"
    count.touch()
    env = {**os.environ, "KDBENCH_CACHE_DIR": str(folder / "cache"), "KDBENCH_BENCH_COUNT": str(count),
           "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(plugin_dir), os.environ.get("PYTHONPATH")) if p)}
    argv = [sys.executable, "-m", "kdbench", "sweep", str(sweep), "--max-parallel", "1",
            "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}", "--set", f"output_dir={folder / 'runs'}", *extra]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0 or f"done {cells} /" not in done.stdout:
        raise RuntimeError(f"sweep {name} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    clocks = re.findall(r"^\[[^\]]+\] (\d+) s$", done.stdout, re.MULTILINE)
    calls: collections.Counter = collections.Counter()
    samples: collections.Counter = collections.Counter()
    for line in count.read_text().splitlines():
        phase, n = line.split("\t")
        calls[phase] += 1
        samples[phase] += int(n)
    return {"wall_s": wall, "sweep_clock_s": int(clocks[-1]) if clocks else None,
            "calls": dict(calls), "samples": dict(samples)}


def teacher_share(sizes: dict, repeats: int) -> dict:
    """In this process, side by side (interleaved, one thread): the frozen teacher's forward over the train split,
    which is what stored outputs save every cell in every epoch, against the student's training over the same
    batches (forward, a loss, backward, Adam step). Their ratio bounds what reuse can save on this dataset."""
    import torch

    from kdbench.config import merge, parse_set, resolve
    from kdbench.engine.build import build_dataset, build_model
    from kdbench.plugins import plugins

    torch.set_num_threads(1)
    layer: dict = {"dataset": {"name": "synthetic"}, "distiller": {"name": "kd"}}
    for key in ("dataset.train_size", "dataset.test_size"):
        layer = merge(layer, parse_set(f"{key}={sizes[key]}"))
    config = resolve([layer], plugins())
    dataset = build_dataset(config, plugins())
    teacher = build_model("teacher", config, plugins(), dataset.info).eval()
    student = build_model("student", config, plugins(), dataset.info).train()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    split, size = dataset.split("train"), config.batch_size
    batches = [(split.teacher[i:i + size], split.student[i:i + size]) for i in range(0, len(split), size)]

    def teacher_pass():
        with torch.no_grad():
            for eeg, _ in batches:
                teacher(eeg)

    def student_pass():
        for _, clips in batches:
            loss = student(clips).logits.logsumexp(dim=1).mean()   # a loss of a loss's cost; its value is not used
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    times: dict[str, list[float]] = {"teacher": [], "student": []}
    for _ in range(repeats):
        for name, fn in (("teacher", teacher_pass), ("student", student_pass)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {"teacher_epoch_s": statistics.median(times["teacher"]),
            "student_epoch_s": statistics.median(times["student"]),
            "teacher_vs_student": statistics.median(t / s for t, s in zip(times["teacher"], times["student"]))}


def table(stored: dict, live: dict, ratio: float, clock_ratio: float | None) -> str:
    lines = ["| | teacher_cache = true (stored outputs) | teacher_cache = false | false ÷ true |",
             "| --- | --- | --- | --- |"]
    for phase in PHASES:
        a, b = stored["samples"].get(phase, 0), live["samples"].get(phase, 0)
        ca, cb = stored["calls"].get(phase, 0), live["calls"].get(phase, 0)
        lines.append(f"| teacher forward, {phase}: samples (calls) | {a:,} ({ca:,}) | {b:,} ({cb:,}) | "
                     f"{b / a:.1f}× |" if a else f"| teacher forward, {phase}: samples (calls) | {a:,} ({ca:,}) | "
                     f"{b:,} ({cb:,}) | – |")
    total_a, total_b = sum(stored["samples"].values()), sum(live["samples"].values())
    lines.append(f"| **teacher forward, all: samples** | **{total_a:,}** | **{total_b:,}** | "
                 f"**{total_b / total_a:.1f}×** |")
    lines.append(f"| sweep wall time, median (s) | {stored['wall_s']:.1f} | {live['wall_s']:.1f} | **{ratio:.2f}×** |")
    if clock_ratio is not None:
        lines.append(f"| the sweep's own clock (jobs only), median (s) | {stored['sweep_clock_s']} | "
                     f"{live['sweep_clock_s']} | {clock_ratio:.2f}× |")
    return "\n".join(lines)


def run(quick: bool = False) -> dict:
    sizes, rounds = QUICK if quick else FULL, ROUNDS[quick]
    distillers = ["kd", "crd"] if quick else DISTILLERS   # two: a shared-teacher job needs two cells
    results: dict[str, list[dict]] = {"stored": [], "live": []}
    with tempfile.TemporaryDirectory(prefix="kdbench-reuse-") as tmp:
        work = Path(tmp)
        plugin_dir = work / "plugin"
        plugin_dir.mkdir()
        write_counter(plugin_dir)
        sweep = work / "reuse.toml"
        sweep_file(sweep, distillers, sizes)
        if not quick:  # untimed: brings torch, MLflow and the plugins into the page cache for both variants alike
            subprocess.run([sys.executable, "-m", "kdbench", "sweep", str(sweep), "--dry-run"], cwd=work,
                           capture_output=True, check=False)
        variants = [("stored", []), ("live", ["--set", "teacher_cache=false"])]
        if quick:  # the two at once: a smoke test of the whole path, not a timing
            with ThreadPoolExecutor(2) as pool:
                futures = {name: pool.submit(run_sweep, work, f"{name}-0", sweep, len(distillers), plugin_dir, extra)
                           for name, extra in variants}
            for name, future in futures.items():
                results[name].append(future.result())
        for round_ in range(rounds):
            for name, extra in variants if round_ % 2 == 0 else variants[::-1]:
                results[name].append(run_sweep(work, f"{name}-{round_}", sweep, len(distillers), plugin_dir, extra))
    share = teacher_share(sizes, 3 if quick else 7)
    ratio = statistics.median(b["wall_s"] / a["wall_s"] for a, b in zip(results["stored"], results["live"]))
    clocks = [(a["sweep_clock_s"], b["sweep_clock_s"]) for a, b in zip(results["stored"], results["live"])]
    clock_ratio = statistics.median(b / a for a, b in clocks) if all(a and b for a, b in clocks) else None
    median = lambda rows, key: statistics.median(r[key] for r in rows)
    stored = {**results["stored"][0], "wall_s": median(results["stored"], "wall_s"),
              "sweep_clock_s": median(results["stored"], "sweep_clock_s")}
    live = {**results["live"][0], "wall_s": median(results["live"], "wall_s"),
            "sweep_clock_s": median(results["live"], "sweep_clock_s")}
    consistent = all(r["samples"] == results[k][0]["samples"] for k in results for r in results[k])
    setting = ", ".join(f"{k} = {v}" for k, v in sizes.items())
    notes = [
        (f"{len(distillers)} cells ({', '.join(distillers)}), synthetic with {setting}; one worker, one thread "
        f"(--max-parallel 1, OMP_NUM_THREADS=1); {rounds or 1} round(s) in ABBA order, fresh cache, store and output "
        f"folder for every sweep; wall time = the whole `kdbench sweep` process, the sweep's clock = its jobs"),
        ("counted by a plugin that wraps the tiny-eeg teacher's forward in every process of the sweep; phase from the "
        "call stack: the teacher's own training (with its per-epoch test evaluation), storing outputs, cells"),
        "the same counts in every round" if consistent else "counts differed between rounds (see figures)",
    ]
    notes.append(f"what stored outputs can save: in this process, the frozen tiny-eeg teacher's forward over the "
                 f"train split takes {share['teacher_epoch_s']:.2f} s against {share['student_epoch_s']:.2f} s for "
                 f"the student's training over the same batches (median ratio {share['teacher_vs_student']:.2f}): "
                 f"that share of each cell's epochs, not of the whole cell (start, data, tracking), is the saving")
    if quick:
        notes.append("--quick checks that the benchmark works: its two sweeps run at the same time, at one epoch of "
                     "64 clips, so the counts are right but the time ratio means nothing")
    total_a, total_b = sum(stored["samples"].values()), sum(live["samples"].values())
    return {"name": "teacher_reuse", "title": f"Teacher-output reuse in a {len(distillers)}-distiller sweep",
            "table": table(stored, live, ratio, clock_ratio), "notes": notes,
            "figures": {"wall_ratio": ratio, "clock_ratio": clock_ratio, "teacher_samples_stored": total_a,
                        "teacher_samples_live": total_b,
                        "cells_teacher_samples_stored": stored["samples"].get("cells", 0), "teacher_share": share,
                        "distillers": distillers, "sizes": sizes, "quick": quick, "rounds": results}}


def main() -> None:
    from run_all import script_main  # this script's folder is on sys.path when it runs

    script_main(__doc__, run, "two cells, tiny sizes, the two sweeps at once (a smoke test)")


if __name__ == "__main__":
    main()
