"""Getting a teacher's weights: from a checkpoint, from the cache, or by training it first.

A teacher trained here is keyed by (teacher + options, dataset + content fingerprint, seed, teacher
training recipe) and cached under ``$KDBENCH_CACHE_DIR/teachers`` (default ``~/.cache/kdbench``),
so every later run with the same key reuses it. Training is its own MLflow run (tag
``kdbench.role = teacher``) and the weights are also logged there as the artifact ``teacher/teacher.pt``,
so ``runs:/<run id>`` can name them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import __version__
from ..config import RunConfig
from ..contracts import Dataset, Model
from ..errors import KdbenchError
from ..paths import cache_dir
from ..tracking import flatten, log_confusion_matrix, tracked_run, tracking_uri
from . import loop
from .build import teacher_view
from .checkpoint import load, load_state_strict, save_atomic

ARTIFACT = "teacher/teacher.pt"


@dataclass(frozen=True)
class TeacherSource:
    """Where the teacher's weights came from (recorded on the student's run)."""

    kind: str  # "checkpoint" | "cache" | "trained"
    location: str
    run_id: str | None = None


def teacher_key(config: RunConfig, dataset: Dataset) -> str:
    payload = {"teacher": config.teacher.model_dump(exclude={"checkpoint"}), "dataset": config.dataset.name,
               "data": dataset.fingerprint(), "seed": config.seed,
               "training": config.teacher_training.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def cached_path(config: RunConfig, dataset: Dataset) -> Path:
    name = f"{config.teacher.name}-{config.dataset.name}-seed{config.seed}-{teacher_key(config, dataset)}.pt"
    return cache_dir() / "teachers" / name


def load_checkpoint(teacher: Model, location: str, uri: str) -> TeacherSource:
    """Load weights from a file (a kdbench teacher file or a bare state dict) or from ``runs:/<id>``."""
    run_id = None
    path = location
    if location.startswith("runs:/"):
        import mlflow

        run_id = location.removeprefix("runs:/").split("/")[0]
        artifact = location.removeprefix(f"runs:/{run_id}").strip("/") or ARTIFACT
        mlflow.set_tracking_uri(uri)
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact)
        except Exception as error:
            raise KdbenchError(f"teacher checkpoint {location!r} cannot be fetched from {uri}: "
                               f"{str(error).splitlines()[0]}") from None
    blob = load(Path(path))
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise KdbenchError(f"teacher checkpoint {location!r} holds no state dict")
    load_state_strict(teacher, state, f"teacher checkpoint {location!r}")
    return TeacherSource("checkpoint", location, run_id)


def train_teacher(config: RunConfig, dataset: Dataset, teacher: Model, device: torch.device, *, progress: bool,
                  echo=print) -> tuple[dict, str]:
    """Train ``teacher`` on the training split with cross-entropy; track it; return (test metrics, run id)."""
    import torch.nn.functional as F

    recipe = config.teacher_training
    train, test = teacher_view(dataset.split("train")), teacher_view(dataset.split("test"))
    names = dataset.info.class_names
    teacher.to(device)
    optimizer = loop.make_optimizer(teacher.parameters(), recipe.optimizer)
    scheduler = loop.make_scheduler(optimizer, recipe.schedule, recipe.epochs)
    amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    generator = torch.Generator()
    train_data = loop.loader(train, recipe.batch_size, shuffle=True, generator=generator,
                             num_workers=config.num_workers, device=device)
    test_data = loop.loader(test, recipe.batch_size, shuffle=False, generator=None,
                            num_workers=config.num_workers, device=device)
    tags = {"kdbench.role": "teacher", "kdbench.teacher": config.teacher.name, "kdbench.dataset": config.dataset.name,
            "kdbench.seed": str(config.seed), "kdbench.teacher_key": teacher_key(config, dataset),
            "kdbench.version": __version__}
    params = flatten({"teacher": config.teacher.model_dump(exclude={"checkpoint"}),
                      "dataset": config.dataset.model_dump(), "seed": config.seed,
                      "teacher_training": recipe.model_dump(mode="json")})

    def teacher_loss(batch):
        with loop.autocast(device, amp):
            out = teacher(batch.teacher_input)
        extra = teacher.training_losses(out.float(), batch)  # e.g. MC2SleepNet's alignment, SEN's domain loss
        return {"ce": F.cross_entropy(out.logits.float(), batch.label), **{k: v.float() for k, v in extra.items()}}

    uri = tracking_uri(config.tracking.uri)
    with tracked_run(uri, config.tracking.experiment, run_name=f"teacher-{config.teacher.name}-{config.dataset.name}",
                     tags=tags) as run:
        import mlflow

        mlflow.log_params(params)
        for epoch in range(recipe.epochs):
            seed = loop.epoch_seed(config.seed, epoch)
            loop.reseed(seed)
            generator.manual_seed(seed)
            losses = loop.train_epoch(teacher_loss, [teacher], train_data, optimizer, device=device, scaler=scaler,
                                      epoch=epoch, progress=progress, desc=f"teacher {epoch + 1}/{recipe.epochs}")
            scheduler.step()
            scores = loop.evaluate(lambda b: teacher(b.teacher_input), [teacher], test_data, names,
                                   device=device, amp=amp)
            mlflow.log_metrics({**losses, **scores.as_dict()}, step=epoch + 1)
            echo(f"teacher epoch {epoch + 1}/{recipe.epochs}: loss {losses['loss']:.4f}  "
                 f"accuracy {scores.accuracy:.3f}  mf1 {scores.mf1:.3f}  kappa {scores.kappa:.3f}")
        mlflow.log_metrics(scores.as_dict("final_"))
        log_confusion_matrix(scores.confusion, names, f"teacher {config.teacher.name} on {config.dataset.name}")
        path = cached_path(config, dataset)
        save_atomic({"state_dict": loop.to_cpu(teacher.state_dict()), "teacher": config.teacher.name,
                     "options": config.teacher.options, "dataset": config.dataset.name,
                     "metrics": scores.as_dict(), "run_id": run.info.run_id}, path)
        with tempfile.TemporaryDirectory() as tmp:  # the artifact gets the fixed name runs:/ID expects
            shutil.copyfile(path, Path(tmp) / "teacher.pt")
            mlflow.log_artifact(str(Path(tmp) / "teacher.pt"), artifact_path="teacher")
    return scores.as_dict(), run.info.run_id


def obtain_teacher(config: RunConfig, dataset: Dataset, teacher: Model, device: torch.device, *,
                   progress: bool, echo=print, allow_training: bool = True) -> TeacherSource | None:
    """Give ``teacher`` its weights: the configured checkpoint, else the cache, else train it now
    (or, with ``allow_training=False``, return None instead of training)."""
    uri = tracking_uri(config.tracking.uri)
    if config.teacher.checkpoint:
        return load_checkpoint(teacher, config.teacher.checkpoint, uri)
    path = cached_path(config, dataset)
    if path.exists():
        blob = load(path)
        load_state_strict(teacher, blob["state_dict"], f"cached teacher {str(path)!r}")
        echo(f"teacher: reusing {path}")
        return TeacherSource("cache", str(path), blob.get("run_id"))
    if not allow_training:
        return None
    echo(f"teacher: no checkpoint given; training {config.teacher.name!r} on {config.dataset.name!r} "
         f"for {config.teacher_training.epochs} epochs (cached for later runs)")
    _, run_id = train_teacher(config, dataset, teacher, device, progress=progress, echo=echo)
    return TeacherSource("trained", str(path), run_id)


def train_standalone(config: RunConfig, plugins, *, progress: bool, echo=print) -> tuple[dict, str, Path]:
    """``kdbench teacher train``: build the dataset and teacher, train, cache; return (metrics, run id, path)."""
    from ..data.guard import require_usable
    from .build import build_dataset, build_model

    device = loop.resolve_device(config.device)
    loop.reseed(config.seed)
    dataset = build_dataset(config, plugins)
    require_usable(dataset, skip_bad=config.skip_bad, progress=progress, echo=echo)
    teacher = build_model("teacher", config, plugins, dataset.info).to(device)
    scores, run_id = train_teacher(config, dataset, teacher, device, progress=progress, echo=echo)
    return scores, run_id, cached_path(config, dataset)
