"""Fitting a prepared run: the teacher's training if it needs one, its stored outputs, then the student's epochs,
tracked, with a checkpoint after every epoch.

Once the tracked run starts it ends FINISHED, FAILED or KILLED. The checkpoint is written atomically to
``<output_dir>/<config_hash>/checkpoint.pt``; a run prepared with ``resume=True`` continues from it, in the
same tracked run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .. import __version__
from ..errors import KdbenchError
from ..metrics import Scores, score
from ..tracking import (
    MlflowTracker,
    NullTracker,
    Tracker,
    close_if_stale,
    flatten,
    process_tags,
    source_commit,
    tracking_uri,
)
from . import loop, teacher_outputs
from .checkpoint import save_atomic
from .plan import Prepared, PreparedTeacher, TeacherStage, outputs_keys, outputs_root
from .teacher import TEACHER_FIELDS, TeacherSource, fit_teacher


@dataclass
class RunResult:
    run_id: str
    config_hash: str
    scores: Scores
    teacher_scores: Scores
    history: list[dict[str, float]]


def default_tracker(config) -> Tracker:
    """MLflow; under DDP on rank 0 only, the other ranks' runs being the same run."""
    if loop.world()[0] != 0:
        return NullTracker()
    return MlflowTracker(tracking_uri(config.tracking.uri), config.tracking.experiment)


def fit(p: Prepared, *, tracker: Tracker | None = None, progress: bool = True, echo=print) -> RunResult:
    tracker = tracker or default_tracker(p.config)
    fit_teacher_stage(p, tracker, progress=progress, echo=echo)
    return fit_student(p, tracker, progress=progress, echo=echo)


def fit_teacher_stage(p: Prepared | TeacherStage, tracker: Tracker, *, progress: bool = True, echo=print) -> None:
    """Everything a run needs of its teacher before the student's first epoch: its training (source "train")
    and its stored outputs. A sweep runs this once per distinct teacher before fanning cells out, so cells
    that share a frozen teacher neither train it nor compute its outputs in parallel."""
    config = p.config
    if loop.world()[0] != 0 and (p.teacher_fit is not None or (p.store and len(p.stored) < 2)):
        raise KdbenchError("under DDP the teacher is trained and its outputs stored by rank 0 alone, before the other "
                           "ranks prepare; start DDP runs with `kdbench run --nproc-per-node K`")
    if p.teacher_fit is not None:
        echo(f"teacher: no checkpoint given; training {config.teacher.name!r} on {config.dataset.name!r} "
             f"for {config.teacher_training.epochs} epochs (cached for later runs)")
        _, p.source = fit_teacher(config, p.dataset, p.teacher, p.teacher_fit, tracker, progress=progress, echo=echo)
        if not p.trains_teacher:
            p.teacher.requires_grad_(False)
    elif p.source.kind == "cache":
        echo(f"teacher: reusing {p.source.location}")
    elif p.source.kind == "random":
        echo(f"teacher: negative control, an {p.source.location}")
    if p.store:
        keys = outputs_keys(config, p.dataset, p.teacher) if len(p.stored) < 2 else {}
        for split, key in keys.items():
            if split not in p.stored:
                echo(f"teacher outputs: one pass over the {split} split, stored for later runs")
                p.stored[split] = teacher_outputs.compute(
                    outputs_root(), key, p.teacher, p.dataset.split(split, TEACHER_FIELDS), batch_size=config.batch_size,
                    num_workers=config.num_workers, device=p.device, amp=p.amp, progress=progress)


def fit_teacher_only(p: PreparedTeacher, *, tracker: Tracker | None = None, progress: bool = True,
                     echo=print) -> tuple[dict[str, float], TeacherSource]:
    """``kdbench teacher train``: the teacher's training, tracked and cached; returns (test metrics, source)."""
    tracker = tracker or default_tracker(p.config)
    return fit_teacher(p.config, p.dataset, p.teacher, p.training, tracker, progress=progress, echo=echo)


def student_tags(p: Prepared, store: str | None) -> dict[str, str]:
    """The run's identity. The teacher's weights are named by their digest, which stays true anywhere; its
    run id only when that run is in this store (the teacher cache is shared by every store on the machine)."""
    config = p.config
    tags = {"kdbench.role": "student", "kdbench.dataset": config.dataset.name, "kdbench.teacher": config.teacher.name,
            "kdbench.student": config.student.name, "kdbench.distiller": config.distiller.name,
            "kdbench.seed": str(config.seed), "kdbench.config_hash": p.digest, "kdbench.version": __version__,
            "kdbench.teacher_source": f"{p.source.kind}:{p.source.location}", **process_tags(),
            **loop.compute_tags(p.device)}
    tags["kdbench.teacher_weights"] = teacher_outputs.weights_digest(p.teacher)[:16]
    tags["kdbench.data_fingerprint"] = p.dataset.fingerprint()[:16]
    if p.source.run_id and p.source.store == store:
        tags["kdbench.teacher_run_id"] = p.source.run_id
    elif p.source.run_id:
        tags["kdbench.teacher_run_elsewhere"] = f"{p.source.run_id} in {p.source.store or 'an unknown store'}"
    if config.teacher_control != "none":
        tags["kdbench.teacher_control"] = config.teacher_control
    if config.direction != "forward":
        tags["kdbench.direction"] = config.direction
    if gpus := os.environ.get("CUDA_VISIBLE_DEVICES"):  # a sweep's worker slot, or the user's own choice
        tags["kdbench.cuda_visible_devices"] = gpus
    if commit := source_commit():
        tags["kdbench.git_commit"] = commit
    if (ranks := loop.world()[1]) > 1:
        tags["kdbench.ranks"] = str(ranks)  # DDP: batch_size is the global batch
    return tags


def fit_student(p: Prepared, tracker: Tracker, *, progress: bool, echo=print) -> RunResult:
    config, info, t = p.config, p.dataset.info, p.training
    state = t.resume
    start, run_id, history = t.start
    name = f"{config.distiller.name}-{config.dataset.name}-{config.student.name}-s{config.seed}"
    store = getattr(tracker, "uri", None)
    tags = student_tags(p, store)
    continued = bool(run_id) and not tracker.holds(run_id)
    if continued:
        # The checkpoint folder is shared by every store its runs were tracked in: this one was tracked elsewhere
        # (another --tracking-uri). Its weights and history continue here, in a new run that says where from.
        tags["kdbench.continued_from"] = (f"run {run_id} in {state.get('tracking_uri') or 'another store'}, "
                                          f"after epoch {start}")
        echo(f"note: the checkpoint's run {run_id} is not in this tracking store; continuing it in a new run here")
        run_id = None
    if p.replaced_run and store and close_if_stale(store, p.replaced_run):
        echo(f"note: run {p.replaced_run}, whose process died, is now marked KILLED")
    with tracker.run(name=name, tags=tags, run_id=run_id) as run_id:
        new_run = start == 0 or continued
        if continued and loop.world()[0] == 0:   # from now on the checkpoint belongs to this run
            save_atomic({**state, "run_id": run_id, "tracking_uri": store}, p.checkpoint)
        if new_run:
            tracker.log_params(flatten(config.model_dump(mode="json")))
            tracker.log_dict(config.model_dump(mode="json"), "config.json")
            if p.skipped:
                tracker.log_dict({"problems": [{"file": s.file, "message": s.message, "items": list(s.items)}
                                               for s in p.skipped]}, "skipped_items.json")
                tracker.log_metrics({"data_skipped_items": sum(len(s.items) for s in p.skipped)})
        if start > 0:
            teacher_scores = Scores(info.class_names, state["teacher_confusion"])
        elif p.stored:
            kept = p.stored["test"]
            teacher_scores = score(np.asarray(kept.label), np.asarray(kept.logits).argmax(1), info.class_names)
        else:
            teacher_scores = loop.evaluate(lambda b: p.teacher(b.teacher_input), [p.teacher], t.test_data,
                                           info.class_names, device=p.device, amp=p.amp)
        if new_run:
            tracker.log_metrics(teacher_scores.as_dict("teacher_"))
            for step, metrics in enumerate(history, 1):   # a continued run's epochs so far, as they were logged
                tracker.log_metrics(metrics, step=step)

        def after_epoch(epoch, losses, scores):
            metrics = {**losses, **scores.as_dict(), "lr": t.scheduler.get_last_lr()[0]}
            tracker.log_metrics(metrics, step=epoch + 1)
            history.append(metrics)
            echo(f"epoch {epoch + 1}/{t.epochs}: loss {losses['loss']:.4f}  accuracy {scores.accuracy:.3f}  "
                 f"mf1 {scores.mf1:.3f}  kappa {scores.kappa:.3f}")
            if loop.world()[0] != 0:
                return  # under DDP every rank holds rank 0's state (loop.share_rank0_state); rank 0 writes it
            save_atomic({"format": 1, "config_hash": p.digest, "config": config.model_dump(mode="json"),
                         "epoch": epoch + 1, "run_id": run_id, "tracking_uri": store,
                         "history": history, "teacher_confusion": teacher_scores.confusion,
                         "student": loop.to_cpu(p.student.state_dict()),
                         "distiller": loop.to_cpu(p.distiller.state_dict()),
                         "teacher": loop.to_cpu(p.teacher.state_dict()) if p.trains_teacher else None,
                         **t.state()}, p.checkpoint)

        scores = loop.fit_epochs(t, start, progress=progress, after_epoch=after_epoch)
        if scores is None:  # resumed a run that had already finished its epochs
            scores = t.evaluate()
        tracker.log_metrics(scores.as_dict("final_"))
        tracker.log_confusion(scores.confusion, info.class_names,
                              f"{config.distiller.name}: {config.student.name} on {config.dataset.name}")
        tracker.log_torch({"state_dict": loop.to_cpu(p.student.state_dict()), "student": config.student.name,
                           "options": config.student.options, "config": config.model_dump(mode="json")},
                          "student/student.pt")
    return RunResult(run_id, p.digest, scores, teacher_scores, history)
