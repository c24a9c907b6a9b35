"""Growth: time per training epoch and peak memory against train-set size (×1, ×4, ×16) and batch size.

Targets (issue 15): time linear in the data (so seconds per clip flat), memory flat (data and teacher outputs
memory-mapped, not held in RAM). Each configuration runs in a fresh process (``--worker``), so its memory is its
own; the configurations are interleaved round by round and each figure is a median. A worker imports kdbench and
torch and loads the plugins (its memory then is the baseline), prepares a ``tiny-3dcnn`` + ``kd`` run on its data
(the teacher, ``tiny-eeg``, trained for one epoch and cached by the first worker of each size; its outputs stored
and then read memory-mapped, as every run reads them), and times ``loop.train_epoch`` over the run's own
training loader (batches of 16 or 64, shuffled, 0 workers, one torch thread) for a few epochs. A thread samples
``/proc/self/status`` every 10 ms for the peak of anonymous memory (the heap: what the process really holds)
and of file-backed memory (mapped files and libraries: page cache the kernel can drop and re-read, counted in
RSS once touched), separately for the set-up (dataset, teacher, stored outputs) and for the training epochs.

Two data paths are measured:

* ``synthetic``: the embedded dataset. It is generated in memory by design (``fixed_student_inputs``: one array
  per input and split), so its memory grows with ``train_size``; the table sets that against the arrays' size.
* ``s3ve-cache``: a generated ``s3ve`` dataset (sampled at 8 × 32 × 32 to keep CPU training cheap) whose train
  split was prepared with ``kdbench data prepare``'s code, so every clip is read from a memory-mapped ``.npy``:
  the path real datasets take.

    python benchmarks/growth.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

S3VE_SAMPLING = {"frames": 8, "height": 32, "width": 32}
FIELDS = ("RssAnon", "RssFile")


def status_kib() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in FIELDS:
                out[key] = int(value.split()[0])
    return out


class Sampler(threading.Thread):
    """Peak RssAnon / RssFile of this process, sampled every 10 ms; :meth:`lap` returns the peaks and restarts."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = status_kib()
        self.running = True

    def run(self) -> None:
        while self.running:
            for key, value in status_kib().items():
                self.peak[key] = max(self.peak[key], value)
            time.sleep(0.01)

    def lap(self) -> dict[str, int]:
        peak, self.peak = self.peak, status_kib()
        return peak


def worker(spec: dict) -> dict:
    """One configuration, in this (fresh) process."""
    import torch

    from kdbench.config import resolve
    from kdbench.engine import loop, prepare
    from kdbench.engine.fit import fit_teacher_stage
    from kdbench.plugins import plugins
    from kdbench.tracking import NullTracker

    torch.set_num_threads(1)
    found = plugins()
    baseline = status_kib()
    sampler = Sampler()
    sampler.start()
    dataset = ({"name": "synthetic", "train_size": spec["size"]} if spec["kind"] == "synthetic" else
               {"name": "s3ve", "root": spec["root"], **S3VE_SAMPLING})
    config = resolve([{"dataset": dataset, "teacher": {"name": "tiny-eeg"}, "student": {"name": "tiny-3dcnn"},
                       "distiller": {"name": "kd"}, "seed": 0, "epochs": spec["epochs"],
                       "batch_size": spec["batch"], "num_workers": 0, "device": "cpu",
                       "output_dir": spec["output_dir"],
                       "teacher_training": {"epochs": 1, "batch_size": 64}}], found)
    quiet = lambda *a, **k: None
    p = prepare(config, found, progress=False, echo=quiet)
    fit_teacher_stage(p, NullTracker(), progress=False, echo=quiet)
    t = p.training
    train = t.train_data.dataset
    if spec["kind"] == "synthetic":
        held = sum(s.student.nbytes + s.teacher.nbytes for s in (train, p.dataset.split("test")))
    else:
        assert train._prepared(), "the s3ve train split has no prepared cache"
        held = 0
    setup = status_kib()
    setup_peak = sampler.lap()
    seconds = []
    for epoch in range(spec["epochs"]):
        loop.reseed(loop.epoch_seed(t.seed, epoch))
        t.generator.manual_seed(loop.epoch_seed(t.seed, epoch))
        t.on_epoch_start(epoch)
        start = time.perf_counter()
        loop.train_epoch(t.loss_fn, t.modules, t.train_data, t.optimizer, device=t.device, scaler=t.scaler,
                         epoch=epoch, progress=False, desc="")
        seconds.append(time.perf_counter() - start)
    sampler.running = False
    sampler.join()
    return {"clips": len(train), "epoch_s": seconds, "baseline_kib": baseline, "after_setup_kib": setup,
            "setup_peak_kib": setup_peak, "train_peak_kib": sampler.peak,
            "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "dataset_bytes_in_ram": held}


def spawn(argv: list[str], env: dict) -> str:
    done = subprocess.run([sys.executable, *argv], check=False, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:2]} failed: {done.stderr[-2000:]}")
    return done.stdout


def make_s3ve(work: Path, nights: dict[int, int], env: dict) -> dict[int, str]:
    """Generated s3ve datasets (5 nights each: 3 train, 1 val, 1 test), each with its train split prepared, written
    by one process; ``nights`` maps a size multiple to the epochs per night."""
    roots = {m: str(work / f"s3ve-x{m}") for m in nights}
    spawn([__file__, "--make-s3ve", json.dumps([[roots[m], n] for m, n in nights.items()])], env)
    return roots


def write_s3ve(todo: list[list]) -> None:
    from kdbench.config import validate
    from kdbench.data import prepare
    from kdbench.plugins import plugins

    entry = plugins()["datasets"].get("s3ve")
    for root, epochs in todo:
        Path(root).mkdir(parents=True)
        entry.cls.synthesize(Path(root), validate(entry.cls.SynthOptions, {"subjects": 5, "epochs": epochs}), 0,
                             lambda m: None)
        options = validate(entry.options, {"root": root, **S3VE_SAMPLING})
        prepare(entry.cls(options, 0).split("train"), workers=2)


def run(quick: bool = False) -> dict:
    work = Path(tempfile.mkdtemp(prefix="kdbench-bench-growth-"))
    # a run's set-up opens its tracking store (an MLflow SQLite file here) even though nothing is tracked
    path = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "KDBENCH_CACHE_DIR": str(work / "cache"), "PYTHONPATH": path,
           "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"}
    base = 50 if quick else 400              # synthetic train clips at ×1
    night = 4 if quick else 12               # s3ve epochs per night at ×1 (3 training nights)
    mults = (1, 4) if quick else (1, 4, 16)
    rounds = 1 if quick else 2
    epochs = 2 if quick else 3
    batches = (16,) if quick else (16, 64)
    try:
        start = time.perf_counter()
        roots = make_s3ve(work, {m: night * m for m in mults}, env)
        s3ve_setup_s = time.perf_counter() - start
        specs = [{"kind": "synthetic", "size": base * m, "mult": m, "batch": b} for b in batches for m in mults]
        specs += [{"kind": "s3ve-cache", "root": roots[m], "mult": m, "batch": 16} for m in mults]
        results: dict[int, list[dict]] = {i: [] for i in range(len(specs))}

        def one(i: int) -> tuple[int, dict]:
            spec = {**specs[i], "epochs": epochs, "output_dir": str(work / "runs")}
            return i, json.loads(spawn([__file__, "--worker", json.dumps(spec)], env).strip().splitlines()[-1])

        # quick: two processes at a time, only to check that it all still works (its times are not figures)
        with ThreadPoolExecutor(2 if quick else 1) as pool:
            for _ in range(rounds):
                for i, out in pool.map(one, range(len(specs))):
                    results[i].append(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report(specs, results, rounds, epochs, s3ve_setup_s)


def report(specs, results, rounds, epochs, s3ve_setup_s) -> dict:
    mib = lambda kib: kib / 1024
    rows = [("| data | batch | size | train clips | s / epoch | ms / clip | per clip ÷ ×1 | set-up: anon peak "
             "+MiB | data arrays in RAM (MiB) | epochs: anon peak +MiB | epochs: file-backed peak MiB |"),
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    figures: dict = {}
    per_clip_x1: dict = {}
    for i, spec in enumerate(specs):
        runs = results[i]
        clips = runs[0]["clips"]
        epoch_s = statistics.median(s for r in runs for s in (r["epoch_s"][1:] or r["epoch_s"]))
        per_clip = epoch_s / clips
        per_clip_x1.setdefault((spec["kind"], spec["batch"]), per_clip)
        ratio = per_clip / per_clip_x1[(spec["kind"], spec["batch"])]
        setup_anon, train_anon = (
            mib(statistics.median(r[phase]["RssAnon"] - r["baseline_kib"]["RssAnon"] for r in runs))
            for phase in ("setup_peak_kib", "train_peak_kib"))
        train_file = mib(statistics.median(r["train_peak_kib"]["RssFile"] for r in runs))
        held = runs[0]["dataset_bytes_in_ram"] / 2**20
        rows.append(f"| {spec['kind']} | {spec['batch']} | ×{spec['mult']} | {clips:,} | {epoch_s:.2f} | "
                    f"{1000 * per_clip:.2f} | {ratio:.2f} | {setup_anon:.0f} | {held:.1f} | {train_anon:.0f} | "
                    f"{train_file:.0f} |")
        figures[f"{spec['kind']}/b{spec['batch']}/x{spec['mult']}"] = {
            "clips": clips, "epoch_s": round(epoch_s, 4), "epoch_s_each": [r["epoch_s"] for r in runs],
            "per_clip_vs_x1": round(ratio, 3),
            "setup_anon_peak_over_baseline_mib": round(setup_anon, 1), "data_in_ram_mib": round(held, 1),
            "train_anon_peak_over_baseline_mib": round(train_anon, 1),
            "train_file_rss_peak_mib": round(train_file, 1),
            "maxrss_mib": round(mib(statistics.median(r["maxrss_kib"] for r in runs)), 1),
            "baseline_anon_mib": round(mib(statistics.median(r["baseline_kib"]["RssAnon"] for r in runs)), 1)}
    notes = [(f"{rounds} round(s) of fresh processes, configurations interleaved; {epochs} epochs per process, the "
              f"first left out of the median when there are more"),
             ("tiny-3dcnn student, kd distiller, stored tiny-eeg teacher outputs (memory-mapped), num_workers 0, 1 "
              "torch thread, CPU"),
             (f"s3ve-cache: 5 generated nights (3 train), sampled at {S3VE_SAMPLING}; generating and preparing the "
              f"datasets took {s3ve_setup_s:.0f} s (not part of the figures)"),
             ("+MiB = peak anonymous RSS above the baseline (after importing torch and kdbench and loading the "
              "plugins); the file-backed column is absolute (shared libraries included)")]
    return {"name": "growth", "title": "Growth: time per epoch and memory against train-set and batch size",
            "table": "\n".join(rows), "notes": notes, "figures": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--make-s3ve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.make_s3ve:
        write_s3ve(json.loads(args.make_s3ve))
        return
    result = run(args.quick)
    from run_all import report  # this script's folder is on sys.path when it runs

    report(result, args.json)


if __name__ == "__main__":
    main()
