"""``r3d18-hara`` and ``r2plus1d18-hara``: the ResNet-18s of Kensho Hara's 3D-ResNets-PyTorch.

They exist so that the checkpoints the SACD paper points to load: ``r3d18_KM_200ep.pth`` (Kinetics-700
+ Moments in Time, 1039 classes) and ``r2p1d18_K_200ep.pth`` (Kinetics-700, 700 classes). Those files
do not fit torchvision's models: the stems differ (Hara: a 7×7×7 R3D stem, a 110-wide R(2+1)D stem with
a 7-frame temporal conv, and a max-pool over T, H and W after either stem), and R(2+1)D's second conv
of a downsampling block has a wider middle layer (Hara computes it from C_out → C_out, torchvision
reuses the first conv's). So this is a separate implementation written from those facts, with Hara's
key names (``conv1``, ``bn1``, ``conv1_s``, ``conv1_t``, ``layer1.0.conv1``, ``downsample.0``, ``fc``),
shortcut type B (1×1×1 conv + BN where the shape changes), and his initialisation.
"""

from __future__ import annotations

from torch import Tensor, nn

from kdbench.options import path_field

from .common import KINETICS_HARA, VideoResNetStudent, VideoStudentOptions

WIDTHS = (64, 128, 256, 512)


class HaraOptions(VideoStudentOptions):
    pretrained: str | None = path_field(
        None, what="file", description="Local path of a 3D-ResNets-PyTorch checkpoint ({'epoch','arch','state_dict',...}, "
                          "e.g. r3d18_KM_200ep.pth / r2p1d18_K_200ep.pth); its fc is dropped. None = random "
                          "init. Never downloaded.")


def mid_width(c_in: int, c_out: int, k_t: int = 3, k_s: int = 3) -> int:
    """Middle width of a (2+1)D factorisation with as many weights as the full k_t×k_s×k_s conv."""
    return (c_in * c_out * k_t * k_s * k_s) // (c_in * k_s * k_s + k_t * c_out)


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(nn.Conv3d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm3d(c_out))


class R3DBlock(nn.Module):
    """Two 3×3×3 convs; the first carries the stride (over T, H and W)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(c_out)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(c_in, c_out, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class R2Plus1DBlock(nn.Module):
    """Two (2+1)D convs (1×3×3 spatial → BN → ReLU → 3×1×1 temporal), each with its own middle width."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        mid1, mid2 = mid_width(c_in, c_out), mid_width(c_out, c_out)
        self.conv1_s = nn.Conv3d(c_in, mid1, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)
        self.bn1_s = nn.BatchNorm3d(mid1)
        self.conv1_t = nn.Conv3d(mid1, c_out, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False)
        self.bn1_t = nn.BatchNorm3d(c_out)
        self.conv2_s = nn.Conv3d(c_out, mid2, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.bn2_s = nn.BatchNorm3d(mid2)
        self.conv2_t = nn.Conv3d(mid2, c_out, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.bn2_t = nn.BatchNorm3d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(c_in, c_out, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1_s(self.conv1_s(x)))
        out = self.relu(self.bn1_t(self.conv1_t(out)))
        out = self.relu(self.bn2_s(self.conv2_s(out)))
        out = self.bn2_t(self.conv2_t(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class _HaraStudent(VideoResNetStudent):
    Options = HaraOptions
    mean_std = KINETICS_HARA
    block: type[nn.Module]

    def _build(self, num_classes: int) -> None:
        self._build_stem()
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)  # over T too, unlike torchvision
        c_in = WIDTHS[0]
        for i, width in enumerate(WIDTHS):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(self.block(c_in, width, stride),
                                                         self.block(width, width, 1)))
            c_in = width
        self.fc = nn.Linear(WIDTHS[-1], num_classes)
        for m in self.modules():  # Hara's initialisation; fc keeps nn.Linear's default as in his code
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _build_stem(self) -> None:
        raise NotImplementedError


class HaraR3D18(_HaraStudent):
    """R3D-18 as in Hara's 3D-ResNets-PyTorch (7×7×7 stem + max-pool): loads r3d18_KM_200ep.pth, 512-d embedding."""

    name = "r3d18-hara"
    block = R3DBlock

    def _build_stem(self) -> None:
        self.conv1 = nn.Conv3d(3, 64, 7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)

    def _stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


class HaraR2Plus1D18(_HaraStudent):
    """R(2+1)D-18 as in Hara's 3D-ResNets-PyTorch (110-wide stem, 7-frame conv): loads r2p1d18_K_200ep.pth."""

    name = "r2plus1d18-hara"
    block = R2Plus1DBlock

    def _build_stem(self) -> None:
        # Hara sizes the stem's middle for 3 input channels whatever the input; the stem's 3 is ours too.
        mid = mid_width(3, 64, k_t=7, k_s=7)  # 110
        self.conv1_s = nn.Conv3d(3, mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False)
        self.bn1_s = nn.BatchNorm3d(mid)
        self.conv1_t = nn.Conv3d(mid, 64, (7, 1, 1), padding=(3, 0, 0), bias=False)
        self.bn1_t = nn.BatchNorm3d(64)

    def _stem(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1_s(self.conv1_s(x)))
        return self.maxpool(self.relu(self.bn1_t(self.conv1_t(x))))
