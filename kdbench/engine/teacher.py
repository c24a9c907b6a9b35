"""A teacher's weights: where they come from (decided once), loading them, and training them.

The source is decided once, while a run is prepared: the configured checkpoint (a file or ``runs:/<id>``),
else the cache, else training. A teacher trained here is keyed by (teacher + options, dataset + content
fingerprint, seed, teacher training recipe) and cached under ``$KDBENCH_CACHE_DIR/teachers`` (default
``~/.cache/kdbench``), so every later run with the same key reuses it. Training is its own tracked run
(tag ``kdbench.role = teacher``) through the same epoch loop as a student, and the weights are also logged
there as the artifact ``teacher/teacher.pt``, so ``runs:/<run id>`` can name them.
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
from ..losses import hard_ce
from ..paths import cache_dir
from ..tracking import Tracker, download_artifact, flatten, process_tags
from . import loop
from .checkpoint import load, load_state_strict, save_atomic

ARTIFACT = "teacher/teacher.pt"
TEACHER_FIELDS = ("teacher",)


@dataclass(frozen=True)
class TeacherSource:
    """Where the teacher's weights come from (recorded on the student's run)."""

    kind: str  # "checkpoint" | "cache" | "train" (to be trained) | "trained" | "random" (the control)
    location: str
    run_id: str | None = None
    #: the tracking store ``run_id`` lives in (the cache is shared by every store on the machine)
    store: str | None = None


def teacher_key(config: RunConfig, dataset: Dataset) -> str:
    payload = {"teacher": config.teacher.model_dump(exclude={"checkpoint"}), "dataset": config.dataset.name,
               "data": dataset.fingerprint(), "seed": config.seed,
               "training": config.teacher_training.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def cached_path(config: RunConfig, dataset: Dataset) -> Path:
    name = f"{config.teacher.name}-{config.dataset.name}-seed{config.seed}-{teacher_key(config, dataset)}.pt"
    return cache_dir() / "teachers" / name


def progress_path(cached: Path) -> Path:
    """The teacher's checkpoint while it trains (beside the weights it will become; removed once they exist)."""
    return cached.with_name(cached.stem + ".training.pt")


def decide_source(config: RunConfig, dataset: Dataset) -> TeacherSource:
    """The configured checkpoint, else the cached weights, else "train"; nothing is loaded or trained here."""
    if config.teacher_control == "random":
        return TeacherSource("random", f"untrained {config.teacher.name}, initialised from seed {config.seed}")
    if config.teacher.checkpoint:
        return TeacherSource("checkpoint", config.teacher.checkpoint)
    path = cached_path(config, dataset)
    return TeacherSource("cache" if path.exists() else "train", str(path))


def load_weights(teacher: Model, source: TeacherSource, uri: str) -> TeacherSource:
    """Load a checkpoint or cached source into ``teacher``; returns the source with the run id it records."""
    if source.kind == "cache":
        blob = load(Path(source.location), f"cached teacher {source.location!r}",
                    fix="delete it, and the teacher is trained again")
        load_state_strict(teacher, blob["state_dict"], f"cached teacher {source.location!r}")
        return TeacherSource("cache", source.location, blob.get("run_id"), blob.get("tracking_uri"))
    location, run_id, path = source.location, None, source.location
    if location.startswith("runs:/"):
        run_id = location.removeprefix("runs:/").split("/")[0]
        artifact = location.removeprefix(f"runs:/{run_id}").strip("/") or ARTIFACT
        try:
            path = download_artifact(uri, run_id, artifact)
        except KdbenchError as error:
            raise KdbenchError(f"teacher checkpoint {location!r}: {error}") from None
    blob = load(Path(path), f"teacher checkpoint {location!r}",
                fix="point --teacher-checkpoint at a teacher file kdbench wrote, a state dict saved with torch.save, "
                    "or runs:/<teacher run id>")
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise KdbenchError(f"teacher checkpoint {location!r} holds no state dict")
    load_state_strict(teacher, state, f"teacher checkpoint {location!r}")
    return TeacherSource("checkpoint", location, run_id, uri if run_id else None)


def teacher_training(config: RunConfig, dataset: Dataset, teacher: Model, device: torch.device,
                     echo=print) -> loop.Training:
    """Cross-entropy plus the teacher's own terms, on the teacher's input alone (student inputs never decoded).
    A training interrupted earlier (its checkpoint beside the cache) is continued, in its tracked run: the key
    of the cache names everything the weights depend on, and every epoch reseeds, so this is always sound."""

    recipe = config.teacher_training
    amp = loop.amp_dtype(config.amp, device)
    teacher.to(device)

    def teacher_loss(batch):
        with loop.autocast(device, amp):
            out = teacher(batch.teacher_input)
        extra = teacher.training_losses(out.float(), batch)  # e.g. MC2SleepNet's alignment, SEN's domain loss
        return {"ce": hard_ce(out.logits.float(), batch.label), **{k: v.float() for k, v in extra.items()}}

    training = loop.training(
        [teacher], teacher_loss, lambda b: teacher(b.teacher_input), [teacher],
        train_split=dataset.split("train", TEACHER_FIELDS), test_split=dataset.split("test", TEACHER_FIELDS),
        class_names=dataset.info.class_names, optimizer=recipe.optimizer, schedule=recipe.schedule,
        epochs=recipe.epochs, batch_size=recipe.batch_size, seed=config.seed, num_workers=config.num_workers,
        device=device, amp=amp, label="teacher", pin_memory=config.pin_memory,
        persistent_workers=config.persistent_workers)
    partial = progress_path(cached_path(config, dataset))
    if partial.exists():
        state = load(partial, f"the interrupted teacher training {str(partial)!r}",
                     fix="delete it, and the teacher is trained from its first epoch")
        load_state_strict(teacher, state["teacher"], f"the interrupted teacher training {str(partial)!r}")
        training.load_state(state)
        echo(f"teacher: continuing the interrupted training after epoch {state['epoch']} ({partial})")
    return training


def fit_teacher(config: RunConfig, dataset: Dataset, teacher: Model, training: loop.Training, tracker: Tracker, *,
                progress: bool, echo=print) -> tuple[dict[str, float], TeacherSource]:
    """Run the teacher's training, tracked; cache the weights; returns (test metrics, the new source)."""
    names = dataset.info.class_names
    key = teacher_key(config, dataset)
    tags = {"kdbench.role": "teacher", "kdbench.teacher": config.teacher.name, "kdbench.dataset": config.dataset.name,
            "kdbench.seed": str(config.seed), "kdbench.teacher_key": key, "kdbench.version": __version__,
            **process_tags(), **loop.compute_tags(training.device)}
    params = flatten({"teacher": config.teacher.model_dump(exclude={"checkpoint"}),
                      "dataset": config.dataset.model_dump(), "seed": config.seed,
                      "teacher_training": config.teacher_training.model_dump(mode="json")})
    path = cached_path(config, dataset)
    store = getattr(tracker, "uri", None)
    partial = progress_path(path)
    start, run_id, _ = training.start
    if run_id and not tracker.holds(run_id):
        # the cache is shared by every store on the machine: the interrupted training was tracked elsewhere, so
        # its weights continue here in a new run that says where the first epochs are
        tags["kdbench.continued_from"] = f"run {run_id} in {training.resume.get('tracking_uri')}, after epoch {start}"
        run_id = None
    with tracker.run(name=f"teacher-{config.teacher.name}-{config.dataset.name}", tags=tags, run_id=run_id) as run_id:
        if start == 0 or "kdbench.continued_from" in tags:
            tracker.log_params(params)

        def after_epoch(epoch, losses, scores):
            tracker.log_metrics({**losses, **scores.as_dict()}, step=epoch + 1)
            echo(f"teacher epoch {epoch + 1}/{training.epochs}: loss {losses['loss']:.4f}  "
                 f"accuracy {scores.accuracy:.3f}  mf1 {scores.mf1:.3f}  kappa {scores.kappa:.3f}")
            save_atomic({"epoch": epoch + 1, "run_id": run_id, "tracking_uri": store, "history": [],
                         "teacher": loop.to_cpu(teacher.state_dict()), **training.state()}, partial)

        scores = loop.fit_epochs(training, start, progress=progress, after_epoch=after_epoch)
        if scores is None:  # interrupted after its last epoch, before the weights were cached
            scores = training.evaluate()
        tracker.log_metrics(scores.as_dict("final_"))
        tracker.log_confusion(scores.confusion, names, f"teacher {config.teacher.name} on {config.dataset.name}")
        save_atomic({"state_dict": loop.to_cpu(teacher.state_dict()), "teacher": config.teacher.name,
                     "options": config.teacher.options, "dataset": config.dataset.name,
                     "metrics": scores.as_dict(), "run_id": run_id, "tracking_uri": store}, path)
        with tempfile.TemporaryDirectory() as tmp:  # the artifact gets the fixed name runs:/ID expects
            shutil.copyfile(path, Path(tmp) / "teacher.pt")
            tracker.log_file(Path(tmp) / "teacher.pt", "teacher")
    partial.unlink(missing_ok=True)
    return scores.as_dict(), TeacherSource("trained", str(path), run_id, store)
