"""Training throughput of the video students under kdbench's GPU fast paths: clips per second.

R3D-18 and R(2+1)D-18 train on 16 × 112 × 112 clips in batches of 16 (the SACD paper's setting) with KD from
a frozen teacher whose outputs are stored (so the teacher costs nothing per step), in four variants, each a
kdbench run configuration (`amp`, `channels_last`, `compile`):

    fp32                      amp = false
    bf16                      amp = "bf16"
    bf16 + channels_last      amp = "bf16", channels_last = true
    bf16 + cl + compile       the same, compile = true

Each variant trains one warm-up epoch (compilation, cuDNN's algorithm search, allocator growth), then EPOCHS
timed epochs through kdbench's own loop (``kdbench.engine.loop.train_epoch``), synchronising the GPU before
each clock read; the figure is clips / s of the median epoch, and its ratio to fp32 in the same run.

Written for one CUDA GPU (``cudnn_benchmark`` on, as a user would set it there); it names the GPU and writes
JSON. Without CUDA (and with --quick) it runs on the CPU with tiny shapes (4 × 16 × 16 clips, batch 2,
compile through the 'eager' backend, since inductor's C++ compilation takes minutes on a CPU, and oneDNN off:
its bfloat16 3-D convolutions give non-finite weight gradients at such small shapes on CPUs without native
bfloat16, measured on this AMD EPYC with torch 2.14.1, while ATen's own kernels do not): that checks the paths
still run and is what the test suite does; its numbers say nothing about a GPU.

    python benchmarks/gpu_throughput.py                  # CUDA if present, else the CPU smoke run
    python benchmarks/gpu_throughput.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

VARIANTS = {
    "fp32": {"amp": False},
    "bf16": {"amp": "bf16"},
    "bf16 + channels_last": {"amp": "bf16", "channels_last": True},
    "bf16 + channels_last + compile": {"amp": "bf16", "channels_last": True, "compile": True},
}
STUDENTS = ("r3d18", "r2plus1d18")


def shapes(cuda: bool) -> dict:
    if cuda:
        return {"frames": 16, "size": 112, "batch": 16, "batches": 12, "epochs": 3, "backend": "inductor"}
    return {"frames": 4, "size": 16, "batch": 2, "batches": 2, "epochs": 1, "backend": "eager"}


def measure(student: str, variant: dict, s: dict, device: str, folder: str) -> float | None:
    """Clips / s of one variant: a warm-up epoch, then the median of the timed epochs; None if its training
    diverged (a non-finite loss), which the table reports instead of a speed."""
    import torch

    from kdbench.config import resolve
    from kdbench.engine import loop, prepare
    from kdbench.engine.fit import fit_teacher_stage
    from kdbench.errors import KdbenchError
    from kdbench.plugins import plugins
    from kdbench.tracking import MemoryTracker

    clips = s["batch"] * s["batches"]
    layer = {"dataset": {"name": "synthetic", "train_size": clips, "test_size": s["batch"], "frames": s["frames"],
                         "height": s["size"], "width": s["size"], "labelled_fraction": 1.0},
             "student": {"name": student}, "distiller": {"name": "kd"}, "batch_size": s["batch"], "epochs": 1,
             "device": device, "cudnn_benchmark": device.startswith("cuda"), "compile_backend": s["backend"],
             "teacher_training": {"epochs": 1}, "output_dir": folder,
             "tracking": {"uri": f"sqlite:///{folder}/mlflow.db"}, **variant}   # a run's set-up opens its store
    config = resolve([layer], plugins())
    prepared = prepare(config, plugins(), progress=False, echo=lambda message: None)
    fit_teacher_stage(prepared, MemoryTracker(), progress=False, echo=lambda message: None)  # store its outputs
    t = prepared.training
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    for epoch in range(1 + s["epochs"]):
        sync()
        start = time.perf_counter()
        try:
            loop.train_epoch(t.loss_fn, t.modules, t.train_data, t.optimizer, device=t.device, scaler=t.scaler,
                             epoch=epoch, progress=False, desc="")
        except KdbenchError:   # a non-finite loss: no speed to report
            return None
        sync()
        if epoch:   # the first is the warm-up
            times.append(time.perf_counter() - start)
    return clips / statistics.median(times)


def run(quick: bool = False) -> dict:
    import torch

    cuda = torch.cuda.is_available() and not quick
    device = "cuda" if cuda else "cpu"
    s = shapes(cuda)
    name = torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    results: dict[str, dict[str, float | None]] = {}
    with tempfile.TemporaryDirectory() as folder, torch.backends.mkldnn.flags(enabled=cuda):
        os.environ.setdefault("KDBENCH_CACHE_DIR", os.path.join(folder, "cache"))
        for student in STUDENTS[:1] if quick else STUDENTS:
            results[student] = {label: measure(student, variant, s, device, folder)
                                for label, variant in VARIANTS.items()}
    rows = ["| student | variant | clips / s | × fp32 |", "| --- | --- | --: | --: |"]
    for student, by_variant in results.items():
        for label, rate in by_variant.items():
            base = by_variant["fp32"]
            shown = ("diverged (non-finite loss)", "—") if rate is None else (
                f"{rate:.1f}", f"{rate / base:.2f}" if base else "—")
            rows.append(f"| `{student}` | {label} | {shown[0]} | {shown[1]} |")
    clip = f"{s['frames']} × {s['size']} × {s['size']}"
    return {"name": "gpu_throughput", "title": "Training throughput under the GPU fast paths",
            "device": name, "cuda": cuda, "clip": clip, "batch": s["batch"], "compile_backend": s["backend"],
            "torch": torch.__version__, "figures": results, "table": "\n".join(rows),
            "notes": [f"{name}; clips {clip}, batch {s['batch']}, KD with stored teacher outputs; the median of "
                      f"{s['epochs']} timed epochs of {s['batch'] * s['batches']} clips after a warm-up epoch",
                      *([] if cuda else ["no CUDA: a smoke run on the CPU with tiny shapes (compile via the "
                                         "'eager' backend, oneDNN off); not a GPU figure"])]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the CPU smoke run with tiny shapes, even with CUDA")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args(argv)
    result = run(quick=args.quick)
    print(f"{result['title']} — {result['device']}\n\n{result['table']}\n")
    for note in result["notes"]:
        print(f"- {note}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
