"""Built-in ``sleep`` plugin: the EEG teachers of the SACD paper (AttnSleep, DeepSleepNet, single-channel SEN).

Each reads one 30-s single-channel EEG epoch and exposes a 512-d embedding; see docs/teachers.md.
braindecode is imported only when a braindecode-backed teacher is built, so ``kdbench list`` stays fast.
"""

from kdbench.hookspecs import hookimpl

from .attnsleep_deepsleepnet import AttnSleepTeacher, DeepSleepNetTeacher
from .mc2sleepnet import MC2SleepNetTeacher
from .sen import GradientReversal, SENTeacher

__all__ = ["AttnSleepTeacher", "DeepSleepNetTeacher", "GradientReversal", "MC2SleepNetTeacher", "SENTeacher"]


@hookimpl
def register_teachers(register):
    register(AttnSleepTeacher)
    register(DeepSleepNetTeacher)
    register(SENTeacher)
    register(MC2SleepNetTeacher)


@hookimpl
def register_students(register):
    """Also students, for reversed runs (``direction = "reverse"``: the video model teaches the EEG one). SEN and
    MC2SleepNet are not: their own training losses (domain-adversarial, contrastive) are not a student's."""
    register(AttnSleepTeacher)
    register(DeepSleepNetTeacher)
