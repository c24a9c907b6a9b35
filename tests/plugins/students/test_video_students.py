"""The video ResNet students: outputs, sizes against torchvision and methods.md, weight files, channels.

(torchvision's other video models, ``zoo``, are tested in test_zoo_students.py.)

The Hara key fixtures (tests/fixtures/checkpoint_keys/hara_*.json) were transcribed from methods.md §4
by a script stored inside them, not derived from this package's code, so comparing the students'
state dicts with them checks the implementation against the documented checkpoints. "Official-format"
files are built from those fixtures with random tensors, wrapped as Hara's training checkpoints save
them, since the real files cannot be downloaded here.
"""

from __future__ import annotations

import ast
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from kdbench.contracts import DatasetInfo
from kdbench.errors import KdbenchError
from kdbench_plugins.students.video import MC3_18, R3D18, STUDENTS, HaraR2Plus1D18, HaraR3D18, R2Plus1D18
from kdbench_plugins.students.video.common import KINETICS_HARA, KINETICS_TORCHVISION
from kdbench_plugins.students.video.hara import mid_width
from kdbench_plugins.students.video.weights import load_pretrained

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "checkpoint_keys"
RESNETS = (R3D18, R2Plus1D18, HaraR3D18, HaraR2Plus1D18, MC3_18)
BY_NAME = {cls.name: cls for cls in RESNETS}


def info(num_classes: int = 5, shape: tuple[int, ...] = (1, 4, 32, 32)) -> DatasetInfo:
    return DatasetInfo(tuple(f"c{i}" for i in range(num_classes)), (1, 3000), shape)


def build(cls, num_classes: int = 5, shape=(1, 4, 32, 32), seed: int = 0, **options):
    torch.manual_seed(seed)
    return cls(cls.Options(**options), info(num_classes, shape)).eval()


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def random_state(keys: dict[str, list[int]], seed: int = 1) -> dict[str, torch.Tensor]:
    """Random tensors of the given shapes, scaled so a forward pass stays finite."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in keys.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = 1 + 0.1 * torch.rand(shape, generator=gen)
        elif key.endswith(".weight") and len(shape) == 1:  # a BatchNorm scale
            state[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) > 1:
            state[key] = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
        else:
            state[key] = 0.1 * torch.randn(shape, generator=gen)
    return state


def hara_checkpoint(state: dict, arch: str, prefix: str = "") -> dict:
    """Wrapped as 3D-ResNets-PyTorch's save_checkpoint writes it."""
    return {"epoch": 200, "arch": arch, "state_dict": {prefix + k: v for k, v in state.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
            "scheduler": {"milestones": Counter([50, 100]), "last_epoch": 200}}


GEN = torch.Generator().manual_seed(3)
GRAY, RGB = torch.rand(2, 1, 4, 32, 32, generator=GEN), torch.rand(2, 3, 8, 32, 32, generator=GEN)
CLIP = torch.rand(2, 1, 2, 16, 16, generator=GEN)  # the cheapest clip for comparisons


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def gray_students():
    """One student of each kind built for a 1-channel, 5-class dataset."""
    return {cls.name: build(cls) for cls in RESNETS}


# --------------------------------------------------------------------------- registration and outputs


def test_registered_and_torchvision_is_not_imported_at_module_level():
    from kdbench.plugins import load_plugins

    students = load_plugins()["students"]
    for cls in STUDENTS:
        assert students.get(cls.name).cls is cls and students.get(cls.name).description
    package = Path(__import__("kdbench_plugins.students.video").students.video.__file__).parent
    for source in package.glob("*.py"):  # `kdbench list` must not pay for importing torchvision
        top = [n for n in ast.parse(source.read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom) and n.level == 0]  # not relative
        assert not [n for n in names if n.startswith("torchvision")], source


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_output_widths_on_gray_and_rgb_clips(gray_students, name):
    for clip in (GRAY, RGB):
        with torch.no_grad():
            out = gray_students[name](clip)
        assert out.logits.shape == (2, 5) and out.embedding.shape == (2, 512)
        assert [tuple(s.shape) for s in out.stages] == [(2, 64), (2, 128), (2, 256), (2, 512)]
        assert torch.equal(out.embedding, out.stages[-1]) and torch.isfinite(out.logits).all()


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_gray_input_equals_repeated_rgb(gray_students, name):
    model = gray_students[name]
    with torch.no_grad():
        gray, rgb = model(CLIP), model(CLIP.repeat(1, 3, 1, 1, 1))
    torch.testing.assert_close(gray.logits, rgb.logits)
    torch.testing.assert_close(gray.stages[0], rgb.stages[0])


@pytest.mark.parametrize("name, layer1, layer4", [
    ("r3d18", (16, 16, 16), (2, 2, 2)), ("r2plus1d18", (16, 16, 16), (2, 2, 2)),  # no max-pool
    ("r3d18-hara", (8, 8, 8), (1, 1, 1)), ("r2plus1d18-hara", (8, 8, 8), (1, 1, 1))])  # max-pool over T, H, W
def test_feature_map_sizes_follow_each_architecture(gray_students, name, layer1, layer4):
    """methods.md: for 16x112x112, Hara's layer1 is 8x28x28 and layer4 1x4x4, torchvision's 16x56x56 and
    2x7x7; the same strides on a 16x32x32 clip give the sizes above."""
    model, sizes = gray_students[name], {}
    hooks = [getattr(model, f"layer{i}").register_forward_hook(
        lambda _m, _i, out, i=i: sizes.__setitem__(i, tuple(out.shape[2:]))) for i in (1, 4)]
    try:
        with torch.no_grad():
            model(torch.rand(1, 1, 16, 32, 32))
    finally:
        for hook in hooks:
            hook.remove()
    assert sizes == {1: layer1, 4: layer4}


def test_a_three_channel_dataset_is_accepted():
    model = build(HaraR2Plus1D18, num_classes=7, shape=(3, 8, 32, 32))
    with torch.no_grad():
        out = model(CLIP.repeat(1, 3, 1, 1, 1))
    assert model.in_channels == 3 and out.logits.shape == (2, 7) and out.embedding.shape == (2, 512)


def test_repeating_gray_equals_summing_the_stem_filters(gray_students):
    stem = gray_students["r3d18"].stem[0]  # Conv3d(3, 64, (3, 7, 7)), unnormalised input
    x = CLIP[:1]
    summed = torch.nn.functional.conv3d(x, stem.weight.sum(1, keepdim=True), stride=stem.stride,
                                        padding=stem.padding)
    with torch.no_grad():
        torch.testing.assert_close(stem(x.repeat(1, 3, 1, 1, 1)), summed, rtol=1e-4, atol=1e-4)


def test_other_channel_counts_and_shapes_are_refused(gray_students):
    with pytest.raises(KdbenchError, match="1-channel .* or 3-channel .* the dataset's clips have 2 channels"):
        build(R3D18, shape=(2, 4, 32, 32))
    with pytest.raises(KdbenchError, match=r"reads clips shaped \(C, T, H, W\); .* shaped \(1, 3000\)"):
        build(HaraR3D18, shape=(1, 3000))
    with pytest.raises(KdbenchError, match=r"got \(2, 2, 4, 32, 32\)"):
        gray_students["r3d18-hara"](torch.rand(2, 2, 4, 32, 32))


@pytest.mark.parametrize("name, constants", [("r3d18", KINETICS_TORCHVISION), ("r2plus1d18", KINETICS_TORCHVISION),
                                             ("r3d18-hara", KINETICS_HARA), ("r2plus1d18-hara", KINETICS_HARA)])
def test_kinetics_normalisation_of_the_matching_pretraining(gray_students, name, constants):
    mean, std = (torch.tensor(c).view(1, 3, 1, 1, 1) for c in constants)
    model = gray_students[name]
    clip = mean.expand(1, 3, 2, 4, 4) + std.expand(1, 3, 2, 4, 4)  # one std above the mean
    torch.testing.assert_close(model.prepare(clip), torch.ones(1, 3, 2, 4, 4))
    model.options = model.Options(normalize=False)
    try:
        assert torch.equal(model.prepare(clip), clip)
    finally:
        model.options = model.Options()


def test_dropout_option_acts_on_the_classifier_input_only():
    model = build(R3D18, dropout=0.5).train()
    torch.manual_seed(0)
    a = model(CLIP)
    torch.manual_seed(1)
    b = model(CLIP)
    assert not torch.equal(a.logits, b.logits)
    with pytest.raises(ValueError):
        R3D18.Options(dropout=1.0)
    with pytest.raises(ValueError):
        R3D18.Options(weights="x.pth")


# --------------------------------------------------------------------------- sizes and key names


@pytest.mark.parametrize("name, builder", [("r3d18", "r3d_18"), ("r2plus1d18", "r2plus1d_18"), ("mc3_18", "mc3_18")])
def test_torchvision_students_equal_torchvision_models(gray_students, name, builder):
    from torchvision.models import video

    reference = getattr(video, builder)(weights=None)  # 400 classes
    ours = gray_students[name]  # 5 classes
    ref_shapes, our_shapes = shapes(reference), shapes(ours)
    assert our_shapes.pop("fc.weight") == [5, 512] and ref_shapes.pop("fc.weight") == [400, 512]
    assert our_shapes.pop("fc.bias") == [5] and ref_shapes.pop("fc.bias") == [400]
    assert our_shapes == ref_shapes
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) - 5 * 513 == count(reference) - 400 * 513


@pytest.mark.parametrize("cls, name, documented", [(HaraR3D18, "hara_r3d18", 33.74),
                                                   (HaraR2Plus1D18, "hara_r2plus1d18", 33.58)])
def test_hara_students_match_the_documented_checkpoints(cls, name, documented):
    expected = fixture(name)
    model = build(cls, num_classes=expected["num_classes"])
    assert len(model.state_dict()) == expected["entries"] == len(expected["keys"])
    assert shapes(model) == expected["keys"]
    params = sum(p.numel() for p in model.parameters())
    assert params == expected["params"] and round(params / 1e6, 2) == documented


def test_hara_mid_widths_follow_the_table():
    assert mid_width(3, 64, k_t=7, k_s=7) == 110
    assert [mid_width(c // 2, c) for c in (128, 256, 512)] == [230, 460, 921]
    assert [mid_width(c, c) for c in (64, 128, 256, 512)] == [144, 288, 576, 1152]


# --------------------------------------------------------------------------- weight files


@pytest.mark.parametrize("cls, name", [(HaraR3D18, "hara_r3d18"), (HaraR2Plus1D18, "hara_r2plus1d18")])
def test_official_format_checkpoint_loads_and_is_used(gray_students, tmp_path, cls, name):
    expected = fixture(name)  # its fc has the checkpoint's own 1039 / 700 classes
    state = random_state(expected["keys"])
    for prefix in ("", "module."):  # as saved by Hara's code, and as some users' files come (DataParallel)
        path = tmp_path / f"{prefix}{expected['file']}"
        torch.save(hara_checkpoint(state, expected["arch"], prefix), path)
        loaded = build(cls, pretrained=str(path))
        scratch = gray_students[cls.name]  # the same student and seed without the file
        for key, value in loaded.state_dict().items():
            if key.startswith("fc."):  # the new 5-class classifier keeps its initialisation
                assert torch.equal(value, scratch.state_dict()[key])
            else:
                assert torch.equal(value, state[key]), key
    with torch.no_grad():
        before, after = scratch(CLIP), loaded(CLIP)
    assert torch.isfinite(after.logits).all()
    assert not torch.allclose(before.embedding, after.embedding)


@pytest.mark.parametrize("cls", [R3D18, R2Plus1D18])
def test_torchvision_state_dict_loads_even_without_batchnorm_counters(gray_students, tmp_path, cls):
    source = random_state(shapes(gray_students[cls.name]), seed=5)  # torchvision's key names
    source["fc.weight"], source["fc.bias"] = torch.zeros(400, 512), torch.zeros(400)  # Kinetics-400's fc
    state = {k: v for k, v in source.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "kinetics400.pth")
    loaded = build(cls, pretrained=str(tmp_path / "kinetics400.pth"))
    own = loaded.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith("fc."))
    assert own["fc.weight"].shape == (5, 512) and own["fc.weight"].abs().sum() > 0


def expect_one_line(path: Path, student, match: str) -> None:
    """Loading ``path`` fails with one line naming the file; ``student`` is a class (built with the option)
    or a built student (loaded into directly: a failing load checks every key before changing any)."""
    with pytest.raises(KdbenchError, match=match) as caught:
        if isinstance(student, type):
            build(student, pretrained=str(path))
        else:
            load_pretrained(student, str(path), f"student {student.name!r}")
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def cheap_state(keys: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Right shapes, one stored number each (an expanded view saves its one-element storage)."""
    return {k: torch.zeros(1).expand(shape) if shape else torch.tensor(0) for k, shape in keys.items()}


def test_mismatched_checkpoints_fail_on_the_first_mismatching_key(gray_students, tmp_path):
    torch.save(cheap_state(shapes(gray_students["r3d18"])), tmp_path / "torchvision.pth")
    expect_one_line(tmp_path / "torchvision.pth", HaraR3D18, "key 'conv1.weight' is missing from the checkpoint")

    r2p1d = fixture("hara_r2plus1d18")
    torch.save(hara_checkpoint(cheap_state(r2p1d["keys"]), "resnet2p1d-18"), tmp_path / "r2p1d.pth")
    expect_one_line(tmp_path / "r2p1d.pth", gray_students["r2plus1d18"],
                    r"\(arch 'resnet2p1d-18'\): key 'stem.0.weight' is missing")
    expect_one_line(tmp_path / "r2p1d.pth", gray_students["r3d18-hara"], "key 'conv1.weight' is missing")

    wrong = cheap_state(r2p1d["keys"])
    wrong["layer2.0.conv2_s.weight"] = torch.zeros(1).expand(230, 128, 1, 3, 3)  # torchvision's mid width
    torch.save(hara_checkpoint(wrong, "resnet2p1d-18"), tmp_path / "wrong.pth")
    expect_one_line(tmp_path / "wrong.pth", gray_students["r2plus1d18-hara"],
                    r"key 'layer2.0.conv2_s.weight' has shape \(230, 128, 1, 3, 3\) in the checkpoint, "
                    r"the model expects \(288, 128, 1, 3, 3\)")

    r3d = fixture("hara_r3d18")
    missing = cheap_state(r3d["keys"])
    del missing["layer3.1.bn2.running_var"]
    torch.save(hara_checkpoint(missing, "resnet-18"), tmp_path / "missing.pth")
    expect_one_line(tmp_path / "missing.pth", gray_students["r3d18-hara"], "key 'layer3.1.bn2.running_var' is missing")

    extra = {**cheap_state(r3d["keys"]), "layer5.0.conv1.weight": torch.zeros(1)}
    torch.save(extra, tmp_path / "extra.pth")
    expect_one_line(tmp_path / "extra.pth", gray_students["r3d18-hara"], "unexpected key 'layer5.0.conv1.weight'")


def test_unusable_weight_files_are_one_line_errors(gray_students, tmp_path):
    expect_one_line(tmp_path / "absent.pth", R3D18, "does not exist .*never downloaded")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    expect_one_line(tmp_path / "garbage.pth", gray_students["r3d18"], "unreadable by torch.load")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    expect_one_line(tmp_path / "tensor.pth", gray_students["r3d18"], "holds no state dict")
    torch.save({"conv1.weight": torch.zeros(1), "note": "hello"}, tmp_path / "mixed.pth")
    expect_one_line(tmp_path / "mixed.pth", gray_students["r3d18-hara"], "entry 'note' .* is a str, not a tensor")
