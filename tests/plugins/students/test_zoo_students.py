"""torchvision's other video models as students (``zoo``): what distillers see, the size rules, weight files.

Widths are measured on the meta device (shapes only, no arithmetic) where a real forward would cost
seconds (MViT reads 16 × 224 × 224 clips only); the cheap students also run for real.
"""

from __future__ import annotations

import copy

import pytest
import torch

from kdbench.contracts import DatasetInfo
from kdbench.errors import KdbenchError
from kdbench_plugins.students.video.zoo import S3D, ZOO, MViTv2S, Swin3dT

BY_NAME = {cls.name: cls for cls in ZOO}

#: name → (a clip size it reads, embedding width, stage widths, parameters at 5 classes): the widths and counts
#: are torchvision's architectures' (docs/students.md lists them)
EXPECTED = {
    "s3d": ((8, 32, 32), 1024, (192, 480, 832, 1024), 7_915_173),
    "swin3d_t": ((4, 32, 32), 768, (96, 192, 384, 768), 27_854_315),
    "swin3d_s": ((4, 32, 32), 768, (96, 192, 384, 768), 49_512_923),
    "swin3d_b": ((4, 32, 32), 1024, (128, 256, 512, 1024), 87_644_109),
    "mvit_v2_s": ((16, 224, 224), 768, (96, 192, 384, 768), 34_233_989),
    "mvit_v1_b": ((16, 224, 224), 768, (192, 384, 768, 768), 36_306_917),
}


def info(shape: tuple[int, ...], num_classes: int = 5) -> DatasetInfo:
    return DatasetInfo(tuple(f"c{i}" for i in range(num_classes)), (1, 3000), shape)


def build(cls, shape, device: str = "cpu", seed: int = 0, **options):
    torch.manual_seed(seed)
    with torch.device(device):
        return cls(cls.Options(**options), info(shape)).eval()


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_widths_the_distillers_see(name):
    size, embedding, stages, params = EXPECTED[name]
    model = build(BY_NAME[name], (1, *size), device="meta")
    out = model(torch.empty(2, 1, *size, device="meta"))
    assert out.logits.shape == (2, 5) and out.embedding.shape == (2, embedding)
    assert tuple(s.shape[1] for s in out.stages) == stages and all(s.shape[0] == 2 for s in out.stages)
    assert sum(p.numel() for p in model.parameters()) == params
    assert not model.net._forward_hooks and not any(m._forward_hooks or m._forward_pre_hooks
                                                    for m in model.net.modules())  # none left behind


@pytest.mark.parametrize("cls, size", [(S3D, (8, 32, 32)), (Swin3dT, (2, 16, 16))])
def test_real_forward_gray_equals_repeated_rgb_and_survives_deepcopy(cls, size):
    model = build(cls, (1, *size))
    clip = torch.rand(2, 1, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        gray, rgb, copied = model(clip), model(clip.repeat(1, 3, 1, 1, 1)), copy.deepcopy(model)(clip)
    assert torch.isfinite(gray.logits).all()
    torch.testing.assert_close(gray.logits, rgb.logits)
    assert torch.equal(copied.logits, gray.logits) and torch.equal(copied.embedding, gray.embedding)
    # the embedding is what the classifier reads: the logits are its linear function
    head = model.net.classifier[1] if cls is S3D else model.net.head
    weight = head.weight.flatten(1)
    torch.testing.assert_close(gray.logits, gray.embedding @ weight.T + head.bias)


def test_s3d_global_pool_equals_torchvisions_window_at_its_training_size():
    """Where the last map is 2 x 7 x 7 (as at the training size 16 x 224 x 224; here 13 x 209 x 209, the
    cheapest such clip) torchvision's (2, 7, 7) average pool and the student's global average are the same, so a
    torchvision S3D and the student agree."""
    from torchvision.models import video

    student = build(S3D, (3, 13, 209, 209))
    reference = video.s3d(weights=None, num_classes=5).eval()
    reference.load_state_dict(student.net.state_dict())
    clip = torch.rand(1, 3, 13, 209, 209, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert student.net.features(student.prepare(clip)).shape[2:] == (2, 7, 7)
        torch.testing.assert_close(student(clip).logits, reference(student.prepare(clip)), rtol=1e-5, atol=1e-5)
    # (float32, the same kernels on the same machine; the tolerance covers the sum's order in the two pools)


def test_size_rules_match_the_networks():
    """S3D's declared minimum is the real boundary (the smaller sizes fail inside torchvision); MViT refuses any
    other size than the one its position tables are built for, in one line naming it."""
    from torchvision.models import video

    with torch.device("meta"):
        net = video.s3d(weights=None, num_classes=5).eval()
    net.avgpool = torch.nn.AdaptiveAvgPool3d(1)
    net(torch.empty(1, 3, 5, 17, 17, device="meta"))
    for smaller in ((4, 17, 17), (5, 16, 16)):
        with pytest.raises(RuntimeError):
            net(torch.empty(1, 3, *smaller, device="meta"))
        with pytest.raises(KdbenchError, match=r"'s3d' needs clips of at least 5 frames and 17 × 17 pixels") as caught:
            build(S3D, (1, *smaller), device="meta")
        assert "\n" not in str(caught.value)
    with pytest.raises(KdbenchError, match=r"'mvit_v2_s' reads clips of exactly 16 × 224 × 224 .* gives 8 × 112 × 112"):
        build(MViTv2S, (1, 8, 112, 112), device="meta")
    with torch.device("meta"):
        mvit = video.mvit_v2_s(weights=None, num_classes=5).eval()
    with pytest.raises(RuntimeError):
        mvit(torch.empty(1, 3, 8, 112, 112, device="meta"))


def test_torchvision_weight_files_load_strictly_and_the_classifier_stays_new(tmp_path):
    from torchvision.models import video

    torch.manual_seed(5)
    released = video.swin3d_t(weights=None)   # 400 classes, as torchvision's Kinetics file
    path = tmp_path / "swin3d_t.pth"
    torch.save(released.state_dict(), path)
    model = build(Swin3dT, (1, 2, 16, 16), pretrained=str(path))
    ours = model.net.state_dict()
    for key, value in released.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(ours[key], value), key
    assert ours["head.weight"].shape == (5, 768)

    broken = dict(released.state_dict())
    broken["features.0.0.norm1.wieght"] = broken.pop("features.0.0.norm1.weight")
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(KdbenchError) as caught:
        build(Swin3dT, (1, 2, 16, 16), pretrained=str(tmp_path / "broken.pth"))
    assert "features.0.0.norm1.w" in str(caught.value) and "\n" not in str(caught.value)
