"""The one training loop, for students and teachers alike, and evaluation; device-agnostic.

A :class:`Training` holds everything one training needs, built once by :func:`training` (the one
optimiser/scheduler/loader set-up); :func:`fit_epochs` runs its epochs and hands each epoch's losses and
test scores to a callback that logs and checkpoints.

Determinism: every epoch reseeds all RNGs from (seed, epoch) and the loader shuffles with its own
generator seeded the same way, so an epoch's outcome depends only on the state at its start. That is
what makes a resumed run end with exactly the metrics of an uninterrupted one.
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
from ..contracts import Batch, ModelOutput, collate
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


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % 2**31


def reseed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def loader(split, batch_size: int, *, shuffle: bool, generator: torch.Generator | None, num_workers: int,
           device: torch.device) -> torch.utils.data.DataLoader:
    # A last training batch of one sample breaks BatchNorm; drop it only in that case.
    drop_last = shuffle and len(split) > batch_size and len(split) % batch_size == 1
    return torch.utils.data.DataLoader(
        split, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=collate,
        num_workers=num_workers, pin_memory=device.type == "cuda", drop_last=drop_last,
        persistent_workers=num_workers > 0)


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


def autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


LossFn = Callable[[Batch], dict[str, torch.Tensor]]


def train_epoch(loss_fn: LossFn, modules: list[nn.Module], data, optimizer, *, device: torch.device,
                scaler: torch.amp.GradScaler, epoch: int, progress: bool, desc: str) -> dict[str, float]:
    """One pass over ``data``; returns the mean of each loss term (and of their sum, ``loss``)."""
    from tqdm import tqdm

    for module in modules:
        module.train()
    totals: dict[str, float] = {}
    seen = 0
    bar = tqdm(data, desc=desc, leave=False, disable=not progress, unit="batch")
    for step, batch in enumerate(bar):
        batch = batch.to(device, non_blocking=device.type == "cuda")
        terms = loss_fn(batch)  # the loss function applies autocast to the networks it runs
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            shown = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
            raise KdbenchError(f"the loss became non-finite at epoch {epoch + 1}, step {step + 1} ({shown}); "
                               f"lower optimizer.lr or check the inputs")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        n = len(batch)
        seen += n
        for key, value in {"loss": loss, **{f"loss_{k}": v for k, v in terms.items()}}.items():
            totals[key] = totals.get(key, 0.0) + float(value.detach()) * n
        bar.set_postfix(loss=f"{totals['loss'] / seen:.4f}")
    return {key: value / max(seen, 1) for key, value in totals.items()}


@torch.no_grad()
def predict(forward: Callable[[Batch], ModelOutput], modules: list[nn.Module], data, *, device: torch.device,
            amp: bool) -> tuple[np.ndarray, np.ndarray]:
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
    amp: bool
    label: str = "epoch"                          # progress-bar prefix
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
             batch_size: int, seed: int, num_workers: int, device: torch.device, amp: bool, label: str = "epoch",
             on_epoch_start: Callable[[int], None] | None = None) -> Training:
    """The one set-up of optimiser, schedule, scaler and loaders, for any training."""
    optim = make_optimizer([p for m in modules for p in m.parameters()], optimizer)
    generator = torch.Generator()
    return Training(
        modules=modules, loss_fn=loss_fn, forward=forward, evaluated=evaluated, class_names=tuple(class_names),
        optimizer=optim, scheduler=make_scheduler(optim, schedule, epochs),
        scaler=torch.amp.GradScaler("cuda", enabled=amp),
        train_data=loader(train_split, batch_size, shuffle=True, generator=generator, num_workers=num_workers,
                          device=device),
        test_data=loader(test_split, batch_size, shuffle=False, generator=None, num_workers=num_workers,
                         device=device),
        generator=generator, epochs=epochs, seed=seed, device=device, amp=amp, label=label,
        on_epoch_start=on_epoch_start or (lambda epoch: None))


EpochDone = Callable[[int, dict[str, float], Any], None]


def fit_epochs(t: Training, start: int, *, progress: bool, after_epoch: EpochDone):
    """Epochs ``start`` .. ``t.epochs - 1``: reseed from (seed, epoch), train, step the schedule, evaluate, then
    ``after_epoch(epoch, losses, scores)``. Returns the last scores (None if no epoch ran)."""
    scores = None
    for epoch in range(start, t.epochs):
        seed = epoch_seed(t.seed, epoch)
        reseed(seed)
        t.generator.manual_seed(seed)
        t.on_epoch_start(epoch)
        losses = train_epoch(t.loss_fn, t.modules, t.train_data, t.optimizer, device=t.device, scaler=t.scaler,
                             epoch=epoch, progress=progress, desc=f"{t.label} {epoch + 1}/{t.epochs}")
        t.scheduler.step()
        scores = t.evaluate()
        after_epoch(epoch, losses, scores)
    return scores
