"""mmaction2 recognizers as students, with the real mmaction2 (the suite installs the ``mmaction`` extra).

The curated students are built from the configs shipped inside mmaction2; a user's config is a file written
here in mmaction2's config format. Checkpoints are written in mmaction2's published layout
(``{'meta', 'state_dict'}``) from a built recognizer, since released files cannot be downloaded here.
"""

from __future__ import annotations

import ast
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdbench.contracts import DatasetInfo
from kdbench.errors import KdbenchError
from kdbench_plugins.students import mmaction as plugin
from kdbench_plugins.students.mmaction import CURATED, MMActionStudent

BY_NAME = {cls.name: cls for cls in CURATED}
CLIP = (1, 8, 32, 32)
#: name → (embedding width, stage widths): the architectures' own (X3D-M's head has a 2048-wide hidden layer;
#: SlowFast joins its pathways, 256·2^k + 32·2^k; MobileNetV2's last layer at each resolution, the deepest four)
WIDTHS = {
    "mmaction-x3d": (2048, (24, 48, 96, 192)),
    "mmaction-slowfast": (2304, (288, 576, 1152, 2304)),
    "mmaction-tsm": (2048, (256, 512, 1024, 2048)),
    "mmaction-tsm-mobilenetv2": (1280, (24, 32, 96, 320)),
    "mmaction-i3d": (2048, (256, 512, 1024, 2048)),
    "mmaction-swin": (768, (96, 192, 384, 768)),
}
USER_CONFIG = """
# a user's own recognizer: an 18-layer 3-D ResNet with an I3D head
model = dict(
    type="Recognizer3D",
    backbone=dict(type="ResNet3d", depth=18, pretrained=None, pretrained2d=False),
    cls_head=dict(type="I3DHead", in_channels=512, num_classes=400, dropout_ratio=0.5),
    data_preprocessor=dict(type="ActionDataPreprocessor", mean=[114.75] * 3, std=[57.375] * 3, format_shape="NCTHW"))
"""

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def info(shape=CLIP, num_classes: int = 5) -> DatasetInfo:
    return DatasetInfo(tuple(f"c{i}" for i in range(num_classes)), (1, 3000), shape)


def build(cls, shape=CLIP, num_classes: int = 5, seed: int = 0, **options):
    torch.manual_seed(seed)
    return cls(cls.Options(**options), info(shape, num_classes)).eval()


@pytest.fixture
def user_config(tmp_path) -> Path:
    path = tmp_path / "my_r3d18.py"
    path.write_text(USER_CONFIG)
    return path


def test_registered_listed_and_mmaction_not_imported_at_module_level():
    from kdbench.plugins import load_plugins

    loaded = load_plugins()
    for cls in (MMActionStudent, *CURATED):
        assert loaded["students"].get(cls.name).cls is cls
    report = {p.name: p for p in loaded.report}["students.mmaction"]
    assert report.error is None and report.unavailable is None   # the suite installs the extra
    top = [n for n in ast.parse(Path(plugin.__file__).read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names] + \
            [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.startswith(("mmaction", "mmengine", "mmcv"))]


@pytest.mark.parametrize("name", sorted(WIDTHS))
def test_curated_students_give_what_distillers_need(name):
    model = build(BY_NAME[name])
    clip = torch.rand(2, *CLIP, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out, rgb, copied = model(clip), model(clip.repeat(1, 3, 1, 1, 1)), copy.deepcopy(model)(clip)
    embedding, stages = WIDTHS[name]
    assert out.logits.shape == (2, 5) and out.embedding.shape == (2, embedding)
    assert tuple(s.shape for s in out.stages) == tuple((2, w) for w in stages)
    assert torch.isfinite(out.logits).all()
    # the logits are the head's last layer applied to the embedding, so logit distillers and feature ones agree
    head = model.classifier
    torch.testing.assert_close(out.logits, out.embedding @ head.weight.flatten(1).T + head.bias, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.logits, rgb.logits)   # a gray clip is its RGB repeat
    assert torch.equal(copied.logits, out.logits)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())   # none left behind


@pytest.mark.parametrize("shape, classes", [((1, 16, 112, 112), 5), ((3, 16, 112, 112), 51)])  # s3ve, ucf51
def test_widths_on_s3ve_and_ucf51_clips(shape, classes):
    from kdbench.engine.build import feature_spec

    model = build(BY_NAME["mmaction-x3d"], shape, num_classes=classes)
    spec = feature_spec(model, torch.rand(1, *shape), "student")
    assert (spec.num_classes, spec.embedding, spec.stages) == (classes, 2048, (24, 48, 96, 192))


def test_a_2d_recognizer_reads_the_clip_frames_as_its_segments():
    """TSM's segment count is set to the clip's T: a 4-frame clip works (with the shipped 8 it would not)."""
    model = build(BY_NAME["mmaction-tsm-mobilenetv2"], (1, 4, 32, 32))
    assert model.recognizer.cls_head.num_segments == 4 and model.recognizer.backbone.num_segments == 4
    with torch.no_grad():
        assert model(torch.rand(3, 1, 4, 32, 32)).logits.shape == (3, 5)


def test_a_users_config_file_and_its_overrides(user_config):
    model = build(MMActionStudent, config=str(user_config))
    with torch.no_grad():
        out = model(torch.rand(2, *CLIP))
    assert out.embedding.shape == (2, 512) and [s.shape[1] for s in out.stages] == [64, 128, 256, 512]
    assert model.mean.flatten().tolist() == [114.75] * 3   # the config's normalisation
    deeper = build(MMActionStudent, config=str(user_config), cfg_options={"model": {"backbone": {"depth": 34}}})
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert len(deeper.recognizer.backbone.layer3) == 6 and count(deeper) > count(model)


@pytest.mark.parametrize("write, message", [
    (None, "config file '{path}' does not exist"),
    ("model = dict(type='Recognizer3D'\n", "config file '{path}' does not parse: SyntaxError"),
    ("model = dict(type='RecognizerGCN', backbone=dict(type='STGCN'))\n", "describes RecognizerGCN, not a video"),
    ("model = dict(type='Recognizer3D', backbone=dict(type='NoSuchNet'), cls_head=dict(type='I3DHead', "
     "in_channels=8, num_classes=3))\n", "mmaction2 cannot build the model of"),
])
def test_bad_config_files_are_one_line_refusals(tmp_path, write, message):
    path = tmp_path / "bad.py"
    if write is not None:
        path.write_text(write)
    with pytest.raises(KdbenchError) as caught:
        build(MMActionStudent, config=str(path))
    assert message.format(path=path) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(KdbenchError, match="needs a recognizer's config: --set student.config="):
        build(MMActionStudent)


def test_checkpoints_load_strictly_and_a_wrong_key_is_named(tmp_path):
    released = build(BY_NAME["mmaction-x3d"], num_classes=7, seed=3)   # another class count, as a released file
    state = released.recognizer.state_dict()
    path = tmp_path / "x3d.pth"
    torch.save({"meta": {"mmengine_version": "0.10.7", "epoch": 30}, "state_dict": state}, path)
    model = build(BY_NAME["mmaction-x3d"], checkpoint=str(path))
    ours = model.recognizer.state_dict()
    for key, value in state.items():
        if not key.startswith("cls_head.fc2."):   # the head's last layer is always new
            assert torch.equal(ours[key], value), key
    assert ours["cls_head.fc2.weight"].shape == (5, 2048)

    broken = dict(state)
    broken["backbone.conv1_s.conv.wieght"] = broken.pop("backbone.conv1_s.conv.weight")
    torch.save({"meta": {}, "state_dict": broken}, tmp_path / "broken.pth")
    with pytest.raises(KdbenchError) as caught:
        build(BY_NAME["mmaction-x3d"], checkpoint=str(tmp_path / "broken.pth"))
    assert "backbone.conv1_s.conv.w" in str(caught.value) and "\n" not in str(caught.value)


def test_without_the_extra_the_plugin_says_what_to_install_and_the_rest_works(tmp_path):
    """mmaction2 hidden from a fresh interpreter (``sys.modules[name] = None`` makes it unimportable)."""
    script = ("import sys\n"
              "sys.modules['mmaction'] = None\n"
              "from kdbench.cli import main\n"
              "code = main(sys.argv[1:])\n"
              "sys.exit(code)\n")
    run = lambda *args: subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,  # noqa: E731
                                       cwd=tmp_path, timeout=300)
    plugins = run("plugins")
    line = next(line for line in plugins.stdout.splitlines() if line.startswith("students.mmaction"))
    assert plugins.returncode == 0 and "unavailable: mmaction not installed: pip install 'kdbench[mmaction]'" in line
    listed = run("list", "students")
    assert listed.returncode == 0 and "mmaction-x3d" in listed.stdout and "r3d18" in listed.stdout
    assert "warning" not in listed.stderr
    refused = run("run", "--dataset", "synthetic", "--student", "mmaction-x3d", "--distiller", "kd", "--epochs", "1",
                  "--set", "dataset.train_size=40", "--set", "dataset.test_size=20")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "student 'mmaction-x3d' needs mmaction2, which does not import here" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_kdbench_run_with_a_curated_student_and_with_a_config_file(cli, workdir, user_config):
    """End to end on the tiny synthetic dataset: CRD into X3D-M, then KD into the user's recognizer."""
    common = ("--dataset", "synthetic", "--config", "tiny.toml", "--epochs", "1", "--no-progress")
    first = cli("run", "--distiller", "crd", "--student", "mmaction-x3d", *common)
    assert first.code == 0, first.err
    second = cli("run", "--distiller", "kd", "--student", "mmaction", "--set", f"student.config={user_config}", *common)
    assert second.code == 0, second.err
    students = [r for r in workdir.runs() if r.data.tags.get("kdbench.role") == "student"]
    finished = {r.data.tags["kdbench.student"]: r.info.status for r in students}
    assert finished == {"mmaction-x3d": "FINISHED", "mmaction": "FINISHED"}
