"""The PANNs audio teachers: sizes, checkpoint keys, strict loading, the front-end, the forward, freezing.

Cnn14 has ~80 M weights, so each network is built once per module (two builds: a random Cnn14, and a
Cnn14_emb512 loaded from an official-format file and frozen) and every forward runs on one second
of audio. The facts checked against are those of methods.md §5, held in the fixture JSONs and in an
independent functional forward below (torchaudio front-end, ``torch.nn.functional``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

import kdbench_plugins.teachers.audio as plugin
from kdbench.contracts import DatasetInfo
from kdbench.errors import KdbenchError
from kdbench_plugins.teachers.audio import Cnn14Emb512Teacher, Cnn14Teacher
from kdbench_plugins.teachers.audio.network import MIN_SAMPLES, frames, spec_augment
from kdbench_plugins.teachers.audio.cnn14 import read_panns_file

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "checkpoint_keys"
CLASSES = ("a", "b", "c")
SECOND = 32000
CLIP = SECOND  # 1 s: 101 frames, 3 left after the five poolings (so max and mean over time differ)
FRONT_END = ("spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight",
             "logmel_extractor.melW")


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def info(shape=(1, CLIP)) -> DatasetInfo:
    return DatasetInfo(CLASSES, shape, (1, 8, 24, 24))


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def official_state(keys: dict[str, list[int]], front_end: dict[str, torch.Tensor], seed: int) -> dict:
    """Random tensors of the documented shapes, scaled so a forward stays finite (BN variances > 0).

    The three front-end entries take the real DFT/mel values (which the released files also hold), so
    that a clip still becomes a log-mel and the forward can be compared with an independent one.
    """
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in keys.items():
        if key in front_end:
            state[key] = front_end[key].clone()
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith(("running_mean", ".bias")):
            state[key] = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:  # a BN scale
            state[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = torch.tensor(shape[1:]).prod().item()
            state[key] = torch.randn(shape, generator=g) / fan_in ** 0.5
    return state


@pytest.fixture(scope="module")
def cnn14() -> Cnn14Teacher:
    torch.manual_seed(0)
    return Cnn14Teacher(Cnn14Teacher.Options(), info((1, CLIP)))


@pytest.fixture(scope="module")
def files(tmp_path_factory, cnn14) -> dict[str, tuple[Path, dict]]:
    """Official-format files ({'iteration', 'model'}) for both networks from the fixtures' key lists,
    with the state each holds."""
    root = tmp_path_factory.mktemp("panns")
    front = {k: v for k, v in cnn14.panns.state_dict().items() if k in FRONT_END}
    out = {}
    for seed, name in enumerate(("cnn14", "cnn14_emb512")):
        state = official_state(fixture(name)["keys"], front, seed)
        torch.save({"iteration": 660000, "model": state}, root / f"{name}.pth")
        out[name] = (root / f"{name}.pth", state)
    return out


@pytest.fixture(scope="module")
def frozen(files) -> Cnn14Emb512Teacher:
    torch.manual_seed(0)
    options = Cnn14Emb512Teacher.Options(pretrained=str(files["cnn14_emb512"][0]), freeze_backbone=True)
    return Cnn14Emb512Teacher(options, info((CLIP,)))


@pytest.fixture(scope="module")
def wave() -> torch.Tensor:
    return 0.1 * torch.randn(2, CLIP, generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------- registration, options, inputs


def test_hook_registers_both_teachers_and_import_stays_light():
    registered = []
    plugin.register_teachers(register=registered.append)
    assert [c.name for c in registered] == ["cnn14", "cnn14-emb512"]
    assert all(c.__doc__.splitlines()[0].startswith("PANNs Cnn14") for c in registered)
    # torchlibrosa (librosa + numba, seconds) must wait until a teacher is built
    code = "import sys, kdbench_plugins.teachers.audio; print('torchlibrosa' in sys.modules, 'librosa' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_options_refuse_other_rates_and_a_frozen_random_network():
    assert Cnn14Teacher.Options().sample_rate == 32000
    with pytest.raises(ValidationError, match="only 32000 Hz"):
        Cnn14Teacher.Options(sample_rate=16000)
    with pytest.raises(ValidationError):
        Cnn14Teacher.Options(mixup=True)
    with pytest.raises(KdbenchError, match="freeze_backbone needs 'pretrained'"):
        Cnn14Teacher(Cnn14Teacher.Options(freeze_backbone=True), info())


@pytest.mark.parametrize("shape, message", [((2, SECOND), r"shape \(L,\) or \(1, L\)"),
                                            ((1, 8, SECOND), r"shape \(L,\) or \(1, L\)"),
                                            ((MIN_SAMPLES - 1,), "needs at least 9920 samples")])
def test_unfit_teacher_inputs_are_refused_before_building(shape, message):
    with pytest.raises(KdbenchError, match=message):
        Cnn14Emb512Teacher(Cnn14Emb512Teacher.Options(), info(shape))


# --------------------------------------------------------------------------- sizes and keys


@pytest.mark.parametrize("name, documented, exact", [("cnn14", "81.84", 81_837_071),
                                                     ("cnn14_emb512", "77.88", 77_880_335)])
def test_parameter_counts_match_the_documented_sizes(name, documented, exact, cnn14, frozen):
    panns = (cnn14 if name == "cnn14" else frozen).panns
    assert n_params(panns) == exact == fixture(name)["params"]  # the 527-class AudioSet network, front-end included
    assert f"{exact / 1e6:.2f}" == documented


@pytest.mark.parametrize("name", ["cnn14", "cnn14_emb512"])
def test_state_dict_keys_and_shapes_equal_the_transcribed_fixture(name, cnn14, frozen):
    panns = (cnn14 if name == "cnn14" else frozen).panns
    expected = fixture(name)["keys"]
    assert len(expected) == 84
    assert shapes(panns) == expected
    assert list(panns.state_dict()) == list(expected)  # same order, too


def test_our_parts_sit_beside_the_network(cnn14, frozen):
    assert cnn14.project.in_features == 2048 and cnn14.project.out_features == 512
    assert frozen.project is None  # 512 is emb512's native width: no projection
    assert (cnn14.head.in_features, cnn14.head.out_features) == (512, 3)
    assert set(shapes(cnn14)) == {f"panns.{k}" for k in fixture("cnn14")["keys"]} | {
        "project.weight", "project.bias", "head.weight", "head.bias"}


# --------------------------------------------------------------------------- front-end and forward


def test_front_end_is_the_documented_frozen_log_mel(cnn14):
    import torchaudio

    panns = cnn14.panns
    assert panns.logmel_extractor.melW.shape == (513, 64)
    assert not any(p.requires_grad for k, p in panns.named_parameters() if k in FRONT_END)
    assert frames(10 * SECOND) == 1001
    with torch.no_grad():
        assert panns.logmel(torch.zeros(1, 10 * SECOND)).shape == (1, 1, 1001, 64)
        x = torch.sin(torch.arange(SECOND) * 2 * torch.pi * 440 / SECOND)[None] + 0.01 * torch.randn(1, SECOND)
        ours = panns.logmel(x)[:, 0].transpose(1, 2)  # (1, 64, T)
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=32000, n_fft=1024, win_length=1024, hop_length=320, f_min=50, f_max=14000, n_mels=64,
        power=2.0, center=True, pad_mode="reflect", norm="slaney", mel_scale="slaney")
    theirs = 10 * torch.log10(mel(x).clamp(min=1e-10))
    assert ours.shape == theirs.shape == (1, 64, 101)
    assert (ours - theirs).abs().max() < 1e-3  # dB; HTK mel or no Slaney norm would be off by tens of dB
    assert (panns.logmel_extractor.melW.T - mel.mel_scale.fb.T).abs().max() < 1e-6


def reference_forward(state: dict, wave: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Cnn14's eval forward written from methods.md §5 alone, reading the file's tensors."""
    import torchaudio

    def bn(x, p):
        return F.batch_norm(x, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"],
                            state[f"{p}.bias"], training=False, eps=1e-5)

    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=32000, n_fft=1024, hop_length=320, f_min=50, f_max=14000, n_mels=64, power=2.0,
        norm="slaney", mel_scale="slaney")(wave)
    x = bn(10 * torch.log10(mel.clamp(min=1e-10)), "bn0")  # (B, 64 mel, T): mel is bn0's channel axis
    x = x.transpose(1, 2)[:, None]                           # (B, 1, T, 64)
    stages = []
    for k in range(1, 7):
        for j in (1, 2):
            x = F.relu(bn(F.conv2d(x, state[f"conv_block{k}.conv{j}.weight"], padding=1), f"conv_block{k}.bn{j}"))
        x = F.avg_pool2d(x, 2) if k < 6 else x
        stages.append(x.mean(dim=(2, 3)))
    x = x.mean(dim=3)
    x = x.max(dim=2).values + x.mean(dim=2)
    return F.relu(F.linear(x, state["fc1.weight"], state["fc1.bias"])), stages


def test_official_file_loads_strictly_and_its_weights_are_used(cnn14, files, wave):
    path, state = files["cnn14"]
    cnn14.eval()
    with torch.no_grad():
        before = cnn14(wave).embedding
        cnn14.load_panns(str(path))
        for key, value in cnn14.panns.state_dict().items():
            assert torch.equal(value, state[key]), key
        out = cnn14(wave)
        native, stages = cnn14.panns(wave)
        expected, expected_stages = reference_forward(state, wave)
    assert not torch.allclose(before, out.embedding)
    torch.testing.assert_close(native, expected, rtol=1e-3, atol=1e-3 * expected.abs().max().item())
    for ours, theirs in zip(stages, expected_stages, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-3 * theirs.abs().max().item())
    torch.testing.assert_close(out.embedding, cnn14.project(native))
    scores = cnn14.panns.audioset_scores(wave)
    assert scores.shape == (2, 527) and ((scores > 0) & (scores < 1)).all()


def test_outputs_have_the_contract_shapes(cnn14, frozen, wave):
    for teacher in (cnn14, frozen):
        teacher.eval()
        with torch.no_grad():
            out = teacher(wave)
            again = teacher(wave[:, None])  # (B, 1, L) is the same input as (B, L)
        assert out.logits.shape == (2, 3) and out.embedding.shape == (2, 512)
        assert [s.shape[1] for s in out.stages] == [64, 128, 256, 512, 1024, 2048]
        torch.testing.assert_close(again.logits, out.logits)
        assert (out.embedding >= 0).all() == (teacher.project is None)  # ReLU'd fc1 unless projected
    with pytest.raises(KdbenchError, match=r"\(B, L\) or \(B, 1, L\)"):
        frozen(wave.view(2, 2, -1))


# --------------------------------------------------------------------------- wrong files


def test_wrong_files_are_refused_in_one_line_naming_the_key(cnn14, frozen, files):
    with pytest.raises(KdbenchError, match=r"key 'fc1\.weight' has shape \(512, 2048\).*teacher 'cnn14-emb512'"):
        cnn14.load_panns(str(files["cnn14_emb512"][0]))
    good = files["cnn14_emb512"][1]
    cases = [
        ({k: v for k, v in good.items() if k != "conv_block3.bn1.running_var"},
         r"key 'conv_block3\.bn1\.running_var' is missing"),
        ({**good, "conv_block2.conv1.weight": torch.zeros(128, 64, 5, 5)},
         r"key 'conv_block2\.conv1\.weight' has shape \(128, 64, 5, 5\)"),
        ({**good, "fc_transfer.weight": torch.zeros(3, 512)}, r"unexpected key 'fc_transfer\.weight'"),
        ({**good, "spectrogram_extractor.stft.conv_real.weight": torch.zeros(257, 1, 512)},
         r"key 'spectrogram_extractor\.stft\.conv_real\.weight'.*not Cnn14_16k"),
    ]
    for state, message in cases:
        with pytest.raises(KdbenchError, match=message) as error:
            frozen.load_panns_state(state, "file")
        assert "\n" not in str(error.value)


def test_reading_unwraps_model_strips_module_and_refuses_non_checkpoints(tmp_path):
    w = torch.ones(2)
    torch.save({"iteration": 3, "model": {"module.fc1.bias": w}}, tmp_path / "wrapped.pth")
    torch.save({"fc1.bias": w}, tmp_path / "bare.pth")
    torch.save({"iteration": 3, "model": {"fc1.bias": "x"}}, tmp_path / "strings.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    assert list(read_panns_file(str(tmp_path / "wrapped.pth"), "t")) == ["fc1.bias"]
    assert list(read_panns_file(str(tmp_path / "bare.pth"), "t")) == ["fc1.bias"]
    for name, message in (("strings.pth", "holds no state dict"), ("junk.pth", "unreadable"),
                          ("missing.pth", "does not exist")):
        with pytest.raises(KdbenchError, match=message):
            read_panns_file(str(tmp_path / name), "t")


# --------------------------------------------------------------------------- training: frozen or not


def test_frozen_teacher_loads_by_option_and_trains_only_its_head(frozen, files, wave):
    state = files["cnn14_emb512"][1]
    for key, value in frozen.panns.state_dict().items():
        assert torch.equal(value, state[key]), key
    trainable = {k for k, p in frozen.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}
    frozen.train()
    assert frozen.training and frozen.head.training and not frozen.panns.training
    stats = frozen.panns.conv_block1.bn1.running_mean.clone()
    out = frozen(wave)
    F.cross_entropy(out.logits, torch.tensor([0, 2])).backward()
    assert torch.equal(stats, frozen.panns.conv_block1.bn1.running_mean)  # BN statistics stay the file's
    assert frozen.head.weight.grad is not None and frozen.panns.fc1.weight.grad is None
    with torch.no_grad():  # no dropout inside the frozen network: its features are deterministic
        torch.testing.assert_close(frozen.panns(wave)[0], out.embedding)
    frozen.eval()


def test_unfrozen_teacher_trains_everything_but_the_front_end(cnn14, wave):
    cnn14.train()
    assert cnn14.panns.training
    stats = cnn14.panns.conv_block1.bn1.running_mean.clone()
    cnn14.zero_grad()
    F.cross_entropy(cnn14(wave).logits, torch.tensor([0, 2])).backward()
    assert not torch.equal(stats, cnn14.panns.conv_block1.bn1.running_mean)
    assert cnn14.panns.conv_block1.conv1.weight.grad is not None and cnn14.project.weight.grad is not None
    assert cnn14.panns.logmel_extractor.melW.grad is None
    cnn14.eval()


def test_spec_augment_zeroes_bounded_stripes():
    torch.manual_seed(0)
    y = spec_augment(torch.ones(16, 1, 200, 64))
    zero = y[:, 0] == 0
    frame_gone, bin_gone = zero.all(dim=2), zero.all(dim=1)  # (16, 200) and (16, 64)
    assert (frame_gone.sum(1) <= 2 * 63).all() and (bin_gone.sum(1) <= 2 * 7).all()
    assert frame_gone.any() and bin_gone.any()
    assert torch.equal(zero, frame_gone[:, :, None] | bin_gone[:, None, :])  # whole stripes only, nothing else
    short = spec_augment(torch.ones(4, 1, 10, 64))  # fewer frames than the stripe limit: no error
    assert short.shape == (4, 1, 10, 64)


def test_spec_augment_runs_only_while_training(frozen, wave, monkeypatch):
    import kdbench_plugins.teachers.audio.network as network

    calls = []
    monkeypatch.setattr(network, "spec_augment", lambda t: calls.append(tuple(t.shape)) or t)
    monkeypatch.setattr(frozen, "options", frozen.options.model_copy(update={"spec_augment": True}))
    with torch.no_grad():
        frozen.eval()
        frozen(wave)
        assert calls == []
        frozen.train()  # the frozen network stays in eval mode, but the teacher is training: augment
        frozen(wave)
        frozen.eval()
    assert calls == [(2, 1, frames(CLIP), 64)]
