"""What kdbench's training epoch costs beyond the math: against a bare PyTorch loop on the same batches.

For each configuration (the tiny default: ``tiny-3dcnn`` on ``synthetic``; and R3D-18 on small synthetic clips)
and each distiller (``kd``, ``crd``) the run is built the way a sweep cell is: ``prepare`` (teacher trained for one
epoch and its outputs stored by ``fit_teacher_stage``), then ``prepare`` again, which finds the cached teacher and
its **stored outputs** exactly as a later cell does. Then, alternately, in one process:

* **kdbench epoch**: what :func:`kdbench.engine.loop.fit_epochs` runs for the training part of an epoch, with
  kdbench's own objects: reseed from (seed, epoch), seed the loader's generator, ``on_epoch_start``,
  ``loop.train_epoch`` (DataLoader + collate into a ``Batch``, ``Batch.to``, stored-output lookup in the
  memory-mapped arrays, loss dict summed, finiteness check, scaler, per-term float() for the epoch means,
  tqdm disabled as in a sweep), scheduler step.
* **bare epoch**: a loop written here as a PyTorch user would write it: slice the batch out of in-memory
  tensors (student clips, labels, and the teacher's outputs loaded into RAM once), forward, the distiller's
  loss, backward, Adam step, cosine schedule step.

Fairness: the bare loop trains a deep copy of the same student and distiller (identical initial weights), with
its own Adam of the same settings, on the **same batches in the same order** (each epoch's sample order is read
from kdbench's own loader for that epoch's seed, untimed), with the global RNG reseeded the same way (CRD draws
its negatives from it). The math is the distiller module itself (a deep copy), not a re-implementation: the
point is what the framework adds *around* the math, and calling the module guarantees the math is identical,
which the benchmark checks: after every pair of epochs both students' weights must agree (max |Δ| is reported).
What the bare loop leaves out is therefore exactly the framework's part: data loading and collation, batch
moves, the memory-mapped lookup, loss bookkeeping, hooks.

Pairs are interleaved (kdbench, bare, kdbench, bare, ...) so that a noisy machine slows both alike; the figure
is the median of the per-pair ratios. Evaluation on the test split (``Training.evaluate``) and the per-epoch
checkpoint (``save_atomic`` of the same dict ``fit`` writes) are timed after each kdbench epoch and reported as
fractions of the training epoch. One intra-op thread (``torch.set_num_threads(1)``), as the project's other
figures. Target (issue 15): ≤ 1.05×.

    python benchmarks/framework_overhead.py [--quick] [--json out.json]
"""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

THREADS = 1
CHECKPOINTS = 3   # checkpoints timed per run (an R3D-18 one is ~380 MiB written with fsync: enough I/O)

#: (label, --set layer, pairs of epochs timed per distiller) for the full run and for --quick
CONFIGS = [
    ("tiny default", {}, ("kd", "crd"), 25),
    ("R3D-18, 8×16×16 clips, 16 train", {"student": {"name": "r3d18"}, "batch_size": 8,
                                         "dataset": {"train_size": 16, "test_size": 16}}, ("kd", "crd"), 8),
]
QUICK_CONFIGS = [
    ("tiny default, 256 train", {"dataset": {"train_size": 256, "test_size": 128}}, ("kd", "crd"), 3),
    ("R3D-18, 8×16×16 clips, 8 train", {"student": {"name": "r3d18"}, "batch_size": 8,
                                        "dataset": {"train_size": 8, "test_size": 8}}, ("kd",), 2),
]


def build(layer: dict, distiller: str, epochs: int, work: Path):
    """A prepared run whose teacher is cached and whose teacher outputs are stored, as a sweep cell finds it."""
    from kdbench.config import merge, resolve
    from kdbench.engine import prepare
    from kdbench.engine.fit import fit_teacher_stage
    from kdbench.plugins import plugins
    from kdbench.tracking import MemoryTracker

    base = {"dataset": {"name": "synthetic"}, "distiller": {"name": distiller}, "seed": 0, "epochs": epochs,
            "output_dir": str(work / "runs"), "tracking": {"uri": f"sqlite:///{work / 'mlflow.db'}"},
            "teacher_training": {"epochs": 1}, "device": "cpu"}
    config = resolve([merge(base, layer)], plugins())
    quiet = lambda *a, **k: None
    first = prepare(config, plugins(), progress=False, echo=quiet)
    fit_teacher_stage(first, MemoryTracker(), progress=False, echo=quiet)   # trains the teacher, stores its outputs
    p = prepare(config, plugins(), progress=False, echo=quiet)
    assert p.source.kind == "cache" and set(p.stored) == {"train", "test"}, (p.source, p.stored)
    return p


def epoch_order(p, epoch: int) -> list:
    """The batches' sample indices kdbench's loader yields in ``epoch`` (untimed; the generator is reseeded again
    before the timed epoch, so this does not disturb it)."""
    from kdbench.engine import loop

    t = p.training
    t.generator.manual_seed(loop.epoch_seed(t.seed, epoch))
    return [batch.index.clone() for batch in t.train_data]


class Bare:
    """The loop a PyTorch user writes for the same run: tensors in memory, sliced per batch."""

    def __init__(self, p) -> None:
        import torch

        split = p.dataset.split("train")
        stored = p.stored["train"]
        self.clips, self.labels = split.student, split.labels
        self.t_logits = torch.from_numpy(stored.logits[:].copy())
        self.t_embedding = torch.from_numpy(stored.embedding[:].copy())
        self.t_stages = tuple(torch.from_numpy(s[:].copy()) for s in stored.stages)
        self.student = copy.deepcopy(p.student)
        self.distiller = copy.deepcopy(p.distiller)
        o = p.config.optimizer
        params = [q for m in (self.student, self.distiller) for q in m.parameters() if q.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=p.config.epochs)

    def epoch(self, order, seed: int) -> None:
        import torch

        from kdbench.contracts import Batch, ModelOutput

        torch.manual_seed(seed)
        self.distiller.on_epoch_start(0)
        self.student.train()
        self.distiller.train()
        for index in order:
            x, y = self.clips[index], self.labels[index]
            teacher = ModelOutput(self.t_logits[index], self.t_embedding[index], tuple(s[index] for s in self.t_stages))
            out = self.student(x)
            terms = self.distiller(out, teacher, Batch(x, x, y, index))  # the distiller reads label and index
            loss = sum(terms.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        self.scheduler.step()


def kdbench_epoch(p, epoch: int) -> dict:
    """The training part of one epoch of :func:`kdbench.engine.loop.fit_epochs`, with the run's own objects."""
    from kdbench.engine import loop

    t = p.training
    seed = loop.epoch_seed(t.seed, epoch)
    loop.reseed(seed)
    t.generator.manual_seed(seed)
    t.on_epoch_start(epoch)
    losses = loop.train_epoch(t.loss_fn, t.modules, t.train_data, t.optimizer, device=t.device, scaler=t.scaler,
                              epoch=epoch, progress=False, desc="epoch")
    t.scheduler.step()
    return losses


def checkpoint(p, epoch: int, history: list) -> None:
    """The checkpoint ``fit`` writes after every epoch (same contents, same atomic save)."""
    from kdbench.engine import loop
    from kdbench.engine.checkpoint import save_atomic

    save_atomic({"format": 1, "config_hash": p.digest, "epoch": epoch + 1, "run_id": "bench", "history": history,
                 "teacher_confusion": None, "student": loop.to_cpu(p.student.state_dict()),
                 "distiller": loop.to_cpu(p.distiller.state_dict()), "teacher": None, **p.training.state()},
                p.checkpoint)


def max_diff(a, b) -> float:
    return max((x.detach() - y.detach()).abs().max().item() for x, y in zip(a.parameters(), b.parameters()))


def skeletons(p, bare: Bare, order: list, terms: list[str]) -> tuple[float, float, float]:
    """Seconds of one epoch of each loop with the networks taken out, the loss being ``len(terms)`` terms on one
    scalar parameter: what is left is the loop's own cost. kdbench: ``loop.train_epoch`` on the run's loader
    (items, collate, ``Batch.to``) with the stored-output lookup in its loss function; bare: slicing the in-memory
    tensors. Far less noisy than two whole epochs, so their difference shows the framework's extra directly. Also
    returned: one pass of the run's loader alone (items and collate), the part of it a Dataset/DataLoader costs."""
    import torch

    from kdbench.engine import loop

    t = p.training
    weight = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=0.0)

    def loss_fn(batch):
        p.stored["train"].lookup(batch.index, t.device).float()
        return {name: weight * 1.0 for name in terms}

    start = time.perf_counter()
    loop.train_epoch(loss_fn, [], t.train_data, optimizer, device=t.device, scaler=t.scaler, epoch=0, progress=False,
                     desc="skeleton")
    framework = time.perf_counter() - start
    start = time.perf_counter()
    for index in order:
        bare.clips[index], bare.labels[index], bare.t_logits[index], bare.t_embedding[index]
        [s[index] for s in bare.t_stages]
        loss = sum(weight * 1.0 for _ in terms)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    plain = time.perf_counter() - start
    start = time.perf_counter()
    for _ in t.train_data:
        pass
    return framework, plain, time.perf_counter() - start


def timed(fn, *args) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn(*args)``, and what it returned; the process's CPU time is less disturbed by
    other processes."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, out


def measure(label: str, layer: dict, distiller: str, pairs: int, work: Path) -> dict:
    from kdbench.engine import loop

    p = build(layer, distiller, pairs, work)
    bare = Bare(p)
    times: dict[str, list[float]] = {k: [] for k in ("kdbench", "bare", "kdbench_cpu", "bare_cpu", "evaluate",
                                                      "checkpoint", "skeleton_kdbench",
                                                      "skeleton_bare", "loader_only")}
    drift = 0.0
    history: list = []
    losses: dict = {}
    for epoch in range(pairs + 1):   # epoch 0: warm-up for both (first allocations, Adam's state), not timed
        order = epoch_order(p, epoch)
        runs = [("kdbench", kdbench_epoch, (p, epoch)),
                ("bare", bare.epoch, (order, loop.epoch_seed(p.training.seed, epoch)))]
        for name, fn, args in runs if epoch % 2 == 0 else runs[::-1]:   # ABBA: neither always goes first
            wall, cpu, out = timed(fn, *args)
            losses = out if name == "kdbench" else losses
            if epoch:
                times[name].append(wall)
                times[f"{name}_cpu"].append(cpu)
        drift = max(drift, max_diff(p.student, bare.student))
        if not epoch:
            continue
        start = time.perf_counter()
        scores = p.training.evaluate()
        times["evaluate"].append(time.perf_counter() - start)
        history.append({"accuracy": scores.accuracy})
        if epoch <= CHECKPOINTS:
            times["checkpoint"].append(timed(checkpoint, p, epoch, history)[0])
        terms = [key.removeprefix("loss_") for key in losses if key != "loss"]
        framework, plain, loading = skeletons(p, bare, order, terms)
        times["skeleton_kdbench"].append(framework)
        times["skeleton_bare"].append(plain)
        times["loader_only"].append(loading)
    med = {k: statistics.median(v) for k, v in times.items()}
    per_pair = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b]))
    return {
        "config": label, "distiller": distiller, "pairs": pairs, "student": p.config.student.name,
        "clip": list(p.dataset.info.student_input_shape), "train_size": len(p.dataset.split("train")),
        "batch_size": p.config.batch_size, "batches": len(p.training.train_data),
        "kdbench_epoch_s": med["kdbench"], "bare_epoch_s": med["bare"],
        "overhead_ratio": per_pair("kdbench", "bare"), "overhead_ratio_cpu": per_pair("kdbench_cpu", "bare_cpu"),
        "fastest_ratio": min(times["kdbench"]) / min(times["bare"]),
        "skeleton_kdbench_s": med["skeleton_kdbench"], "skeleton_bare_s": med["skeleton_bare"],
        "skeleton_extra_vs_bare_epoch": (med["skeleton_kdbench"] - med["skeleton_bare"]) / med["bare"],
        "evaluate_s": med["evaluate"], "evaluate_vs_epoch": per_pair("evaluate", "kdbench"),
        "checkpoint_s": med["checkpoint"],
        "checkpoint_vs_epoch": statistics.median(c / e for c, e in zip(times["checkpoint"], times["kdbench"])),
        "loader_only_s": med["loader_only"],
        "checkpoint_mib": p.checkpoint.stat().st_size / 2**20,
        "max_weight_difference": drift, "times": times,
    }


def table(results: list[dict]) -> str:
    lines = [("| configuration | distiller | batches | kdbench epoch (s) | bare epoch (s) | **kdbench ÷ bare** (wall) "
              "| (CPU) | (fastest) | loop without networks: kdbench − bare (ms) | **1 + that ÷ bare epoch** "
              "| evaluation ÷ epoch | checkpoint ÷ epoch (s, MiB) | weights max abs diff |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        extra = 1000 * (r["skeleton_kdbench_s"] - r["skeleton_bare_s"])
        lines.append(
            f"| {r['config']} | `{r['distiller']}` | {r['batches']} | {r['kdbench_epoch_s']:.3f} | "
            f"{r['bare_epoch_s']:.3f} | **{r['overhead_ratio']:.3f}×** | {r['overhead_ratio_cpu']:.3f}× | "
            f"{r['fastest_ratio']:.3f}× | {extra:.1f} | **{1 + r['skeleton_extra_vs_bare_epoch']:.3f}×** | "
            f"{r['evaluate_vs_epoch']:.2f} | {r['checkpoint_vs_epoch']:.3f} ({r['checkpoint_s']:.2f} s, "
            f"{r['checkpoint_mib']:.0f}) | {r['max_weight_difference']:.1g} |")
    return "\n".join(lines)


def run(quick: bool = False) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    results = []
    with tempfile.TemporaryDirectory(prefix="kdbench-overhead-") as tmp:
        work = Path(tmp)
        previous = os.environ.get("KDBENCH_CACHE_DIR")
        os.environ["KDBENCH_CACHE_DIR"] = str(work / "cache")  # a fresh teacher cache: nothing of the user's is read
        try:
            for label, layer, distillers, pairs in QUICK_CONFIGS if quick else CONFIGS:
                for distiller in distillers:
                    results.append(measure(label, layer, distiller, pairs, work))
        finally:
            if previous is None:
                os.environ.pop("KDBENCH_CACHE_DIR", None)
            else:
                os.environ["KDBENCH_CACHE_DIR"] = previous
    worst = max(r["overhead_ratio"] for r in results)
    estimate = max(1 + r["skeleton_extra_vs_bare_epoch"] for r in results)
    loader = {f"{r['config']}, {r['distiller']}": 1000 * r["loader_only_s"] for r in results}
    notes = [
        (f"kdbench ÷ bare = median over {', '.join(str(r['pairs']) for r in results)} interleaved pairs of epochs "
        f"(ABBA order; same student, distiller, batches, RNG: identical weights after every pair, max abs diff "
        f"column) by the wall clock; (CPU): the same by the process's CPU time, less disturbed by other load; "
        f"(fastest): fastest kdbench epoch ÷ fastest bare one; torch threads {THREADS}"),
        ("loop without networks: one epoch of each loop with the networks replaced by a scalar parameter (kdbench: "
        "loop.train_epoch on the run's loader, items + collate + Batch.to + stored-output lookup in the memory-mapped "
        "arrays + loss bookkeeping; bare: slicing in-memory tensors): the framework's own extra per epoch, measured "
        "without the networks' noise, as a fraction of the bare epoch"),
        ("evaluation (test split) and checkpoint (the atomic torch.save with fsync of student, distiller and optimiser "
        "state that fit writes) are per-epoch costs on top of training, as fractions of the kdbench training epoch"),
        "the loader alone (items + collate, no networks) takes "
        + ", ".join(f"{ms:.1f} ms ({name})" for name, ms in loader.items())
        + " per epoch: most of the framework's extra; the bare loop slices tensors already in memory instead",
        (f"target ≤ 1.05×: worst side-by-side wall ratio {worst:.3f}×, worst estimate from the loop without "
         f"networks {estimate:.3f}× (the whole-epoch ratios spread with the machine's load; the estimate does not)"),
    ]
    return {"name": "framework_overhead", "title": "Framework overhead: a kdbench training epoch vs a bare loop",
            "table": table(results), "notes": notes,
            "figures": {"worst_overhead_ratio": worst, "worst_estimate": estimate, "target": 1.05, "threads": THREADS,
                        "quick": quick,
                        "results": results}}


def main() -> None:
    from run_all import script_main  # this script's folder is on sys.path when it runs

    script_main(__doc__, run, "small shapes, few pairs (well under a minute)")


if __name__ == "__main__":
    main()
