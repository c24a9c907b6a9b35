"""The one training loop, for students and teachers alike, and evaluation; device-agnostic.

A :class:`Training` holds everything one training needs, built once by :func:`training` (the one
optimiser/scheduler/loader set-up); :func:`fit_epochs` runs its epochs and hands each epoch's losses and
test scores to a callback that logs and checkpoints.

Determinism: every epoch reseeds all RNGs from (seed, epoch) and the loader shuffles with its own
generator seeded the same way, so an epoch's outcome depends only on the state at its start. That is
what makes a resumed run end with exactly the metrics of an uninterrupted one.

Under DDP (a training built with ``distributed=True`` in a process group of K > 1 ranks, see
:mod:`kdbench.engine.distributed`) each rank trains on its share of every one-process batch (same order, split
K ways), with random draws of its own (reseeded from the epoch's seed + rank); gradients are averaged over
the ranks before each step, and after each epoch's training every rank takes rank 0's parameters and buffers,
so all ranks evaluate, and rank 0 checkpoints, one and the same state: a resumed DDP run stays exact too.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import OptimizerConfig, ScheduleConfig
from ..contracts import UNLABELLED, Batch, ModelOutput, collate
from ..errors import KdbenchError
from ..metrics import Scores, score


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KdbenchError(f"device {name!r} asked for, but this machine has no usable CUDA GPU; "
                           f"use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise KdbenchError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s) visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise KdbenchError("device 'mps' asked for, but MPS is not available here; use --device cpu")
    return device


def compute_tags(device: torch.device) -> dict[str, str]:
    """What a run's numbers depend on beyond its config: the device (a GPU's model) and the CPU's intra-op thread
    count (float sums reduce in another order with another count, so a CPU result reproduces only with the
    same one: ``OMP_NUM_THREADS=N kdbench run ...``)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {"kdbench.device": name, "kdbench.threads": str(torch.get_num_threads())}


def world() -> tuple[int, int]:
    """(this process's rank, the number of ranks) in an initialised ``torch.distributed`` group, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def per_rank_batch(batch_size: int, ranks: int) -> int:
    """The batch each of ``ranks`` processes trains on, so that together they train on ``batch_size``."""
    if batch_size % ranks:
        lower = batch_size - batch_size % ranks
        raise KdbenchError(f"batch_size {batch_size} cannot be split evenly over {ranks} processes; set a batch_size "
                           f"divisible by {ranks} (e.g. --set batch_size={lower or ranks}) or change --nproc-per-node")
    return batch_size // ranks


class RankSampler(torch.utils.data.DistributedSampler):
    """Rank ``rank``'s share of the training order: every ``ranks``-th index of the permutation the one-process
    loader draws, from the same generator (reseeded from ``epoch_seed(seed, epoch)`` every epoch).

    DistributedSampler's own shuffle seeds a fresh generator with ``seed + epoch``; it is replaced because the
    one-process loader draws its order from the training generator after the DataLoader has taken its base seed
    from it. Sharing that generator, and so its draws, makes the ranks' j-th batches together exactly the
    one-process j-th batch (every rank pads its share to equal length with indices from the start, as
    DistributedSampler does, so every rank takes as many steps)."""

    def __init__(self, split, generator: torch.Generator, rank: int, ranks: int) -> None:
        super().__init__(split, num_replicas=ranks, rank=rank, shuffle=True)
        self.generator = generator

    def __iter__(self):
        order = torch.randperm(len(self.dataset), generator=self.generator).tolist()
        order += order[:self.total_size - len(order)]
        return iter(order[self.rank:self.total_size:self.num_replicas])


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % 2**31


def reseed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def loader(split, batch_size: int, *, shuffle: bool, generator: torch.Generator | None, num_workers: int,
           device: torch.device, shard: tuple[int, int] = (0, 1), pin_memory: bool = True,
           persistent_workers: bool = True) -> torch.utils.data.DataLoader:
    """``shard`` = (rank, ranks): a shuffled split is shared out by :class:`RankSampler` when ranks > 1, and
    ``batch_size`` is then the per-rank batch. Batches are pinned (page-locked) only for a CUDA device; the
    training loop then copies them without blocking (``non_blocking`` follows the loader's ``pin_memory``)."""
    sampler = RankSampler(split, generator, *shard) if shuffle and shard[1] > 1 else None
    count = len(sampler) if sampler is not None else len(split)
    # A last training batch of one sample breaks BatchNorm; drop it only in that case (on every rank alike).
    drop_last = shuffle and count > batch_size and count % batch_size == 1
    return torch.utils.data.DataLoader(
        split, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler, generator=generator,
        collate_fn=collate, num_workers=num_workers, pin_memory=pin_memory and device.type == "cuda",
        drop_last=drop_last, persistent_workers=persistent_workers and num_workers > 0)


def make_optimizer(params, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer, cfg: ScheduleConfig, epochs: int):
    """Stepped once per epoch."""
    if cfg.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if cfg.name == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg.milestones, gamma=cfg.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def amp_dtype(setting: str | bool, device: torch.device) -> torch.dtype | None:
    """The autocast dtype a run's ``amp`` setting means on ``device``, or None for float32: float16 on CUDA only
    (CPU kernels in float16 are slow or missing), bfloat16 on CUDA and CPU."""
    if setting in ("fp16", True) and device.type == "cuda":
        return torch.float16
    if setting == "bf16" and device.type in ("cuda", "cpu"):
        return torch.bfloat16
    return None


def autocast(device: torch.device, amp: torch.dtype | None):
    """Mixed precision for the networks' forward passes (``amp`` from :func:`amp_dtype`); a no-op for None."""
    if amp is None or amp is False:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp)


def scaler_for(device: torch.device, amp: torch.dtype | None) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for float16 only: bfloat16 has float32's range, so its gradients do not
    underflow and need no scaling."""
    return torch.amp.GradScaler("cuda", enabled=amp == torch.float16 and device.type == "cuda")


LossFn = Callable[[Batch], dict[str, torch.Tensor]]


def average_gradients(modules: list[nn.Module], ranks: int) -> None:
    """Every rank's gradients replaced by their mean over the ranks (one all-reduce of all of them), as DDP does:
    each rank's loss is the mean over its equal share of the global batch, so this is the gradient of the
    global batch's mean loss, and every rank takes the same step (a hard-label term over unscored samples is
    the exception: each rank averages it over its own scored ones; docs/distributed.md)."""
    grads = list({id(p): p.grad for m in modules for p in m.parameters() if p.grad is not None}.values())
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= ranks
    for grad, value in zip(grads, flat.split([g.numel() for g in grads])):
        grad.copy_(value.view_as(grad))


def share_rank0_state(modules: list[nn.Module]) -> None:
    """Every rank takes rank 0's parameters and buffers (BatchNorm statistics, distillers' memory banks), so all
    ranks evaluate, and rank 0 checkpoints, one state; DDP broadcasts the same way."""
    with torch.no_grad():
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                torch.distributed.broadcast(tensor.data, src=0)


def train_epoch(loss_fn: LossFn, modules: list[nn.Module], data, optimizer, *, device: torch.device,
                scaler: torch.amp.GradScaler, epoch: int, progress: bool, desc: str,
                ranks: int = 1) -> dict[str, float]:
    """One pass over ``data``; returns the mean of each loss term (and of their sum, ``loss``), over all
    ``ranks`` when the data is shared out over DDP ranks."""
    from tqdm import tqdm

    for module in modules:
        module.train()
    totals: dict[str, float] = {}
    seen = 0
    bar = tqdm(data, desc=desc, leave=False, disable=not progress, unit="batch")
    for step, batch in enumerate(bar):
        batch = batch.to(device, non_blocking=getattr(data, "pin_memory", False))
        terms = loss_fn(batch)  # the loss function applies autocast to the networks it runs
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            shown = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
            hint = "lower optimizer.lr or check the inputs"
            if bool((batch.label == UNLABELLED).all()) and "ce" in terms and not torch.isfinite(terms["ce"]):
                hint = ("this batch has no scored sample: compute hard-label terms with kdbench.losses.hard_ce, "
                        "which skips unscored samples")
            raise KdbenchError(f"the loss became non-finite at epoch {epoch + 1}, step {step + 1} ({shown}); {hint}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if ranks > 1:
            average_gradients(modules, ranks)
        scaler.step(optimizer)
        scaler.update()
        n = len(batch)
        seen += n
        for key, value in {"loss": loss, **{f"loss_{k}": v for k, v in terms.items()}}.items():
            totals[key] = totals.get(key, 0.0) + float(value.detach()) * n
        bar.set_postfix(loss=f"{totals['loss'] / seen:.4f}")
    if ranks > 1:  # every rank ran the same steps, so the same loss terms in the same order
        summed = torch.tensor([seen, *totals.values()], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(summed)
        seen, totals = summed[0].item(), dict(zip(totals, summed[1:].tolist()))
    return {key: value / max(seen, 1) for key, value in totals.items()}


@torch.no_grad()
def predict(forward: Callable[[Batch], ModelOutput], modules: list[nn.Module], data, *, device: torch.device,
            amp: torch.dtype | None) -> tuple[np.ndarray, np.ndarray]:
    """Labels and arg-max predictions over ``data``."""
    for module in modules:
        module.eval()
    labels, preds = [], []
    for batch in data:
        batch = batch.to(device)
        with autocast(device, amp):
            logits = forward(batch).logits
        labels.append(batch.label.cpu().numpy())
        preds.append(logits.argmax(dim=-1).cpu().numpy())
    return np.concatenate(labels), np.concatenate(preds)


def evaluate(forward, modules, data, class_names, *, device, amp) -> Scores:
    labels, preds = predict(forward, modules, data, device=device, amp=amp)
    return score(labels, preds, class_names)


def to_cpu(obj: Any) -> Any:
    """State dicts are moved to the CPU so checkpoints load on any device."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


@dataclass
class Training:
    """One training, ready to run: what to optimise, with what loss, on which data, evaluated how."""

    modules: list[nn.Module]                      # put in train mode each epoch; their parameters are optimised
    loss_fn: LossFn                               # batch -> named loss terms (their sum is minimised)
    forward: Callable[[Batch], ModelOutput]       # the evaluated network's forward on a batch
    evaluated: list[nn.Module]                    # put in eval mode for evaluation
    class_names: tuple[str, ...]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    train_data: torch.utils.data.DataLoader
    test_data: torch.utils.data.DataLoader
    generator: torch.Generator                    # the training loader's shuffling, reseeded every epoch
    epochs: int
    seed: int
    device: torch.device
    amp: torch.dtype | None                       # autocast dtype (loop.amp_dtype), None = float32
    label: str = "epoch"                          # progress-bar prefix
    rank: int = 0                                 # this process's DDP rank
    ranks: int = 1                                # DDP ranks sharing the training data (1: not distributed)
    on_epoch_start: Callable[[int], None] = field(default=lambda epoch: None)
    #: the checkpoint this training continues (its "epoch", "run_id" and "history"), once loaded
    resume: dict[str, Any] | None = None

    def state(self) -> dict[str, Any]:
        """The optimiser, scheduler and scaler state a checkpoint needs (modules are saved by their owner)."""
        return {"optimizer": to_cpu(self.optimizer.state_dict()), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint: optimiser, scheduler and scaler states, and where it stopped."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.resume = state

    @property
    def start(self) -> tuple[int, str | None, list[dict[str, float]]]:
        """(first epoch to run, tracked run to reopen, history so far)."""
        if self.resume is None:
            return 0, None, []
        return self.resume["epoch"], self.resume["run_id"], list(self.resume["history"])

    def evaluate(self):
        return evaluate(self.forward, self.evaluated, self.test_data, self.class_names, device=self.device,
                        amp=self.amp)


def training(modules: list[nn.Module], loss_fn: LossFn, forward, evaluated: list[nn.Module], *, train_split,
             test_split, class_names, optimizer: OptimizerConfig, schedule: ScheduleConfig, epochs: int,
             batch_size: int, seed: int, num_workers: int, device: torch.device, amp: torch.dtype | None,
             label: str = "epoch", on_epoch_start: Callable[[int], None] | None = None, distributed: bool = False,
             pin_memory: bool = True, persistent_workers: bool = True) -> Training:
    """The one set-up of optimiser, schedule, scaler and loaders, for any training. With ``distributed``, in a
    process group of several ranks, the training data and ``batch_size`` (the global batch) are shared out."""
    optim = make_optimizer([p for m in modules for p in m.parameters()], optimizer)
    generator = torch.Generator()
    rank, ranks = world() if distributed else (0, 1)
    return Training(
        modules=modules, loss_fn=loss_fn, forward=forward, evaluated=evaluated, class_names=tuple(class_names),
        optimizer=optim, scheduler=make_scheduler(optim, schedule, epochs),
        scaler=scaler_for(device, amp),
        train_data=loader(train_split, per_rank_batch(batch_size, ranks), shuffle=True, generator=generator,
                          num_workers=num_workers, device=device, shard=(rank, ranks), pin_memory=pin_memory,
                          persistent_workers=persistent_workers),
        test_data=loader(test_split, batch_size, shuffle=False, generator=None, num_workers=num_workers,
                         device=device, pin_memory=pin_memory, persistent_workers=persistent_workers),
        generator=generator, epochs=epochs, seed=seed, device=device, amp=amp, label=label, rank=rank, ranks=ranks,
        on_epoch_start=on_epoch_start or (lambda epoch: None))


EpochDone = Callable[[int, dict[str, float], Any], None]


def fit_epochs(t: Training, start: int, *, progress: bool, after_epoch: EpochDone):
    """Epochs ``start`` .. ``t.epochs - 1``: reseed from (seed, epoch), train, step the schedule, evaluate, then
    ``after_epoch(epoch, losses, scores)``. Returns the last scores (None if no epoch ran)."""
    scores = None
    if t.ranks > 1:
        share_rank0_state(t.modules)  # the ranks start alike (whatever each one built or loaded)
    for epoch in range(start, t.epochs):
        seed = epoch_seed(t.seed, epoch)
        reseed(seed + t.rank)  # each rank its own dropout masks and sampled negatives, as rows of one batch have
        t.generator.manual_seed(seed)  # one training order for all ranks
        t.on_epoch_start(epoch)
        losses = train_epoch(t.loss_fn, t.modules, t.train_data, t.optimizer, device=t.device, scaler=t.scaler,
                             epoch=epoch, progress=progress, desc=f"{t.label} {epoch + 1}/{t.epochs}", ranks=t.ranks)
        if t.ranks > 1:  # each rank's BatchNorm statistics and memory banks saw its share only: rank 0's go on
            share_rank0_state(t.modules)
        t.scheduler.step()
        scores = t.evaluate()
        after_epoch(epoch, losses, scores)
    return scores
