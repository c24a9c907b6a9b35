"""Clips per second through the training DataLoader: the prepared cache with 0, 1, 2 workers, against decoding.

What a GPU sees is the loader, not ``split[i]``: this benchmark drives kdbench's own
:func:`kdbench.engine.loop.loader` (its collate, batch 16, shuffled as training shuffles) over an ``s3ve`` split
and counts clips per second, all variants in one process, interleaved epoch by epoch, medians taken:

1. *cache, 0/1/2 workers*: a generated dataset (generator's small, cheap video) whose train split was prepared
   with ``kdbench data prepare``'s code; each item is a 16 × 112 × 112 gray clip + a 1 × 3000 EEG epoch, the same
   whatever the source video was, so the source format does not matter here. Workers are persistent (as in
   training), so the first, worker-starting epoch of each loader is left out.
   A what-if row reads the same cache but leaves the pixels uint8 (``ClipSplit.to_tensor`` overridden on the
   instance, no core change): the cost of converting to float32 in the loader, and of moving 4× the bytes from a
   worker, which a conversion on the device would avoid.
2. *decode, 0 workers*: the same loader over split items decoded from files with no cache. Decoding cost depends
   on the video, so this uses a second dataset written in S³VE's format (Xvid AVI, 320 × 240, 25 fps, so a 30-s
   clip decodes ≈ 750 frames); the cheap generator video's decoding is shown too, for context.

It then turns the figures into a GPU-feeding margin for R3D-18 at 16 × 112 × 112 (s3ve's default student):
the multiply-accumulates of one clip are counted with forward hooks on kdbench's own ``r3d18`` (every Conv3d:
output elements × input channels / groups × kernel volume; the Linear layer: in × out), a training step is taken
as 3 forward passes, and an assumed utilisation of a GPU's vendor peak gives the clips/s it would consume.

    python benchmarks/data_path.py [--quick] [--json PATH]
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

BATCH = 16
#: dense tensor-core peaks from the vendors' data sheets (A100: bf16; V100: fp16), TFLOP/s
GPUS = {"A100 (bf16)": 312.0, "V100 (fp16)": 125.0}
UTILISATION = 0.40   # an assumed, typical share of peak that conv-net training achieves (stated, not measured)


def synth(root: Path, options: dict) -> float:
    from kdbench.config import validate
    from kdbench.plugins import plugins

    entry = plugins()["datasets"].get("s3ve")
    root.mkdir(parents=True)
    start = time.perf_counter()
    entry.cls.synthesize(root, validate(entry.cls.SynthOptions, options), 0, lambda m: None)
    return time.perf_counter() - start


def train_split(root: Path):
    """The train split of an s3ve dataset at ``root`` with every subject in it (no test / val share)."""
    from kdbench.config import validate
    from kdbench.plugins import plugins

    entry = plugins()["datasets"].get("s3ve")
    options = validate(entry.options, {"root": str(root), "test_fraction": 0.0, "val_fraction": 0.0})
    return entry.cls(options, 0).split("train")


def make_loader(split, workers: int):
    import torch

    from kdbench.engine import loop

    generator = torch.Generator().manual_seed(0)
    return loop.loader(split, BATCH, shuffle=True, generator=generator, num_workers=workers,
                       device=torch.device("cpu"))


def epoch_seconds(data) -> tuple[float, int]:
    start = time.perf_counter()
    seen = 0
    for batch in data:
        seen += len(batch)
    return time.perf_counter() - start, seen


def r3d18_macs() -> dict:
    """Multiply-accumulates of one forward pass of kdbench's ``r3d18`` on one 1 × 16 × 112 × 112 clip."""
    import torch
    from torch import nn

    from kdbench.config import validate
    from kdbench.contracts import DatasetInfo
    from kdbench.plugins import plugins

    entry = plugins()["students"].get("r3d18")
    shape = (1, 16, 112, 112)
    info = DatasetInfo(class_names=("W", "N1", "N2", "N3", "REM"), teacher_input_shape=shape,
                       student_input_shape=shape)
    model = entry.build(validate(entry.options, {}), info).eval()
    counts = {"conv": 0, "linear": 0}

    def conv_hook(module, inputs, output):
        kernel = module.kernel_size[0] * module.kernel_size[1] * module.kernel_size[2]
        counts["conv"] += output.numel() * module.in_channels // module.groups * kernel

    def linear_hook(module, inputs, output):
        counts["linear"] += output.numel() * module.in_features

    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            module.register_forward_hook(conv_hook)
        elif isinstance(module, nn.Linear):
            module.register_forward_hook(linear_hook)
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    params = sum(p.numel() for p in model.parameters())
    return {"conv_macs": counts["conv"], "linear_macs": counts["linear"], "macs": counts["conv"] + counts["linear"],
            "params": params}


def measure(quick: bool, work: Path) -> dict:
    import torch

    from kdbench.data import prepare

    torch.set_num_threads(1)
    os.environ["KDBENCH_CACHE_DIR"] = str(work / "cache")
    cheap = {"subjects": 2, "epochs": 16} if quick else {"subjects": 4, "epochs": 60}
    real = ({"subjects": 1, "epochs": 4, "fps": 5.0, "width": 160, "height": 120} if quick else
            {"subjects": 1, "epochs": 6, "fps": 25.0, "width": 320, "height": 240})
    synth_s = {"cheap": synth(work / "cheap", cheap), "real": synth(work / "real", real)}

    start = time.perf_counter()
    prepare(train_split(work / "cheap"), workers=1)
    prepare_s = time.perf_counter() - start
    cached = train_split(work / "cheap")
    assert cached._prepared(), "the fresh split did not find the prepared cache"
    sample = cached[0]
    rounds = 3 if quick else 6
    loaders = {f"cache, {w} worker{'s' if w != 1 else ''}": make_loader(cached, w) for w in (0, 1, 2)}
    raw = train_split(work / "cheap")
    raw[0]
    raw.to_tensor = keep_uint8    # fork start: the workers inherit it, nothing is pickled
    loaders.update({f"cache, uint8 samples, {w} worker{'s' if w != 1 else ''}": make_loader(raw, w) for w in (0, 1)})
    for data in loaders.values():
        epoch_seconds(data)               # starts the persistent workers; not timed
    times: dict[str, list[float]] = {name: [] for name in loaders}
    decoders = {"decode S³VE format, 0 workers": make_loader(train_split(work / "real"), 0),
                "decode generator video, 0 workers": make_loader(_uncached(work / "cheap"), 0)}
    decode_times: dict[str, list[float]] = {name: [] for name in decoders}
    items = {name: len(data.dataset) for name, data in {**loaders, **decoders}.items()}
    decode_rounds = 1 if quick else 2
    for r in range(rounds):
        for name, data in loaders.items():
            times[name].append(epoch_seconds(data)[0])
        if r < decode_rounds:
            for name, data in decoders.items():
                decode_times[name].append(epoch_seconds(data)[0])
    times.update(decode_times)
    rates = {name: items[name] / statistics.median(values) for name, values in times.items()}
    del loaders, decoders
    return {"rates": rates, "items": items, "rounds": {n: len(v) for n, v in times.items()},
            "synth_s": synth_s, "prepare_s": prepare_s, "cheap": cheap, "real": real,
            "student_shape": list(sample["student"].shape), "teacher_shape": list(sample["teacher"].shape)}


def keep_uint8(name: str, array):
    """What-if: the sample as stored (uint8 pixels), its conversion to float left to the device."""
    import numpy as np
    import torch

    return torch.from_numpy(np.array(array))


def _uncached(root: Path):
    """The cheap dataset's train split reading its files, as if no cache were prepared."""
    split = train_split(root)
    split._looked, split._cache = True, None
    return split


def run(quick: bool = False) -> dict:
    work = Path(tempfile.mkdtemp(prefix="kdbench-bench-datapath-"))
    saved = os.environ.get("KDBENCH_CACHE_DIR")
    try:
        m = measure(quick, work)
    finally:
        if saved is None:
            os.environ.pop("KDBENCH_CACHE_DIR", None)
        else:
            os.environ["KDBENCH_CACHE_DIR"] = saved
        shutil.rmtree(work, ignore_errors=True)
    macs = r3d18_macs()
    rates = m["rates"]
    real_decode = rates["decode S³VE format, 0 workers"]
    cache0 = rates["cache, 0 workers"]
    train_flop = 3 * 2 * macs["macs"]          # 2 FLOPs per MAC; forward + backward ≈ 3 forward passes
    need = {gpu: UTILISATION * peak * 1e12 / train_flop for gpu, peak in GPUS.items()}
    rows = ["| loader | items | epochs timed | clips/s (median) | ÷ decode S³VE format |",
            "| --- | --- | --- | --- | --- |"]
    for name, rate in rates.items():
        rows.append(f"| {name} | {m['items'][name]} | {m['rounds'][name]} | {rate:,.1f} | "
                    f"{rate / real_decode:,.0f}× |")
    rows += ["", (f"| GPU (assumed {UTILISATION:.0%} of vendor peak) | clips/s R3D-18 trains | cache, 1 worker: "
                  f"workers needed | decode S³VE format: workers needed |"), "| --- | --- | --- | --- |"]
    for gpu, n in need.items():
        rows.append(f"| {gpu}, {GPUS[gpu]:g} TFLOP/s peak | {n:,.0f} | "
                    f"{n / rates['cache, 1 worker']:.2f} | {n / real_decode:,.0f} |")
    notes = [
        (f"batch {BATCH}, shuffled, kdbench's collate, torch with 1 intra-op thread, CPU device (no pinning); "
         f"sample: student {tuple(m['student_shape'])} uint8 → float, teacher {tuple(m['teacher_shape'])} float32"),
        (f"cache: s3ve generator {m['cheap']} (prepared in {m['prepare_s']:.1f} s); decode S³VE format: generator "
         f"{m['real']} (written in {m['synth_s']['real']:.0f} s)"),
        (f"R3D-18 (kdbench r3d18, 1 × 16 × 112 × 112 gray): {macs['conv_macs'] / 1e9:.2f} G conv MACs + "
         f"{macs['linear_macs']:,} linear MACs per clip forward = {2 * macs['macs'] / 1e9:.1f} GFLOP; "
         f"training ≈ 3 × forward = {train_flop / 1e9:.1f} GFLOP per clip; {macs['params'] / 1e6:.1f} M parameters"),
        *[f"{gpu}: {UTILISATION:.0%} × {GPUS[gpu]:g} TFLOP/s / {train_flop / 1e9:.1f} GFLOP = {n:,.0f} clips/s to "
          f"feed" for gpu, n in need.items()],
        ("2 workers on this 2-core machine share the cores with the training process and with other work: "
         "the worker figures say what one core delivers, not how a many-core node scales"),
    ]
    return {"name": "data_path", "title": "Data path: clips/s through the DataLoader, cache vs decoding",
            "table": "\n".join(rows), "notes": notes,
            "figures": {"clips_per_s": {k: round(v, 2) for k, v in rates.items()},
                        "cache_over_decode": round(cache0 / real_decode, 1),
                        "r3d18_forward_gflop": round(2 * macs["macs"] / 1e9, 2),
                        "r3d18_train_gflop_per_clip": round(train_flop / 1e9, 2),
                        "utilisation_assumed": UTILISATION,
                        "gpu_clips_per_s": {k: round(v, 1) for k, v in need.items()},
                        "margin_cache_1_worker": {k: round(rates["cache, 1 worker"] / v, 2)
                                                  for k, v in need.items()},
                        "margin_decode_1_process": {k: round(real_decode / v, 5) for k, v in need.items()},
                        "seconds": {"synth": m["synth_s"], "prepare": m["prepare_s"]}}}


def main() -> None:
    from run_all import script_main  # this script's folder is on sys.path when it runs

    script_main(__doc__, run, "tiny data, few rounds (well under a minute)")


if __name__ == "__main__":
    main()
