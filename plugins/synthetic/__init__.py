"""Built-in ``synthetic`` plugin: the default dataset and its two tiny models.

It is registered through the same hooks as any third-party plugin, so the default run exercises the
real plugin path rather than a special case in the engine.
"""

from kdbench.hookspecs import hookimpl

from .data import SyntheticSleep
from .models import Tiny3DCNN, TinyEEGNet

__all__ = ["SyntheticSleep", "Tiny3DCNN", "TinyEEGNet"]


@hookimpl
def register_datasets(register):
    register(SyntheticSleep)


@hookimpl
def register_teachers(register):
    register(TinyEEGNet)


@hookimpl
def register_students(register):
    register(Tiny3DCNN)
    register(TinyEEGNet)  # also a student, for EEG-to-EEG distillation on EEG-only data (sleepedf)
