"""Built-in ``video`` plugin: the ResNet-18 video students of the SACD paper's setting and torchvision's zoo.

``r3d18`` and ``r2plus1d18`` are torchvision's architectures (they take torchvision's Kinetics-400
weights); ``r3d18-hara`` and ``r2plus1d18-hara`` are Kensho Hara's 3D-ResNets-PyTorch architectures,
which the paper's Kinetics-700 (+ Moments in Time) weights need. All four return a 512-d embedding and
four pooled stages (64/128/256/512). ``mc3_18``, ``s3d``, ``swin3d_*`` and ``mvit_*`` are torchvision's
other video classifiers (``zoo``). See docs/students.md. Importing this module does not import
torchvision; the students import it when built.
"""

from kdbench.hookspecs import hookimpl

from .hara import HaraR2Plus1D18, HaraR3D18
from .torchvision_students import MC3_18, R3D18, R2Plus1D18
from .zoo import ZOO

STUDENTS = (R3D18, R2Plus1D18, HaraR3D18, HaraR2Plus1D18, MC3_18, *ZOO)

__all__ = ["STUDENTS", "HaraR2Plus1D18", "HaraR3D18", "MC3_18", "R2Plus1D18", "R3D18"]


@hookimpl
def register_students(register):
    for cls in STUDENTS:
        register(cls)


@hookimpl
def register_teachers(register):
    """Also teachers: the video model teaches the EEG one in a reversed run (``direction = "reverse"``)."""
    for cls in STUDENTS:
        register(cls)
