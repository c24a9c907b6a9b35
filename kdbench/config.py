"""The run configuration: pydantic models, loading from TOML/YAML plus ``--set`` overrides, a stable hash.

Precedence, lowest first: the defaults below (the SACD paper's training recipe) < the chosen dataset's
``run_defaults`` < the config file < ``--set key=value`` < explicit command-line flags.

A plugin section holds ``name`` plus that plugin's own options, validated against the plugin's
``Options`` model once the name is known, e.g.::

    [distiller]
    name = "kd"
    temperature = 4.0

Every error is one line naming the key and what is allowed.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from .errors import ConfigError, first_line
from .options import path_kind
from .registry import BY_SECTION


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginRef(BaseModel):
    """``name`` of a registered plugin; every other key is one of that plugin's options."""

    model_config = ConfigDict(extra="allow")
    name: str | None = None
    #: the plugin's validated ``Options`` instance, set by :func:`resolve` (validated once per process)
    _validated: Any = PrivateAttr(None)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TeacherRef(PluginRef):
    checkpoint: str | None = Field(None, description="teacher weights: a file path or an MLflow runs:/<id> URI; "
                                                     "when absent the teacher is trained first and cached")


class OptimizerConfig(Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(1e-3, gt=0, description="SACD paper V-B: SGD, lr 0.001")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    weight_decay: float = Field(5e-4, ge=0, description="SACD paper V-B: 0.0005")


class ScheduleConfig(Strict):
    name: Literal["constant", "cosine", "step"] = "constant"
    milestones: list[int] = Field(default_factory=list, description="epochs at which `step` multiplies lr by gamma")
    gamma: float = Field(0.1, gt=0, le=1)


class TeacherTrainingConfig(Strict):
    """How a teacher is trained when no checkpoint is given (AttnSleep's recipe: Adam 1e-3, wd 1e-3)."""

    epochs: int = Field(58, ge=1, description="SACD paper V-D: AttnSleep trained 58 epochs on S3VE")
    batch_size: int = Field(128, ge=1)
    optimizer: OptimizerConfig = OptimizerConfig(name="adam", lr=1e-3, weight_decay=1e-3)
    schedule: ScheduleConfig = ScheduleConfig()


class TrackingConfig(Strict):
    uri: str | None = Field(None, description="MLflow tracking URI; default $MLFLOW_TRACKING_URI, "
                                              "else sqlite:///mlflow.db in the working directory")
    experiment: str = Field("kdbench", min_length=1)


DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


class RunConfig(Strict):
    """One training run: which plugins, and how to train."""

    dataset: PluginRef = PluginRef()
    teacher: TeacherRef = TeacherRef()
    student: PluginRef = PluginRef()
    distiller: PluginRef = PluginRef()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    epochs: int = Field(80, ge=1, description="SACD paper V-D: the R3D-18 IR baseline trained 80 epochs")
    batch_size: int = Field(16, ge=1, description="SACD paper V-B")
    seed: int = Field(0, ge=0)
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    amp: Literal["fp16", "bf16", False] = Field(
        "fp16", description="mixed precision: 'fp16' (float16 autocast with a gradient scaler, CUDA only), 'bf16' "
                            "(bfloat16 autocast, no scaler: CUDA from Ampere on, and CPU), false (float32); true = "
                            "'fp16'")
    channels_last: bool = Field(False, description="the student's 3-D convolutions and its clips in channels_last_3d "
                                                   "memory format (faster 3-D CNNs on recent GPUs with cuDNN)")
    compile: bool = Field(False, description="torch.compile the student (the first epoch pays the compilation)")
    compile_backend: str = Field("inductor", description="torch.compile's backend (torch._dynamo.list_backends())")
    cudnn_benchmark: bool = Field(False, description="let cuDNN time its convolution algorithms and keep the "
                                                     "fastest (CUDA; results then vary in the last bits run to run)")
    pin_memory: bool = Field(True, description="page-locked batches, copied to the GPU without blocking (CUDA)")
    persistent_workers: bool = Field(True, description="keep the loader's worker processes between epochs "
                                                       "(num_workers > 0)")
    num_workers: int = Field(0, ge=0)
    skip_bad: bool = Field(False, description="leave out the items a data check finds bad (listed in the MLflow run) "
                                              "instead of refusing to train")
    teacher_cache: bool = Field(True, description="reuse a frozen teacher's stored outputs (computed once per "
                                                  "teacher weights, data and split)")
    teacher_training: TeacherTrainingConfig = TeacherTrainingConfig()
    teacher_control: Literal["none", "shuffled", "random"] = Field(
        "none", description="a negative control of the teacher's knowledge: 'shuffled' permutes the frozen "
                            "teacher's outputs across the training samples once (same statistics, no per-sample "
                            "knowledge); 'random' uses an untrained teacher of the same architecture")
    direction: Literal["forward", "reverse"] = Field(
        "forward", description="'reverse' swaps the roles of the dataset's two modalities: the student's input "
                               "goes to the teacher and the teacher's to the student (reverse distillation, "
                               "SACD Table IV E-G); the default teacher and student swap too")
    tracking: TrackingConfig = TrackingConfig()
    output_dir: str = Field("kdbench-runs", description="checkpoints go to <output_dir>/<config_hash>/")

    @field_validator("amp", mode="before")
    @classmethod
    def _amp(cls, value):
        return "fp16" if value is True else value   # the setting was a boolean before bf16 existed

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not DEVICE.match(value):
            raise ValueError("must be one of auto, cpu, cuda, cuda:N, mps")
        return value


#: the fields that define an experiment; where it ran (device, paths, tracking) does not change its hash
HASHED = ("dataset", "teacher", "student", "distiller", "optimizer", "schedule", "epochs", "batch_size",
          "seed", "teacher_training", "skip_bad")


def config_hash(config: RunConfig) -> str:
    """A stable 16-hex-digit hash of the resolved experiment (sweeps use it to tell what is done).

    It says what the experiment is, not where it ran: plugin options that are local folders (a dataset's
    root, marked with :func:`kdbench.options.path_field`) are left out, and weight files (options marked as
    files, and ``teacher.checkpoint``) enter by file name only, so every spelling of a path, another
    machine's layout or ``$KDBENCH_DATA`` give the same hash. The data's content is identified by the
    dataset's fingerprint instead (the teacher cache and stored outputs are keyed by it, and runs record it
    as the tag ``kdbench.data_fingerprint``).
    """
    payload = config.model_dump(include=set(HASHED), mode="json")
    for section in PLUGIN_SECTIONS:
        ref: PluginRef = getattr(config, section)
        fields = type(ref._validated).model_fields if ref._validated is not None else {}
        for key, field in fields.items():
            kind = path_kind(field)
            if kind == "folder":
                payload[section].pop(key, None)
            elif kind == "file" and payload[section].get(key):
                payload[section][key] = Path(payload[section][key]).name
    if config.teacher_control != "none":  # only then: the hashes of every run without a control stay as they were
        payload["teacher_control"] = config.teacher_control
    if config.direction != "forward":     # likewise
        payload["direction"] = config.direction
    checkpoint = payload["teacher"].get("checkpoint")
    if checkpoint and not checkpoint.startswith("runs:/"):
        payload["teacher"]["checkpoint"] = Path(checkpoint).name
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- loading


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON config file into a dict (a run's own ``config.json`` artifact reads back);
    refuse anything else with one line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    kinds = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}
    kind = kinds.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"config file {str(path)!r}: use a .toml, .yaml, .yml or .json file")
    text = path.read_text()
    try:
        if kind == "TOML":
            data = tomllib.loads(text)
        elif kind == "JSON":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as error:  # TOMLDecodeError, JSONDecodeError, yaml.YAMLError (yaml imported only here)
        raise ConfigError(f"config file {str(path)!r} is not valid {kind}: {first_line(error)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a table of keys at its top level")
    return data


def parse_set(item: str) -> dict[str, Any]:
    """``a.b=value`` → ``{"a": {"b": value}}``; the value is read as TOML (numbers, booleans, lists)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"--set {item!r}: write it as key=value, e.g. --set optimizer.lr=0.01")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], *overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge dicts, later ones winning; the inputs are left untouched."""
    out = copy.deepcopy(base)
    for override in overrides:
        for key, value in override.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def _fmt_value(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def explain(error: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """Turn a pydantic error into one line: the key, what was given, what is allowed."""
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"])
        key = f"{prefix}{loc}" if loc else prefix.rstrip(".")
        if item["type"] == "extra_forbidden":
            parent = _submodel(model, item["loc"][:-1])
            allowed = sorted(parent.model_fields) if parent else []
            close = difflib.get_close_matches(str(item["loc"][-1]), allowed, n=1)
            hint = f"did you mean {prefix}{'.'.join(map(str, item['loc'][:-1] + (close[0],)))}? " if close else ""
            parts.append(f"unknown key {key!r}: {hint}allowed here: {', '.join(allowed) or 'none'}")
        else:
            msg = item["msg"].removeprefix("Value error, ")
            parts.append(f"{key} = {_fmt_value(item.get('input'))}: {msg}")
    return "invalid config: " + "; ".join(parts)


def _submodel(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model at ``loc`` inside ``model`` (through ``X | None`` and ``list[X]``), if it is one."""
    import typing

    def model_in(annotation):
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
        for arg in typing.get_args(annotation):
            if found := model_in(arg):
                return found
        return None

    for part in loc:
        if isinstance(part, int):  # an index into a list of models
            continue
        field = model.model_fields.get(str(part))
        found = model_in(getattr(field, "annotation", None))
        if found is None:
            return None
        model = found
    return model


def validate(model: type[BaseModel], data: Any, prefix: str = "") -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(explain(error, model, prefix)) from None


PLUGIN_SECTIONS = ("dataset", "teacher", "student", "distiller")
#: what each command needs chosen: a student run all four plugins, a teacher run the dataset and teacher
RUN_SECTIONS = PLUGIN_SECTIONS
TEACHER_SECTIONS = ("dataset", "teacher")


def resolve(layers: list[dict[str, Any]], plugins, sections: tuple[str, ...] = RUN_SECTIONS) -> RunConfig:
    """Merge the user's layers over the dataset's defaults and validate everything, plugin options included.

    ``layers`` are lowest-first (config file, ``--set`` items, flags). ``sections`` are the plugin sections
    this command needs chosen. The result holds every plugin option explicitly, so the stored config (and
    its hash) says exactly what ran; each section keeps its validated ``Options`` instance for building.
    """
    user = merge({}, *layers)
    dataset_name = (user.get("dataset") or {}).get("name") if isinstance(user.get("dataset"), dict) else None
    if not dataset_name:
        raise ConfigError("no dataset chosen: pass --dataset NAME (`kdbench list datasets`)")
    dataset = plugins["datasets"].get(dataset_name).cls
    teacher, student = dataset.default_teacher, dataset.default_student
    if merge(dataset.run_defaults, user).get("direction") == "reverse":
        modalities = tuple(dataset.modalities)
        if len(modalities) != 2 or modalities[0] == modalities[1]:
            which = f"one modality ({modalities[0]})" if modalities else "no declared modalities"
            raise ConfigError(f"direction = reverse swaps a dataset's two modalities, but dataset {dataset_name!r} has "
                              f"{which}; use a dataset with two (e.g. synthetic, s3ve) or direction = forward")
        teacher, student = student, teacher
    defaults = merge(dataset.run_defaults, {"teacher": {"name": teacher}, "student": {"name": student}})
    config = validate(RunConfig, merge(defaults, user))
    resolved = config.model_dump()
    validated = {}
    for section in sections:
        ref: PluginRef = getattr(config, section)
        if not ref.name:
            raise ConfigError(f"no {section} chosen: pass --{section} NAME (`kdbench list {BY_SECTION[section].name}`)")
        options = absolute_folders(plugins[BY_SECTION[section].name].get(ref.name).validate(ref.options))
        validated[section] = options
        resolved[section] = {**{k: v for k, v in resolved[section].items() if k in type(ref).model_fields},
                             **options.model_dump(mode="json")}
    final = RunConfig.model_validate(resolved)
    for section, options in validated.items():
        getattr(final, section)._validated = options
    return final


def absolute_folders(options: BaseModel) -> BaseModel:
    """The options with every folder path made absolute (``~`` expanded, trailing slash dropped), so the stored
    config says where the data was, whatever the spelling, and a worker in another folder finds it."""
    folders = {key: os.path.abspath(os.path.expanduser(value)) for key, field in type(options).model_fields.items()
               if path_kind(field) == "folder" and isinstance(value := getattr(options, key), str) and value}
    return options.model_copy(update=folders) if folders else options


def plugin_options(config: RunConfig, section: str, plugins) -> BaseModel:
    """The validated ``Options`` instance of the plugin a resolved config names in ``section`` (validated here
    only for a config that did not come through :func:`resolve` in this process, e.g. one read back from JSON)."""
    ref: PluginRef = getattr(config, section)
    if ref._validated is None:
        ref._validated = absolute_folders(plugins[BY_SECTION[section].name].get(ref.name).validate(ref.options))
    return ref._validated
