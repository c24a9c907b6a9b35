"""A trained student, rebuilt for ``kdbench predict``: its weights, its network and its input sampling.

A finished run stores ``student/student.pt`` (the student's state dict and the run's resolved config); a
training checkpoint (``<output_dir>/<config_hash>/checkpoint.pt``) holds the same two. The config says which
network to build and how the dataset cut its clips (frames, size), so a prediction reads video exactly as
the student was trained on it. Everything here is refused before any video is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdbench.config import RunConfig, plugin_options
from kdbench.contracts import DatasetInfo, Model
from kdbench.engine.build import build
from kdbench.engine.checkpoint import load, load_state_strict
from kdbench.errors import ConfigError, KdbenchError, first_line

ARTIFACT = "student/student.pt"


@dataclass
class TrainedStudent:
    origin: str                  # "run <id>" or "checkpoint <path>", for messages
    config: RunConfig
    dataset: type                # the dataset class the student was trained on
    options: Any                 # that dataset's validated options (the clip sampling)
    info: DatasetInfo
    model: Model


def fetch_run(run_id: str, uri_flag: str | None) -> tuple[dict, str]:
    """The student file of a finished student run, read from its tracking store."""
    from kdbench.runs import open_client
    from kdbench.tracking import download_artifact, import_mlflow

    uri, client = open_client(uri_flag)
    try:
        run = client.get_run(run_id)
    except import_mlflow().exceptions.MlflowException:
        raise KdbenchError(f"no run {run_id!r} in {uri}: `kdbench runs` lists the run ids (or pass the "
                           f"--tracking-uri the run used)") from None
    role = run.data.tags.get("kdbench.role", "")
    if role != "student":
        raise KdbenchError(f"run {run_id} is {'a ' + role if role else 'not a kdbench'} run, not a student run: "
                           f"pass the id of a `kdbench run` (`kdbench runs --tag role=student`)")
    if run.info.status != "FINISHED":
        raise KdbenchError(f"run {run_id} is {run.info.status}: only a finished run stores its student "
                           f"({ARTIFACT}); pass --checkpoint with its checkpoint.pt to use the last epoch")
    path = download_artifact(uri, run_id, ARTIFACT)
    return load(path, f"student file {ARTIFACT} of run {run_id}", "the run's artifacts are damaged"), f"run {run_id}"


def read_checkpoint(path: str) -> tuple[dict, str]:
    """A ``student.pt`` or a training ``checkpoint.pt`` given by path."""
    return load(Path(path), f"--checkpoint {path!r}", "pass a student.pt or checkpoint.pt that kdbench wrote"), \
        f"checkpoint {path}"


def rebuild(payload: dict, origin: str, plugins, device: torch.device) -> TrainedStudent:
    """Check that the file holds a student of infrared sleep video, then build it and load its weights."""
    if not isinstance(payload, dict):
        raise KdbenchError(f"{origin} is not a kdbench student file (a {type(payload).__name__})")
    if "student" not in payload and "state_dict" not in payload and "teacher" in payload:
        raise KdbenchError(f"{origin} is a teacher's weights ({payload.get('teacher')!r}, as the teacher cache "
                           f"keeps them), not a student's: pass a student run's student.pt or checkpoint.pt")
    state = payload.get("state_dict", payload.get("student"))
    if not isinstance(state, dict) or "config" not in payload:
        raise KdbenchError(f"{origin} holds no student weights with their run config (written by an older kdbench, "
                           f"or not by kdbench): pass --run RUN_ID of the run instead")
    try:
        config = RunConfig.model_validate(payload["config"])
    except Exception as error:  # noqa: BLE001 - a config another version wrote: one line
        raise KdbenchError(f"{origin}: its run config is not one this kdbench reads ({first_line(error)})") from None
    dataset = plugins["datasets"].get(config.dataset.name).cls
    student = plugins["students"].get(config.student.name).cls
    what = f"{origin} ({config.student.name} trained on {config.dataset.name})"
    if not hasattr(dataset, "night_clips"):
        raise KdbenchError(f"{what}: dataset {config.dataset.name!r} has no nights of video to stage; kdbench "
                           f"predict needs a student trained on infrared sleep video (dataset s3ve)")
    reads = dict(zip(("teacher", "student"), dataset.modalities)).get(
        "teacher" if config.direction == "reverse" else "student")
    if getattr(student, "reads_both", False):
        raise KdbenchError(f"{what}: the student reads EEG and video together (late fusion); a night of video "
                           f"alone cannot feed it: pass a run whose student reads video only")
    if reads != "video":
        raise KdbenchError(f"{what}: the student was trained on {reads or 'another modality'} "
                           f"(direction = {config.direction}), not on infrared video: pass a forward run's student")
    try:
        options = plugin_options(config, "dataset", plugins)
    except ConfigError as error:
        raise KdbenchError(f"{origin}: its dataset options are not valid here ({first_line(error)})") from None
    full = dataset.describe(options)
    info = DatasetInfo(full.class_names, full.student_input_shape, full.student_input_shape)
    model = build("student", config, plugins, info)
    load_state_strict(model, state, f"{origin}: student {config.student.name!r}")
    return TrainedStudent(origin, config, dataset, options, full, model.to(device).eval())
