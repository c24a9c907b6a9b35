"""The shapes every plugin shares: what a dataset yields, what a model returns, what a distiller sees.

Cross-modal pairs are the normal case: a sample carries the student's input (e.g. a video clip) and the
teacher's input (e.g. an EEG epoch, an audio waveform or a stored embedding) as separate fields, and the
two networks never see each other's input.

Each plugin class declares ``name`` (the registry key), an optional docstring whose first line is its
one-line description, and an ``Options`` pydantic model holding its hyperparameters (defaults = the
paper's values, or where the paper gives none, its best-known public implementation's, named in the docs),
a subclass of :class:`kdbench.options.PluginOptions`. The registry validates the user's options against
``Options`` once and passes the instance to the constructor (``Entry.build``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from .data.clips import FIELDS
from .data.report import DataReport
from .options import NoOptions

__all__ = ["FIELDS", "UNLABELLED", "Batch", "Dataset", "DatasetInfo", "DistillContext", "Distiller", "FeatureSpec", "FileDataset",
           "Model", "ModelOutput", "collate"]


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DatasetInfo:
    """What models and distillers may know about a dataset before seeing a sample."""

    class_names: tuple[str, ...]
    teacher_input_shape: tuple[int, ...]  # one sample, without the batch axis
    student_input_shape: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


#: the label of a training sample nobody scored (PyTorch's default ``ignore_index``). Such a sample still has
#: both inputs, so the teacher's outputs teach on it; hard-label terms skip it (:func:`kdbench.losses.hard_ce`).
#: Test splits are fully labelled.
UNLABELLED = -100


@dataclass
class Batch:
    """A collated mini-batch. ``index`` is each sample's position in its split (memory banks key on it);
    ``label`` is the class index, or :data:`UNLABELLED` for an unscored training sample; ``group`` is each
    sample's subject (recording) id where the dataset knows it, else -1 (domain-adversarial teachers learn
    from it)."""

    student_input: Tensor
    teacher_input: Tensor
    label: Tensor
    index: Tensor
    group: Tensor | None = None

    def __post_init__(self) -> None:
        if self.group is None:
            self.group = torch.full_like(self.label, -1)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in
                       (self.student_input, self.teacher_input, self.label, self.index, self.group)))

    def __len__(self) -> int:
        return int(self.label.shape[0])


def collate(samples: list[dict[str, Any]]) -> Batch:
    """Collate the dict samples a dataset split yields (keys: student, teacher, label, index; optional group)."""
    stack = torch.utils.data.default_collate(samples)
    group = stack["group"].long() if "group" in stack else None
    return Batch(stack["student"], stack["teacher"], stack["label"].long(), stack["index"].long(), group)


class Dataset:
    """Base of dataset plugins held in memory (or generated); :class:`FileDataset` for data on disk.

    ``__init__(options, seed)`` indexes the data (cheaply; decoding happens per item). ``split(name,
    fields)`` returns a ``torch.utils.data.Dataset`` whose items are dicts with keys ``student`` and
    ``teacher`` (tensors; a field not in ``fields`` may be an empty tensor, so a teacher-only pass never
    decodes the student's input), ``label`` (int), ``index`` (int, the item's position in the split) and
    optionally ``group`` (int, the subject/recording id).
    """

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions
    default_teacher: ClassVar[str]
    default_student: ClassVar[str]
    #: run-level settings this dataset is meant to be trained with (e.g. epochs, optimizer); a config
    #: file, ``--set`` and command-line flags all override them.
    run_defaults: ClassVar[dict[str, Any]] = {}
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    #: the teacher's input for a sample is always the same (no random augmentation), so a frozen
    #: teacher's outputs may be computed once and cached; set False for augmented teacher inputs.
    fixed_teacher_inputs: ClassVar[bool] = True
    #: the same for the student's input: if True, a reversed run (``direction = "reverse"``, the student's
    #: modality teaching) may store its teacher's outputs; False (the safe default) runs that teacher every step.
    fixed_student_inputs: ClassVar[bool] = False
    #: the modality of the teacher's and of the student's input, e.g. ("eeg", "video"); a reversed run needs
    #: two different ones (an EEG-to-EEG dataset has nothing to reverse)
    modalities: ClassVar[tuple[str, str] | tuple[()]] = ()
    #: the classes in label order, when they are known without reading the data (leaderboards name their
    #: per-class columns by them before any run has finished); empty when the data decides them
    class_names: ClassVar[tuple[str, ...]] = ()

    info: DatasetInfo

    def __init__(self, options: BaseModel, seed: int) -> None:
        self.options = options
        self.seed = seed

    def split(self, name: str, fields: tuple[str, ...] = FIELDS) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A stable hash of the data's content and sampling parameters (cache keys use it)."""
        raise NotImplementedError


class FileDataset(Dataset):
    """Base of datasets whose files live on disk (``kdbench data synth | check | prepare`` work on these).

    Its ``Options`` has a ``root`` option (the folder; default ``$KDBENCH_DATA/<name>``). Indexing finds
    problems instead of raising; ``check`` reports them, and the engine refuses to train on a dataset with
    problems unless the user asks to ``skip`` the items they name (``--skip-bad``). ``fields`` says which
    inputs the caller will read: a teacher trained on stored embeddings needs no videos, so a check for
    ``("teacher",)`` reports only what the teacher's files lack.
    """

    #: options of ``kdbench data synth NAME`` (None: no generator); each field is also a flag of that
    #: command (``field_name`` → ``--field-name VALUE``; a boolean also ``--field-name/--no-field-name``).
    SynthOptions: ClassVar[type[BaseModel] | None] = None

    @classmethod
    def synthesize(cls, root: Path, options: BaseModel, seed: int, echo: Callable[[str], None]) -> None:
        """Write a small dataset in this dataset's real file formats under ``root``."""
        raise NotImplementedError

    def check(self, fields: tuple[str, ...] = FIELDS, progress: bool = False) -> DataReport:
        """Validate everything the given fields need (decoding what must be decoded): counts and problems."""
        raise NotImplementedError

    def skip(self, keys: frozenset[str]) -> None:
        """Leave out the items named by ``keys`` (from ``check``'s problems); the fingerprint must change."""
        raise NotImplementedError


# --------------------------------------------------------------------------- models


@dataclass
class ModelOutput:
    """What every teacher and student returns.

    ``embedding`` is the final feature the classifier reads; ``stages`` are per-stage features,
    globally pooled to ``(B, C_k)``, shallow to deep (feature-based distillers compare these).
    """

    logits: Tensor
    embedding: Tensor
    stages: tuple[Tensor, ...] = field(default_factory=tuple)

    def detach(self) -> ModelOutput:
        return ModelOutput(self.logits.detach(), self.embedding.detach(),
                           tuple(s.detach() for s in self.stages))

    def float(self) -> ModelOutput:
        return ModelOutput(self.logits.float(), self.embedding.float(), tuple(s.float() for s in self.stages))


@dataclass(frozen=True)
class FeatureSpec:
    """Widths of a model's outputs, measured by the engine with one forward pass."""

    num_classes: int
    embedding: int
    stages: tuple[int, ...]

    @classmethod
    def of(cls, out: ModelOutput) -> FeatureSpec:
        return cls(out.logits.shape[-1], out.embedding.shape[-1], tuple(s.shape[-1] for s in out.stages))


class Model(nn.Module):
    """Base of teacher and student plugins: ``__init__(options, info)``; ``forward(x) -> ModelOutput``."""

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, options: BaseModel, info: DatasetInfo) -> None:
        super().__init__()
        self.options = options

    #: True for a student that reads both modalities, ``forward(student_input, teacher_input)`` (late fusion,
    #: SACD Table IV A-D). The engine builds it around two trained networks, handed over by :meth:`adopt`.
    reads_both: ClassVar[bool] = False
    #: ``reads_both`` models: the registered name of the student-modality network to adopt ("" = the dataset's
    #: default student); its trained weights are those a reversed run of the dataset caches for its teacher
    partner: str = ""

    #: True for a student that is a trained network of its own modality, adopted (``pretrained``: SACD Table IV E,
    #: the EEG student's encoder frozen); the network's name is ``partner``, default the dataset's network for it
    adopts_own: ClassVar[bool] = False

    def adopt_own(self, network: Model) -> None:
        """``adopts_own`` models only, called once before training: take the trained network of the student's
        modality (cached by runs of the dataset in the other direction, as their teacher)."""
        raise NotImplementedError(f"{type(self).__name__} adopts nothing")

    def adopt(self, teacher: Model, partner: Model) -> None:
        """``reads_both`` models only, called once before training: take ``teacher`` (the run's trained teacher,
        reading the teacher's modality) and ``partner`` (a trained network of the student's modality)."""
        raise NotImplementedError(f"{type(self).__name__} reads one modality and adopts nothing")

    def training_losses(self, output: ModelOutput, batch: Batch) -> dict[str, Tensor]:
        """Weighted terms this network adds to its own cross-entropy when it is trained as a teacher (e.g. an
        alignment or a domain-adversarial loss); ``output`` is this batch's forward. Default: none."""
        return {}


# --------------------------------------------------------------------------- distillers


@dataclass(frozen=True)
class DistillContext:
    """What a distiller may know when it is built: both networks' widths and the training set's size."""

    student: FeatureSpec
    teacher: FeatureSpec
    num_classes: int
    num_train: int
    epochs: int


class Distiller(nn.Module):
    """Base of distiller plugins (one method each).

    ``forward(student, teacher, batch)`` returns a dict of named, already weighted loss terms, the
    student's cross-entropy included; the engine minimises their sum. Learnable parts the method needs
    (regressors, heads, memory banks as buffers) are submodules/buffers of the distiller: the engine
    optimises and checkpoints them with the student. The teacher is frozen and in eval mode, and its
    outputs arrive detached, unless the class sets ``trains_teacher = True``. Under mixed precision the
    networks run in float16 but the distiller does not: it receives float32 outputs and runs outside
    autocast, so kernels, distances and exponentials keep their precision.
    """

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions
    trains_teacher: ClassVar[bool] = False

    def __init__(self, options: BaseModel, ctx: DistillContext) -> None:
        super().__init__()
        self.options = options
        self.ctx = ctx

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each training epoch (0-based), for schedules over training."""

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError
