"""``r3d18``, ``r2plus1d18`` and ``mc3_18``: torchvision's video ResNets, built without weights.

The layers are torchvision's own modules (``torchvision.models.video.r3d_18`` / ``r2plus1d_18`` with
``weights=None``, so nothing is ever downloaded), adopted as attributes of the student: its state dict
has torchvision's key names (``stem.0.weight``, ``layer1.0.conv1.0.weight``, ...) and a Kinetics-400
state dict released by torchvision loads into it as is. torchvision is imported inside ``_build``, not
at module import, to keep ``kdbench list`` fast.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from kdbench.options import path_field

from .common import KINETICS_TORCHVISION, VideoResNetStudent, VideoStudentOptions


class TorchvisionOptions(VideoStudentOptions):
    pretrained: str | None = path_field(
        None, what="file", description="Local path of torchvision's Kinetics-400 state dict (r3d_18-b3b3357e.pth / "
                          "r2plus1d_18-91a641e6.pth / mc3_18-a90a0ba3.pth); its fc is dropped. None = random init. Never downloaded.")


class _TorchvisionStudent(VideoResNetStudent):
    Options = TorchvisionOptions
    mean_std = KINETICS_TORCHVISION
    builder: ClassVar[str]

    def _build(self, num_classes: int) -> None:
        from torchvision.models import video

        net = getattr(video, self.builder)(weights=None, num_classes=num_classes)
        self.stem = net.stem
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.fc = net.fc

    def _stem(self, x: Tensor) -> Tensor:
        return self.stem(x)


class R3D18(_TorchvisionStudent):
    """R3D-18 video ResNet (torchvision r3d_18): 512-d embedding, optional local Kinetics-400 weights."""

    name = "r3d18"
    builder = "r3d_18"


class MC3_18(_TorchvisionStudent):
    """MC3-18 (torchvision mc3_18: 3-D convolutions in the stem and layer1, 2-D ones after): 512-d embedding."""

    name = "mc3_18"
    builder = "mc3_18"


class R2Plus1D18(_TorchvisionStudent):
    """R(2+1)D-18 video ResNet (torchvision r2plus1d_18): 512-d embedding, optional local Kinetics-400 weights."""

    name = "r2plus1d18"
    builder = "r2plus1d_18"
