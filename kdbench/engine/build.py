"""Turn a resolved config into live objects: the dataset, the two networks, the distiller."""

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
from ..errors import KdbenchError
from ..plugins import Plugins

MODEL_KINDS = {"teacher": "teachers", "student": "students"}


def build_dataset(config: RunConfig, plugins: Plugins) -> Dataset:
    entry = plugins["datasets"].get(config.dataset.name)
    return entry.cls(plugin_options(config, "dataset", plugins), config.seed)


def teacher_view(split):
    """The split as the teacher alone needs it: file-backed splits then skip decoding the student's input."""
    only = getattr(split, "only", None)
    return only("teacher") if callable(only) else split


def build_model(section: str, config: RunConfig, plugins: Plugins, info: DatasetInfo) -> Model:
    entry = plugins[MODEL_KINDS[section]].get(getattr(config, section).name)
    return entry.cls(plugin_options(config, section, plugins), info)


def feature_spec(model: Model, sample_input: torch.Tensor, what: str) -> FeatureSpec:
    """Measure a model's output widths with one forward pass on one sample (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(sample_input)
    except RuntimeError as error:
        raise KdbenchError(f"{what} cannot read the dataset's input of shape {tuple(sample_input.shape[1:])}: "
                           f"{str(error).splitlines()[0]}") from None
    finally:
        model.train(was_training)
    return FeatureSpec.of(out)


def build_distiller(config: RunConfig, plugins: Plugins, student: Model, teacher: Model, train_split,
                    device: torch.device, teacher_spec: FeatureSpec | None = None) -> Distiller:
    """``teacher_spec``, when known (from stored teacher outputs), spares the teacher a forward pass."""
    probe = collate([train_split[0]]).to(device)
    ctx = DistillContext(
        student=feature_spec(student, probe.student_input, f"student {config.student.name!r}"),
        teacher=teacher_spec or feature_spec(teacher, probe.teacher_input, f"teacher {config.teacher.name!r}"),
        num_classes=0, num_train=len(train_split), epochs=config.epochs)
    if ctx.student.num_classes != ctx.teacher.num_classes:
        raise KdbenchError(f"student {config.student.name!r} predicts {ctx.student.num_classes} classes but teacher "
                           f"{config.teacher.name!r} predicts {ctx.teacher.num_classes}")
    ctx = DistillContext(ctx.student, ctx.teacher, ctx.student.num_classes, ctx.num_train, ctx.epochs)
    entry = plugins["distillers"].get(config.distiller.name)
    return entry.cls(plugin_options(config, "distiller", plugins), ctx).to(device)
