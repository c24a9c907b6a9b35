"""How long indexing an S³VE-sized ``s3ve`` dataset takes, and how much memory it needs.

Writes a dataset of the paper's scale in the real formats -- 105 nights, 154,573 scored 30-s epochs in all
(per night between 1,100 and 1,700, summing exactly to 154,573), each night with its own hypnogram (four in
five as EDF+ annotations, one in five as CSV) and its own video offset -- then, in a fresh Python process,
builds the index (reads every PSG header, hypnogram and video header; builds the three splits; computes
the fingerprint) and reports the wall time, the process's peak RSS and the tracemalloc peak.

To keep the writing cheap, every night's ``psg.edf`` and ``video.avi`` are hard links to ONE long EDF and ONE
long video covering the longest night; nights shorter than it end with "Sleep stage ?" epochs (unscored, so
dropped) up to the recording's end. The index reads only headers, so what the samples and frames hold
does not change its cost.

Usage: python benchmarks/index_s3ve_scale.py [--dir DIR] [--keep] [--check]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NIGHTS, EPOCHS = 105, 154_573
LOW, HIGH = 1_100, 1_700
EEG_RATE = 128                      # Hz, as the authors' released AttnSleep variant read S³VE
FPS, WIDTH, HEIGHT = 1.0, 64, 48    # a stand-in for 25 fps 320x240: the index reads only the header
LEAD = 10.0                         # seconds of video before the PSG starts (largest offset used)


def night_counts(rng: np.random.Generator) -> np.ndarray:
    counts = rng.integers(LOW, HIGH + 1, NIGHTS)
    while counts.sum() != EPOCHS:   # nudge single nights, staying within [LOW, HIGH], until the sum is exact
        k = int(rng.integers(NIGHTS))
        step = int(np.sign(EPOCHS - counts.sum()))
        if LOW <= counts[k] + step <= HIGH:
            counts[k] += step
    return counts


def write_dataset(root: Path) -> dict:
    from kdbench_plugins.shared import media as _media
    from kdbench_plugins.datasets.sleep import synth

    rng = np.random.default_rng(2024)
    counts = night_counts(rng)
    longest = int(counts.max())
    start = dt.datetime(2021, 5, 1, 21, 30)
    shared = root / "_shared"
    shared.mkdir(parents=True)
    t0 = time.perf_counter()
    n = longest * 30 * EEG_RATE
    signals = {name: (rng.standard_normal(n, dtype=np.float32) * 20.0).astype(np.float64)
               for name in ("EEG F4-M1", "EEG C4-M1", "EEG O2-M1")}
    synth.write_psg(shared / "psg.edf", signals, EEG_RATE, start)
    del signals
    t_edf = time.perf_counter() - t0
    t0 = time.perf_counter()
    frames = int(np.ceil((longest * 30 + LEAD + 2) * FPS))
    base = np.linspace(40, 200, WIDTH).astype(np.uint8)[None, None, :].repeat(HEIGHT, 1)
    drift = np.round(10 + 10 * np.sin(np.arange(frames) / 50.0)).astype(np.uint8)
    video = base + drift[:, None, None]             # uint8 throughout: 51k frames stay ~150 MiB
    _media.write_avi(shared / "video.avi", video, FPS)
    del video
    t_video = time.perf_counter() - t0

    t0 = time.perf_counter()
    rows = ["subject,ahi,video_offset"]
    for i, count in enumerate(counts):
        name = f"P{i + 1:03d}"
        folder = root / name
        folder.mkdir()
        os.link(shared / "psg.edf", folder / "psg.edf")
        os.link(shared / "video.avi", folder / "video.avi")
        stages = synth.stage_sequence(rng, int(count), first="W", movement=0.0, unknown=0)
        stages += ["?"] * (longest - int(count))               # unscored up to the recording's end
        if i % 5 == 4:
            synth.write_hypnogram_csv(folder / "hypnogram.csv", stages)
        else:
            synth.write_hypnogram_edf(folder / "hypnogram.edf", stages, start)
        lo, hi = synth.AHI_RANGES[i % 4]
        rows.append(f"{name},{rng.uniform(lo, hi):.1f},{-rng.uniform(0.5, LEAD):.2f}")
    (root / "subjects.csv").write_text("\n".join(rows) + "\n")
    t_hyp = time.perf_counter() - t0
    size = lambda p: p.stat().st_size / 2**20
    return {"nights": NIGHTS, "epochs": int(counts.sum()), "min": int(counts.min()), "max": longest,
            "edf_mib": size(shared / "psg.edf"), "video_mib": size(shared / "video.avi"), "video_frames": frames,
            "write_edf_s": t_edf, "write_video_s": t_video, "write_hypnograms_s": t_hyp}


#: runs in a fresh interpreter so the memory figures are the index's, not the generator's.
CHILD = r"""
import json, resource, sys, time, tracemalloc

def hwm():
    # peak RSS of this process image (VmHWM, reset by exec; Linux)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
root, trace, deep = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
t0 = time.perf_counter()
from kdbench_plugins.datasets.sleep.s3ve import S3VE, S3VEOptions
t_import = time.perf_counter() - t0
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
hwm_before = hwm()
if trace:
    tracemalloc.start()
t0 = time.perf_counter()
data = S3VE(S3VEOptions(root=root), seed=0)
t_init = time.perf_counter() - t0
t1 = time.perf_counter()
data.fingerprint()
t_fp = time.perf_counter() - t1
t1 = time.perf_counter()
sizes = {s: len(data.split(s)) for s in data.splits}
t_splits = time.perf_counter() - t1
total = time.perf_counter() - t0
out = {"import_s": t_import, "init_s": t_init, "splits_s": t_splits, "fingerprint_s": t_fp, "index_s": total,
       "sizes": sizes, "problems": [p.line() for p in data.problems],
       "rss_before_mib": rss_before / 1024, "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
       "hwm_before_mib": hwm_before, "hwm_peak_mib": hwm()}
if trace:
    out["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
if deep:
    t1 = time.perf_counter()
    report = data.check()
    out["check_s"] = time.perf_counter() - t1
    out["check_problems"] = len(report.problems)
print(json.dumps(out))
"""


def measure(root: Path, trace: bool, deep: bool = False) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(root), "1" if trace else "0", "1" if deep else "0"],
                          capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="folder to write the dataset into (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the written dataset")
    parser.add_argument("--check", action="store_true", help="also time the full check (demuxes every video)")
    parser.add_argument("--write-only", metavar="ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_only:
        print(json.dumps(write_dataset(Path(args.write_only))))
        return
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="s3ve-scale-"))
    root = base / "s3ve"
    # The writing runs in its own process: on Linux a child's ru_maxrss starts from its parent's RSS at fork
    # time, so a parent that had held the generator's arrays would inflate the index's figure.
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--write-only", str(root)], capture_output=True, text=True, check=True)
    written = json.loads(done.stdout.strip().splitlines()[-1])
    written["write_total_s"] = time.perf_counter() - t0
    plain = measure(root, trace=False, deep=args.check)
    traced = measure(root, trace=True)
    assert not plain["problems"], plain["problems"]
    assert sum(plain["sizes"].values()) == EPOCHS, plain["sizes"]

    print(f"s3ve index at S³VE scale: {written['nights']} nights, {written['epochs']:,} scored epochs "
          f"({written['min']}-{written['max']} per night); psg.edf ({written['edf_mib']:.0f} MiB, 3 ch at {EEG_RATE} Hz) "
          f"and video.avi ({written['video_mib']:.0f} MiB, {written['video_frames']:,} frames at {FPS:g} fps) are "
          f"hard links to one file each; hypnograms distinct (1 in 5 CSV)")
    rows = [
        ("write the dataset (generator)", f"{written['write_total_s']:.1f} s", ""),
        ("import kdbench + plugin (fresh process)", f"{plain['import_s']:.2f} s", ""),
        ("index: headers, hypnograms, video probes", f"{plain['init_s']:.2f} s", ""),
        ("index: fingerprint (stat of every file)", f"{plain['fingerprint_s']:.3f} s", ""),
        ("index: build train/val/test splits", f"{plain['splits_s']:.2f} s",
         " / ".join(f"{k} {v:,}" for k, v in plain["sizes"].items())),
        ("index total (target < 10 s)", f"{plain['index_s']:.2f} s", "PASS" if plain["index_s"] < 10 else "FAIL"),
        ("peak RSS after imports (ru_maxrss)", f"{plain['rss_before_mib']:.0f} MiB", "kdbench and torch imported"),
        ("peak RSS of the process (ru_maxrss; target < 1 GB)", f"{plain['rss_peak_mib']:.0f} MiB",
         "PASS" if plain["rss_peak_mib"] < 1024 else "FAIL"),
        ("same, VmHWM of the process image", f"{plain['hwm_peak_mib']:.0f} MiB",
         f"+{plain['hwm_peak_mib'] - plain['hwm_before_mib']:.0f} MiB for the index"),
        ("tracemalloc peak during indexing", f"{traced['tracemalloc_peak_mib']:.1f} MiB", ""),
    ]
    if args.check:
        rows.append(("full check (EEG read + demux of every video)", f"{plain['check_s']:.1f} s",
                     f"{plain['check_problems']} problems"))
    width = max(len(r[0]) for r in rows)
    print(f"{'figure'.ljust(width)}  {'value':>10}  note")
    for name, value, note in rows:
        print(f"{name.ljust(width)}  {value:>10}  {note}")
    if not args.keep and not args.dir:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    elif args.keep or args.dir:
        print(f"dataset kept in {root}")


if __name__ == "__main__":
    main()
