"""Built-in ``ucf51`` plugin: UCF101's 51 classes with audio, for audio -> video distillation.

The student sees RGB frames decoded from UCF101's AVIs; the teacher sees the clip's stored PANNs Cnn14
audio embedding (the CCL release) or its audio track. See docs/datasets/ucf51.md.
"""

from kdbench.hookspecs import hookimpl

from .dataset import UCF51, UCF51Options, UCF51Split
from .synth import SynthOptions

__all__ = ["UCF51", "SynthOptions", "UCF51Options", "UCF51Split"]


@hookimpl
def register_datasets(register):
    register(UCF51)
