"""Turn a resolved config into live objects: the dataset, the two networks, the distiller (through the registry)."""

from __future__ import annotations

import torch

from ..config import RunConfig, plugin_options
from ..contracts import (
    Dataset,
    DatasetInfo,
    DistillContext,
    Distiller,
    FeatureSpec,
    Model,
    collate,
)
from ..errors import KdbenchError, first_line
from ..plugins import Plugins
from ..registry import BY_SECTION


def build(section: str, config: RunConfig, plugins: Plugins, *args):
    """The plugin a config names in ``section``, built with its validated options and ``args``."""
    entry = plugins[BY_SECTION[section].name].get(getattr(config, section).name)
    return entry.build(plugin_options(config, section, plugins), *args)


def build_dataset(config: RunConfig, plugins: Plugins) -> Dataset:
    return build("dataset", config, plugins, config.seed)


def build_model(section: str, config: RunConfig, plugins: Plugins, info: DatasetInfo) -> Model:
    """The teacher or the student, built on the shape of the input it will read, whichever field of ``info`` its
    class reads it from: a video model reads ``student_input_shape``, an EEG model ``teacher_input_shape``, and
    either may sit in the other role (a reversed run, ``direction = "reverse"``)."""
    entry = plugins[BY_SECTION[section].name].get(getattr(config, section).name)
    if getattr(entry.cls, "reads_both", False):   # a late-fusion student reads both inputs: it gets both shapes
        return build(section, config, plugins, info)
    shape = info.teacher_input_shape if section == "teacher" else info.student_input_shape
    own = DatasetInfo(class_names=info.class_names, teacher_input_shape=shape, student_input_shape=shape)
    return build(section, config, plugins, own)


def feature_spec(model: Model, sample_input: torch.Tensor | tuple[torch.Tensor, ...], what: str) -> FeatureSpec:
    """Measure a model's output widths with one forward pass on one sample (eval mode, no grad); a model that
    reads both modalities gets a tuple of the two inputs."""
    inputs = sample_input if isinstance(sample_input, tuple) else (sample_input,)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(*inputs)
    except RuntimeError as error:
        shapes = " and ".join(str(tuple(x.shape[1:])) for x in inputs)
        raise KdbenchError(f"{what} cannot read the dataset's input of shape {shapes}: {first_line(error)}") from None
    finally:
        model.train(was_training)
    return FeatureSpec.of(out)


def build_distiller(config: RunConfig, plugins: Plugins, student: Model, teacher: Model, train_split,
                    device: torch.device, teacher_spec: FeatureSpec | None = None) -> Distiller:
    """``teacher_spec``, when known (from stored teacher outputs), spares the teacher a forward pass."""
    probe = collate([train_split[0]]).to(device)
    student_spec = feature_spec(student, (probe.student_input, probe.teacher_input) if student.reads_both
                                else probe.student_input, f"student {config.student.name!r}")
    teacher_spec = teacher_spec or feature_spec(teacher, probe.teacher_input, f"teacher {config.teacher.name!r}")
    if student_spec.num_classes != teacher_spec.num_classes:
        raise KdbenchError(f"student {config.student.name!r} predicts {student_spec.num_classes} classes but teacher "
                           f"{config.teacher.name!r} predicts {teacher_spec.num_classes}")
    ctx = DistillContext(student_spec, teacher_spec, student_spec.num_classes, len(train_split), config.epochs)
    distiller: Distiller = build("distiller", config, plugins, ctx)
    return distiller.to(device)
