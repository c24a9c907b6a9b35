"""torchvision's other video classifiers as students: ``s3d``, ``swin3d_t/s/b``, ``mvit_v1_b``, ``mvit_v2_s``.

Each is torchvision's network built with ``weights=None`` (nothing is downloaded) and run by its own
``forward``; the student only reads off it what the distillers need, with forward hooks that live for one
call (a hook left on the network would survive ``copy.deepcopy`` pointing at the original): the embedding
is the classifier's input, and the four stages are the outputs of the network's four resolution stages,
each averaged over time and space. ``mc3_18`` is a video ResNet like ``r3d18`` and lives beside it.

Two of them cannot read every clip, and say so before anything runs (:meth:`ZooStudent.check_size`):
MViT's attention tables are sized for 16 × 224 × 224 clips; S3D's convolutions and pools need T ≥ 5 and
H, W ≥ 17. S3D's last pool is torchvision's fixed (2, 7, 7) window, which needs clips of at least
13 × 209 × 209; it is replaced by a global average, the same thing wherever the last map is 2 × 7 × 7 (as at
the training size 16 × 224 × 224) and what makes smaller clips usable (docs/students.md).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from kdbench.contracts import DatasetInfo, Model, ModelOutput
from kdbench.errors import KdbenchError
from kdbench.options import PluginOptions, path_field

from .common import KINETICS_TORCHVISION, as_rgb, clip_channels
from .weights import load_pretrained

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))   # torchvision's swin3d weights' transforms
MVIT = ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225))           # torchvision's mvit weights' transforms


class ZooOptions(PluginOptions):
    pretrained: str | None = path_field(
        None, what="file", description="Local path of torchvision's Kinetics-400 state dict for this architecture "
                          "(e.g. s3d-d76dad2f.pth, swin3d_t-7615ae03.pth); its classifier is dropped. None = random "
                          "init. Never downloaded.")
    normalize: bool = Field(True, description="Subtract the mean and divide by the std of the architecture's "
                                              "torchvision weights (input pixels in [0, 1]).")


class ZooStudent(Model):
    """Base of the torchvision zoo students (not registered itself)."""

    Options = ZooOptions
    builder: ClassVar[str]            # torchvision.models.video.<builder>
    classifier: ClassVar[str]         # the net's attribute whose input is the embedding
    mean_std: ClassVar[tuple[tuple[float, ...], tuple[float, ...]]]
    fixed_size: ClassVar[tuple[int, int, int] | None] = None   # (T, H, W) it must be
    min_size: ClassVar[tuple[int, int, int]] = (1, 1, 1)        # (T, H, W) it needs at least

    def __init__(self, options: ZooOptions, info: DatasetInfo) -> None:
        super().__init__(options, info)
        clip_channels(self.name, info.student_input_shape)
        self.check_size(tuple(info.student_input_shape[1:]))
        mean, std = self.mean_std
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1, 1), persistent=False)
        from torchvision.models import video

        self.net = getattr(video, self.builder)(weights=None, num_classes=info.num_classes)
        self.adapt()
        if options.pretrained is not None:
            load_pretrained(self.net, options.pretrained, f"student {self.name!r}", classifier=f"{self.classifier}.")

    @classmethod
    def check_size(cls, size: tuple[int, ...]) -> None:
        """Refuse, in one line naming the sizes it reads, a clip size (T, H, W) this network cannot read."""
        shown = " × ".join(map(str, size))
        if cls.fixed_size is not None and size != cls.fixed_size:
            need = " × ".join(map(str, cls.fixed_size))
            raise KdbenchError(f"student {cls.name!r} reads clips of exactly {need} (T × H × W; its attention tables "
                               f"are sized for it), the dataset gives {shown}: set the dataset's frames and size to "
                               f"those, or choose another student")
        if any(s < m for s, m in zip(size, cls.min_size)):
            t, h, w = cls.min_size
            raise KdbenchError(f"student {cls.name!r} needs clips of at least {t} frames and {h} × {w} pixels, the "
                               f"dataset gives {shown} (T × H × W): enlarge the dataset's clips, or choose another "
                               f"student")

    def adapt(self) -> None:
        """Change what must change in torchvision's network (default: nothing)."""

    def stage_modules(self) -> list[nn.Module]:
        """The modules whose outputs are the stages (or the candidates :meth:`pick_stages` chooses from)."""
        raise NotImplementedError

    def pool(self, output) -> Tensor:
        """A stage module's output, averaged over time and space: (B, C)."""
        raise NotImplementedError

    def pick_stages(self, outputs: list) -> list:
        return outputs

    def prepare(self, x: Tensor) -> Tensor:
        """Gray clips repeated to RGB, then normalised as the architecture's torchvision weights expect."""
        x = as_rgb(self.name, x)
        return (x - self.mean) / self.std if self.options.normalize else x

    def forward(self, x: Tensor) -> ModelOutput:
        outputs: list = []
        embedding: list[Tensor] = []
        handles = [m.register_forward_hook(lambda _m, _a, out: outputs.append(out)) for m in self.stage_modules()]
        head = getattr(self.net, self.classifier)
        handles.append(head.register_forward_pre_hook(lambda _m, args: embedding.append(args[0])))
        try:
            logits = self.net(self.prepare(x))
        finally:
            for handle in handles:
                handle.remove()
        stages = tuple(self.pool(out) for out in self.pick_stages(outputs))
        return ModelOutput(logits, embedding[0].flatten(1), stages)


class S3D(ZooStudent):
    """S3D (torchvision s3d, 7.9 M): 1024-d embedding; stages 192/480/832/1024; clips ≥ 5 × 17 × 17."""

    name = "s3d"
    builder = "s3d"
    classifier = "classifier"
    mean_std = KINETICS_TORCHVISION
    min_size = (5, 17, 17)
    STAGES = (3, 6, 12, 15)   # the feature blocks just before each max-pool, and the last

    def adapt(self) -> None:
        self.net.avgpool = nn.AdaptiveAvgPool3d(1)

    def stage_modules(self) -> list[nn.Module]:
        return [self.net.features[i] for i in self.STAGES]

    def pool(self, output: Tensor) -> Tensor:
        return output.mean(dim=(2, 3, 4))


class _Swin3d(ZooStudent):
    classifier = "head"
    mean_std = IMAGENET

    def stage_modules(self) -> list[nn.Module]:
        return [self.net.features[i] for i in (0, 2, 4, 6)]   # the four stages; 1, 3, 5 merge patches

    def pool(self, output: Tensor) -> Tensor:
        return output.mean(dim=(1, 2, 3))   # (B, T, H, W, C): channels last


class Swin3dT(_Swin3d):
    """Video Swin-T (torchvision swin3d_t, 27.9 M): 768-d embedding; stages 96/192/384/768; any clip size."""

    name = "swin3d_t"
    builder = "swin3d_t"


class Swin3dS(_Swin3d):
    """Video Swin-S (torchvision swin3d_s, 49.5 M): 768-d embedding; stages 96/192/384/768; any clip size."""

    name = "swin3d_s"
    builder = "swin3d_s"


class Swin3dB(_Swin3d):
    """Video Swin-B (torchvision swin3d_b, 87.6 M): 1024-d embedding; stages 128/256/512/1024; any clip size."""

    name = "swin3d_b"
    builder = "swin3d_b"


class _MViT(ZooStudent):
    classifier = "head"
    mean_std = MVIT
    fixed_size = (16, 224, 224)

    def stage_modules(self) -> list[nn.Module]:
        return list(self.net.blocks)

    def pick_stages(self, outputs: list) -> list:
        """The last block at each resolution: a block returns (tokens, (T, H, W))."""
        return [out for out, after in zip(outputs, outputs[1:] + [None]) if after is None or after[1] != out[1]]

    def pool(self, output) -> Tensor:
        return output[0][:, 1:].mean(dim=1)   # the patch tokens, not the class token


class MViTv2S(_MViT):
    """MViTv2-S (torchvision mvit_v2_s, 34.2 M): 768-d embedding; stages 96/192/384/768; 16 × 224 × 224 clips."""

    name = "mvit_v2_s"
    builder = "mvit_v2_s"


class MViTv1B(_MViT):
    """MViTv1-B (torchvision mvit_v1_b, 36.3 M): 768-d embedding; stages 192/384/768/768; 16 × 224 × 224 clips."""

    name = "mvit_v1_b"
    builder = "mvit_v1_b"


ZOO = (S3D, Swin3dT, Swin3dS, Swin3dB, MViTv2S, MViTv1B)
