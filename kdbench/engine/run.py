"""One distillation run, start to finish: build, get the teacher, train, evaluate, track, checkpoint.

Everything that can fail on bad input (names, options, files, shapes) is built *before* the MLflow run
starts, so a refused run leaves nothing behind. Once started, the run ends FINISHED, FAILED or KILLED.
A checkpoint is written atomically after every epoch to ``<output_dir>/<config_hash>/checkpoint.pt``;
``resume=True`` continues from it, in the same MLflow run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..config import RunConfig, config_hash
from ..data.guard import require_usable
from ..metrics import Scores, score
from ..paths import cache_dir
from ..plugins import Plugins
from ..tracking import (
    flatten,
    log_confusion_matrix,
    source_commit,
    tracked_run,
    tracking_uri,
)
from . import loop, teacher_outputs
from .build import build_dataset, build_distiller, build_model
from .checkpoint import load, save_atomic
from .teacher import obtain_teacher


@dataclass
class RunResult:
    run_id: str
    config_hash: str
    scores: Scores
    teacher_scores: Scores
    history: list[dict[str, float]]


def outputs_root() -> Path:
    return cache_dir() / "teacher-outputs"


def outputs_keys(config: RunConfig, dataset, teacher) -> dict[str, str]:
    """The stored-outputs key of each split, for the teacher's current weights (hashed once)."""
    weights = teacher_outputs.weights_digest(teacher)
    return {split: teacher_outputs.outputs_key(config.teacher.name, config.teacher.options, weights,
                                               config.dataset.name, dataset, split) for split in ("train", "test")}


def checkpoint_path(config: RunConfig) -> Path:
    return Path(config.output_dir) / config_hash(config) / "checkpoint.pt"


def run(config: RunConfig, plugins: Plugins, *, resume: bool = False, progress: bool = True,
        echo=print) -> RunResult:
    digest = config_hash(config)
    device = loop.resolve_device(config.device)
    amp = config.amp and device.type == "cuda"

    loop.reseed(config.seed)
    dataset = build_dataset(config, plugins)
    skipped = require_usable(dataset, skip_bad=config.skip_bad, progress=progress, echo=echo)
    info = dataset.info
    train, test = dataset.split("train"), dataset.split("test")
    teacher = build_model("teacher", config, plugins, info).to(device)
    loop.reseed(config.seed)
    student = build_model("student", config, plugins, info).to(device)
    trains_teacher = plugins["distillers"].get(config.distiller.name).cls.trains_teacher
    store = config.teacher_cache and not trains_teacher and type(dataset).fixed_teacher_inputs
    # Weights that are already at hand are loaded now; training waits until the distiller is built, so
    # that options it can only check against the networks' widths or the run's length are refused first.
    source = obtain_teacher(config, dataset, teacher, device, progress=progress, echo=echo, allow_training=False)
    keys = outputs_keys(config, dataset, teacher) if store and source else {}
    stored = {split: teacher_outputs.find(outputs_root(), key) for split, key in keys.items()}
    spec = stored["train"].spec if stored.get("train") else None
    distiller = build_distiller(config, plugins, student, teacher, train, device, teacher_spec=spec)
    if source is None:
        source = obtain_teacher(config, dataset, teacher, device, progress=progress, echo=echo)
    if not trains_teacher:
        teacher.requires_grad_(False)
    if store:
        keys = keys or outputs_keys(config, dataset, teacher)
        for split, data in (("train", train), ("test", test)):
            if not stored.get(split):
                echo(f"teacher outputs: one pass over the {split} split, stored for later runs")
                stored[split] = teacher_outputs.compute(
                    outputs_root(), keys[split], teacher, data, batch_size=config.batch_size,
                    num_workers=config.num_workers, device=device, amp=amp, progress=progress)

    modules = [student, distiller] + ([teacher] if trains_teacher else [])
    params = [p for m in modules for p in m.parameters()]
    optimizer = loop.make_optimizer(params, config.optimizer)
    scheduler = loop.make_scheduler(optimizer, config.schedule, config.epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    generator = torch.Generator()
    train_data = loop.loader(train, config.batch_size, shuffle=True, generator=generator,
                             num_workers=config.num_workers, device=device)
    test_data = loop.loader(test, config.batch_size, shuffle=False, generator=None,
                            num_workers=config.num_workers, device=device)

    ckpt_path = checkpoint_path(config)
    start_epoch, run_id, history = 0, None, []
    if resume and ckpt_path.exists():
        state = load(ckpt_path)
        student.load_state_dict(state["student"])
        distiller.load_state_dict(state["distiller"])
        if trains_teacher:
            teacher.load_state_dict(state["teacher"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, run_id, history = state["epoch"], state["run_id"], state["history"]
        echo(f"resuming run {run_id} after epoch {start_epoch} from {ckpt_path}")
    elif resume:
        echo(f"no checkpoint at {ckpt_path}; starting from the beginning")
    elif ckpt_path.exists():
        echo(f"note: overwriting the checkpoint at {ckpt_path} (pass --resume to continue it instead)")

    def teacher_forward(batch):
        if trains_teacher:
            return teacher(batch.teacher_input)
        if stored:
            return stored["train"].lookup(batch.index, device)
        with torch.no_grad():
            return teacher(batch.teacher_input).detach()

    def loss_fn(batch):
        with loop.autocast(device, amp):  # the networks in mixed precision, the distiller in float32
            student_out, teacher_out = student(batch.student_input), teacher_forward(batch)
        return distiller(student_out.float(), teacher_out.float(), batch)

    tags = {"kdbench.role": "student", "kdbench.dataset": config.dataset.name, "kdbench.teacher": config.teacher.name,
            "kdbench.student": config.student.name, "kdbench.distiller": config.distiller.name,
            "kdbench.seed": str(config.seed), "kdbench.config_hash": digest, "kdbench.version": __version__,
            "kdbench.teacher_source": f"{source.kind}:{source.location}"}
    if source.run_id:
        tags["kdbench.teacher_run_id"] = source.run_id
    if commit := source_commit():
        tags["kdbench.git_commit"] = commit
    name = f"{config.distiller.name}-{config.dataset.name}-{config.student.name}-s{config.seed}"
    uri = tracking_uri(config.tracking.uri)
    with tracked_run(uri, config.tracking.experiment, run_name=name, tags=tags if run_id is None else None,
                     run_id=run_id) as active:
        import mlflow

        run_id = active.info.run_id
        if start_epoch == 0:
            mlflow.log_params(flatten(config.model_dump(mode="json")))
            mlflow.log_dict(config.model_dump(mode="json"), "config.json")
            if skipped:
                mlflow.log_dict({"problems": [{"file": p.file, "message": p.message, "items": list(p.items)}
                                              for p in skipped]}, "skipped_items.json")
                mlflow.log_metric("data_skipped_items", sum(len(p.items) for p in skipped))
            if stored:
                kept = stored["test"]
                teacher_scores = score(np.asarray(kept.label), np.asarray(kept.logits).argmax(1), info.class_names)
            else:
                teacher_scores = loop.evaluate(lambda b: teacher(b.teacher_input), [teacher], test_data,
                                               info.class_names, device=device, amp=amp)
            mlflow.log_metrics(teacher_scores.as_dict("teacher_"))
        else:
            teacher_scores = Scores(info.class_names, state["teacher_confusion"])
        for epoch in range(start_epoch, config.epochs):
            seed = loop.epoch_seed(config.seed, epoch)
            loop.reseed(seed)
            generator.manual_seed(seed)
            distiller.on_epoch_start(epoch)
            if not trains_teacher:
                teacher.eval()
            losses = loop.train_epoch(loss_fn, modules, train_data, optimizer, device=device, scaler=scaler, epoch=epoch, progress=progress,
                                      desc=f"epoch {epoch + 1}/{config.epochs}")
            if not trains_teacher:
                teacher.eval()
            scheduler.step()
            scores = loop.evaluate(lambda b: student(b.student_input), [student], test_data, info.class_names,
                                   device=device, amp=amp)
            metrics = {**losses, **scores.as_dict(), "lr": scheduler.get_last_lr()[0]}
            mlflow.log_metrics(metrics, step=epoch + 1)
            history.append(metrics)
            echo(f"epoch {epoch + 1}/{config.epochs}: loss {losses['loss']:.4f}  accuracy {scores.accuracy:.3f}  "
                 f"mf1 {scores.mf1:.3f}  kappa {scores.kappa:.3f}")
            save_atomic({"format": 1, "config_hash": digest, "epoch": epoch + 1, "run_id": run_id,
                         "history": history, "teacher_confusion": teacher_scores.confusion,
                         "student": loop.to_cpu(student.state_dict()),
                         "distiller": loop.to_cpu(distiller.state_dict()),
                         "teacher": loop.to_cpu(teacher.state_dict()) if trains_teacher else None,
                         "optimizer": loop.to_cpu(optimizer.state_dict()),
                         "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()}, ckpt_path)
        if start_epoch >= config.epochs:  # resumed a run that had already finished its epochs
            scores = loop.evaluate(lambda b: student(b.student_input), [student], test_data, info.class_names,
                                   device=device, amp=amp)
        mlflow.log_metrics(scores.as_dict("final_"))
        mlflow.log_dict({"class_names": list(info.class_names), "matrix": scores.confusion.tolist()},
                        "confusion_matrix.json")
        log_confusion_matrix(scores.confusion, info.class_names,
                             f"{config.distiller.name}: {config.student.name} on {config.dataset.name}")
    return RunResult(run_id, digest, scores, teacher_scores, history)
