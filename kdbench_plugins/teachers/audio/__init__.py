"""Built-in ``audio`` plugin: the PANNs audio teachers ``cnn14`` and ``cnn14-emb512``.

Both read a raw 32 kHz mono waveform and can start from the released AudioSet checkpoints (Kong et
al., "PANNs", IEEE/ACM TASLP 2020). See docs/audio.md. Importing this module does not import
torchlibrosa (librosa + numba take seconds); a teacher imports it when it is built.
"""

from kdbench.hookspecs import hookimpl

from .cnn14 import Cnn14Emb512Teacher, Cnn14Teacher
from .network import Cnn14Net

TEACHERS = (Cnn14Teacher, Cnn14Emb512Teacher)

__all__ = ["TEACHERS", "Cnn14Emb512Teacher", "Cnn14Net", "Cnn14Teacher"]


@hookimpl
def register_teachers(register):
    for cls in TEACHERS:
        register(cls)
