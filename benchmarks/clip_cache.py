"""Clips per second: decoding the dataset's files vs reading the prepared clip cache (`kdbench data prepare`).

Writes a generated dataset in the real formats (at the video size and frame rate given with --synth-set,
e.g. S³VE's 320x240 at 25 fps), then, in this one process and on the same items:
1. decodes N training items from the files (what a run does without a prepared cache),
2. prepares the cache (timed too: it is the one-off cost),
3. reads the same N items back through a fresh dataset object, which finds the cache by itself.
Both passes go through ``split[i]`` exactly as the training loader does, so the ratio is what a run sees.

    python benchmarks/clip_cache.py --dataset s3ve --synth-set subjects=2 --synth-set fps=25 ...
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def parse(items: list[str]) -> dict:
    from kdbench.config import merge, parse_set

    out: dict = {}
    for item in items:
        out = merge(out, parse_set(item))
    return out


def timed_pass(split, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        split[i]
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="s3ve")
    ap.add_argument("--synth-set", action="append", default=[], metavar="KEY=VALUE", help="generator option")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dataset option")
    ap.add_argument("--items", type=int, default=60, help="training items timed in each pass")
    ap.add_argument("--dir", help="work folder (default: a temporary one, removed afterwards)")
    args = ap.parse_args()

    import torch

    from kdbench.config import validate
    from kdbench.data import prepare
    from kdbench.plugins import plugins

    torch.set_num_threads(1)
    work = Path(args.dir or tempfile.mkdtemp(prefix="kdbench-bench-"))
    os.environ["KDBENCH_CACHE_DIR"] = str(work / "cache")
    entry = plugins()["datasets"].get(args.dataset)
    root = work / "data"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    start = time.perf_counter()
    entry.cls.synthesize(root, validate(entry.cls.SynthOptions, parse(args.synth_set)), 0, lambda m: None)
    synth_s = time.perf_counter() - start
    options = validate(entry.options, {**parse(args.set), "root": str(root)})

    decoding = entry.cls(options, 0).split("train")
    n = min(args.items, len(decoding))
    sample = decoding[0]
    decode_s = timed_pass(decoding, n)
    start = time.perf_counter()
    path = prepare(entry.cls(options, 0).split("train"))
    prepare_s = time.perf_counter() - start
    cached = entry.cls(options, 0).split("train")
    timed_pass(cached, 1)                       # opens the memory maps
    cache_s = timed_pass(cached, n)
    assert cached._prepared(), "the fresh split did not find the prepared cache"
    size = sum(f.stat().st_size for f in path.iterdir())

    print(f"dataset {args.dataset}: {len(decoding)} training items; generated in {synth_s:.1f} s; "
          f"options {options.model_dump(exclude={'root'})}")
    print(f"student input {tuple(sample['student'].shape)}, teacher input {tuple(sample['teacher'].shape)}; "
          f"torch threads 1")
    print(f"{'pass':<22}{'items':>7}{'seconds':>10}{'clips/s':>10}")
    print(f"{'decode from files':<22}{n:>7}{decode_s:>10.3f}{n / decode_s:>10.1f}")
    print(f"{'read prepared cache':<22}{n:>7}{cache_s:>10.4f}{n / cache_s:>10.1f}")
    print(f"cache / decode speed: {decode_s / cache_s:.0f}x   (prepare: {prepare_s:.1f} s for {len(decoding)} items, "
          f"{size / 2**20:.1f} MiB)")
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
