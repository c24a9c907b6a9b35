"""Preparing a run: every decision made and everything refusable refused, before anything is trained or tracked.

:func:`prepare` turns a resolved config into a :class:`Prepared` run: the dataset (checked), both networks, the
teacher's source (checkpoint, cache, or "train", decided once; loaded now if it exists), the stored teacher
outputs that already exist, the distiller (built against both networks' widths), the optimiser and loaders,
and the checkpoint to resume. Nothing here starts a tracked run, so a refusal leaves nothing behind. A worker
process (a sweep cell, a DDP rank) receives a config, prepares and fits.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import RunConfig, config_hash
from ..contracts import Dataset, Distiller, Model
from ..data.guard import require_usable
from ..data.report import Problem
from ..data.reverse import SWAP, ReversedModalities
from ..errors import KdbenchError
from ..paths import cache_dir
from ..plugins import Plugins
from ..tracking import check_store, live_owner, sqlite_path, tracking_uri
from . import loop, teacher_outputs
from .build import build_dataset, build_distiller, build_model
from .checkpoint import check_writable, load, state_bytes
from .teacher import (
    TEACHER_FIELDS,
    TeacherSource,
    decide_source,
    load_weights,
    teacher_training,
)


@dataclass
class Prepared:
    """A run ready to fit. ``stored`` (split → teacher outputs) is completed by :func:`kdbench.engine.fit`
    when the teacher had to be trained first."""

    config: RunConfig
    digest: str
    device: torch.device
    amp: torch.dtype | None
    dataset: Dataset
    skipped: list[Problem]
    teacher: Model
    student: Model
    distiller: Distiller
    source: TeacherSource
    teacher_fit: loop.Training | None     # the teacher's training, when the source is "train"
    replaced_run: str | None              # the tracked run of the checkpoint this run resumes or overwrites
    trains_teacher: bool                  # the distiller trains the teacher with the student
    store: bool                           # the frozen teacher's outputs are stored and looked up
    stored: dict[str, teacher_outputs.TeacherOutputs]
    training: loop.Training               # the student's
    checkpoint: Path


def outputs_root() -> Path:
    return cache_dir() / "teacher-outputs"


def outputs_keys(config: RunConfig, dataset: Dataset, teacher: Model) -> dict[str, str]:
    """The stored-outputs key of each split, for the teacher's current weights (hashed once)."""
    weights = teacher_outputs.weights_digest(teacher)
    return {split: teacher_outputs.outputs_key(config.teacher.name, config.teacher.options, weights,
                                               config.dataset.name, dataset, split) for split in ("train", "test")}


def checkpoint_path(config: RunConfig) -> Path:
    return Path(config.output_dir) / config_hash(config) / "checkpoint.pt"


def previous_run(path: Path, uri: str, *, resume: bool) -> tuple[str | None, dict | None]:
    """The tracked run of the checkpoint at ``path`` (if any) and, with ``resume``, the checkpoint itself, read
    once. Refused if that run is still alive (two processes would write one checkpoint); a dead one is closed by
    ``fit`` (marked KILLED) before this run starts. A damaged checkpoint is refused only when it is resumed."""
    if not path.exists():
        return None, None
    try:
        state = load(path)
    except KdbenchError:
        if resume:
            raise
        return None, None  # overwriting a damaged checkpoint is fine
    run_id = state.get("run_id") if isinstance(state, dict) else None
    home = state.get("tracking_uri") if isinstance(state, dict) else None
    # its run may be tracked in another store (the folder is shared by every store): looked up there too when
    # that is a local SQLite file, which answers at once (a server might not, and a missing file must not be
    # created by the lookup)
    stores = [uri] + ([home] if home and home != uri and (db := sqlite_path(home)) and db.is_file() else [])
    for store in stores:
        if run_id and (owner := live_owner(store, run_id)):
            raise KdbenchError(f"the checkpoint {path} belongs to run {run_id}, which is still running ({owner}); "
                               f"wait for it, stop it, or write elsewhere with --set output_dir=DIR")
    return run_id, state if resume else None


def trained_other_way(config: RunConfig, plugins: Plugins, stage: TeacherStage, name: str, who: str) -> Model:
    """The network ``name`` as runs of this dataset in the *other* direction train and cache it as their teacher
    (same seed and ``teacher_training``): the trained network of this run's student modality. Looked up, never
    trained here: refused in one line, with the command that makes it, if it is not cached."""
    other = "forward" if config.direction == "reverse" else "reverse"
    blob = config.model_dump(mode="json")
    defaults = plugins["teachers"].get(name).validate({}).model_dump(mode="json")   # as resolve writes them
    blob.update(direction=other, teacher={"name": name, **defaults})
    sub = RunConfig.model_validate(blob)
    view = stage.dataset.base if config.direction == "reverse" else ReversedModalities(stage.dataset)
    network = build_model("teacher", sub, plugins, view.info).to(stage.device)
    found = decide_source(sub, view)
    if found.kind != "cache":
        flag = " --set direction=reverse" if other == "reverse" else ""
        raise KdbenchError(f"{who} needs a trained {name!r} on the student's modality, which is not cached yet: "
                           f"`kdbench teacher train --dataset {config.dataset.name} --teacher {name} --seed "
                           f"{config.seed}{flag}` (with this run's teacher_training) first, or run the rows of the "
                           f"table that train it")
    load_weights(network, found, tracking_uri(config.tracking.uri))
    return network


def adopt_networks(config: RunConfig, plugins: Plugins, stage: TeacherStage, student: Model) -> None:
    """Hand a student built around trained networks what it needs, before its optimiser exists: a late-fusion
    student (``reads_both``) a copy of the run's trained teacher and the trained network of its own modality;
    a ``pretrained`` student (``adopts_own``) the trained network of its own modality."""
    name, dataset = config.student.name, plugins["datasets"].get(config.dataset.name).cls
    own_default = dataset.default_teacher if config.direction == "reverse" else dataset.default_student
    if type(student).reads_both:
        if config.direction == "reverse":
            raise KdbenchError(f"student {name!r} reads both modalities; run it with direction = forward")
        if stage.source.kind == "train":
            raise KdbenchError(f"student {name!r} is built around the trained teacher {config.teacher.name!r}, which "
                               f"is not trained yet: `kdbench teacher train --dataset {config.dataset.name} --teacher "
                               f"{config.teacher.name} --seed {config.seed}` first, or run it in a sweep (its "
                               f"shared-teacher phase trains it)")
        own = trained_other_way(config, plugins, stage, student.partner or own_default, f"student {name!r}")
        student.adopt(copy.deepcopy(stage.teacher), own)
    else:
        student.adopt_own(trained_other_way(config, plugins, stage, student.partner or own_default,
                                             f"student {name!r}"))
    student.to(stage.device)


@dataclass
class TeacherStage:
    """What a run needs of its teacher before the student exists: the data, the teacher (loaded if trained),
    where its weights come from, its training if it still needs one, and its stored outputs found so far. A
    sweep's shared-teacher job prepares only this; :func:`prepare` builds the student side on top of it."""

    config: RunConfig
    device: torch.device
    amp: torch.dtype | None
    dataset: Dataset
    skipped: list[Problem]
    teacher: Model
    source: TeacherSource
    teacher_fit: loop.Training | None
    trains_teacher: bool
    store: bool
    stored: dict[str, teacher_outputs.TeacherOutputs]


def prepare_teacher_stage(config: RunConfig, plugins: Plugins, *, progress: bool = True,
                          echo=print) -> TeacherStage:
    check_store(tracking_uri(config.tracking.uri))
    device = loop.resolve_device(config.device)
    amp = loop.amp_dtype(config.amp, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = config.cudnn_benchmark

    loop.reseed(config.seed)
    dataset = build_dataset(config, plugins)
    skipped = require_usable(dataset, skip_bad=config.skip_bad, progress=progress, echo=echo)
    if config.direction == "reverse":
        dataset = ReversedModalities(dataset)
    teacher = build_model("teacher", config, plugins, dataset.info).to(device)
    trains_teacher = plugins["distillers"].get(config.distiller.name).cls.trains_teacher
    store = config.teacher_cache and not trains_teacher and dataset.fixed_teacher_inputs

    source = decide_source(config, dataset)
    stored: dict[str, teacher_outputs.TeacherOutputs] = {}
    if config.teacher_control == "shuffled" and not store:
        why = (f"the distiller {config.distiller.name!r} trains its teacher" if trains_teacher else
               "teacher_cache is false" if not config.teacher_cache else
               f"the dataset {config.dataset.name!r} gives the teacher other inputs every epoch")
        raise KdbenchError(f"teacher_control = shuffled permutes the frozen teacher's stored outputs, but {why}; "
                           f"use teacher_control = random for this run")
    if source.kind in ("checkpoint", "cache"):
        source = load_weights(teacher, source, tracking_uri(config.tracking.uri))
    if source.kind != "train":
        if store:
            for split, key in outputs_keys(config, dataset, teacher).items():
                if found := teacher_outputs.find(outputs_root(), key):
                    stored[split] = found
    if source.kind == "train" or store:  # the teacher's weights, its checkpoints or its outputs go to the cache
        check_writable(cache_dir(), 2 * 3 * state_bytes(teacher) + 2**20, "cache folder",
                       "set KDBENCH_CACHE_DIR to a writable folder with room")
    # (no global random draws from here on: the student's initialisation below starts from a fresh reseed)
    teacher_fit = teacher_training(config, dataset, teacher, device, echo) if source.kind == "train" else None
    if not trains_teacher and teacher_fit is None:
        teacher.requires_grad_(False)
    return TeacherStage(config, device, amp, dataset, skipped, teacher, source, teacher_fit, trains_teacher, store,
                        stored)


def prepare(config: RunConfig, plugins: Plugins, *, resume: bool = False, progress: bool = True,
            echo=print) -> Prepared:
    stage = prepare_teacher_stage(config, plugins, progress=progress, echo=echo)
    device, amp, dataset, teacher = stage.device, stage.amp, stage.dataset, stage.teacher
    trains_teacher, stored, source = stage.trains_teacher, stage.stored, stage.source
    info = dataset.info
    train, test = dataset.split("train"), dataset.split("test")
    loop.reseed(config.seed)
    student = build_model("student", config, plugins, info).to(device)
    if type(student).reads_both or type(student).adopts_own:
        adopt_networks(config, plugins, stage, student)
    spec = stored["train"].spec if "train" in stored else None
    distiller = build_distiller(config, plugins, student, teacher, train, device, teacher_spec=spec)

    # the shuffled control: sample i gets the stored outputs of sample shuffle[i], one permutation for the run
    shuffle = (torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed))
               if config.teacher_control == "shuffled" else None)

    def teacher_forward(batch):
        if trains_teacher:
            return teacher(batch.teacher_input)
        if stored:
            index = batch.index if shuffle is None else shuffle[batch.index.cpu()]
            return stored["train"].lookup(index, device)
        with torch.no_grad():
            return teacher(batch.teacher_input).detach()

    if config.channels_last:   # 5-D weights and clips in channels_last_3d; other tensors are left as they are
        student.to(memory_format=torch.channels_last_3d)
    network = (torch.compile(student, backend=config.compile_backend) if config.compile
               else student)   # the same parameters; checkpoints save `student`

    def student_input(x):
        return x.contiguous(memory_format=torch.channels_last_3d) if config.channels_last and x.dim() == 5 else x

    def student_forward(batch):
        if type(student).reads_both:   # a late-fusion student reads both modalities
            return network(student_input(batch.student_input), batch.teacher_input)
        return network(student_input(batch.student_input))

    def loss_fn(batch):
        with loop.autocast(device, amp):  # the networks in mixed precision, the distiller in float32
            student_out, teacher_out = student_forward(batch), teacher_forward(batch)
        return distiller(student_out.float(), teacher_out.float(), batch)

    def on_epoch_start(epoch: int) -> None:
        distiller.on_epoch_start(epoch)
        if not trains_teacher:
            teacher.eval()

    modules = [student, distiller] + ([teacher] if trains_teacher else [])
    training = loop.training(
        modules, loss_fn, student_forward, [student], train_split=train, test_split=test,
        class_names=info.class_names, optimizer=config.optimizer, schedule=config.schedule, epochs=config.epochs,
        batch_size=config.batch_size, seed=config.seed, num_workers=config.num_workers, device=device, amp=amp,
        on_epoch_start=on_epoch_start, distributed=True, pin_memory=config.pin_memory,
        persistent_workers=config.persistent_workers)  # shared out over DDP ranks, if any

    path = checkpoint_path(config)
    # weights + up to two optimiser moments each, twice while the atomic save replaces the old file, + slack
    need = 2 * 3 * state_bytes(*modules) + 2**20
    check_writable(path.parent, need, "output folder", "choose another with --set output_dir=DIR, or free space")
    replaced, state = previous_run(path, tracking_uri(config.tracking.uri), resume=resume)
    if state is not None:
        student.load_state_dict(state["student"])
        distiller.load_state_dict(state["distiller"])
        if trains_teacher:
            teacher.load_state_dict(state["teacher"])
        training.load_state(state)
        echo(f"resuming run {state['run_id']} after epoch {state['epoch']} from {path}")
    elif resume:
        echo(f"no checkpoint at {path}; starting from the beginning")
    elif path.exists():
        echo(f"note: overwriting the checkpoint at {path} (pass --resume to continue it instead)")
    return Prepared(config=config, digest=config_hash(config), device=device, amp=amp, dataset=dataset,
                    skipped=stage.skipped, teacher=teacher, student=student, distiller=distiller, source=source,
                    teacher_fit=stage.teacher_fit, trains_teacher=trains_teacher, store=stage.store, stored=stored,
                    training=training, checkpoint=path, replaced_run=replaced)


@dataclass
class PreparedTeacher:
    """A teacher's own training, ready to fit (``kdbench teacher train``): only the teacher's data is read."""

    config: RunConfig
    dataset: Dataset
    teacher: Model
    training: loop.Training


def prepare_teacher(config: RunConfig, plugins: Plugins, *, progress: bool = True, echo=print) -> PreparedTeacher:
    check_store(tracking_uri(config.tracking.uri))
    device = loop.resolve_device(config.device)
    loop.reseed(config.seed)
    dataset = build_dataset(config, plugins)
    reverse = config.direction == "reverse"   # the student's modality teaches: check, train and cache that network
    fields = tuple(SWAP[f] for f in TEACHER_FIELDS) if reverse else TEACHER_FIELDS
    require_usable(dataset, skip_bad=config.skip_bad, fields=fields, progress=progress, echo=echo)
    if reverse:
        dataset = ReversedModalities(dataset)
    teacher = build_model("teacher", config, plugins, dataset.info).to(device)
    return PreparedTeacher(config, dataset, teacher, teacher_training(config, dataset, teacher, device, echo))
