"""The epoch-level MC2SleepNet teacher: shapes, the spectrogram, InfoNCE, gradients, refusals, a CLI run."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

import kdbench_plugins.sleep as plugin
from kdbench.contracts import DatasetInfo
from kdbench.errors import KdbenchError
from kdbench_plugins.sleep import MC2SleepNetTeacher
from kdbench_plugins.sleep.mc2sleepnet import LogSpectrogram, info_nce, sinusoidal_positions

CLASSES = ("W", "N1", "N2", "N3", "REM")
WIDTHS = (64, 128, 192, 256, 256, 256)


def info(n_times: int = 3000, channels: int = 1) -> DatasetInfo:
    return DatasetInfo(CLASSES, (channels, n_times), (1, 8, 24, 24))


def build(n_times: int = 3000, **options) -> MC2SleepNetTeacher:
    torch.manual_seed(0)
    return MC2SleepNetTeacher(MC2SleepNetTeacher.Options(**options), info(n_times))


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 1, 3000, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def teacher() -> MC2SleepNetTeacher:
    return build()


# --------------------------------------------------------------------------- registration and options


def test_hook_registers_it_with_a_one_line_description():
    found = []
    plugin.register_teachers(found.append)
    assert MC2SleepNetTeacher in found and MC2SleepNetTeacher.name == "mc2sleepnet"
    assert MC2SleepNetTeacher.__doc__.strip().splitlines()[0].endswith(".")


def test_options_are_described_refuse_unknown_keys_and_default_to_the_code():
    fields = MC2SleepNetTeacher.Options.model_fields
    assert all(field.description for field in fields.values())
    assert not {"name", "checkpoint"} & set(fields)
    o = MC2SleepNetTeacher.Options()
    assert (o.sfreq, o.embedding_dim, o.d_model, o.n_layers, o.n_heads, o.ffn_dim, o.dropout) == \
        (100, 512, 128, 4, 8, 1024, 0.1)
    assert (o.stft_window_s, o.stft_hop_s, o.n_fft) == (2.0, 1.0, 256)
    with pytest.raises(ValidationError):
        MC2SleepNetTeacher.Options(n_layer=4)


# --------------------------------------------------------------------------- shapes and layers


def test_output_shapes_embedding_and_stage_widths(teacher, x):
    out = teacher(x)
    assert out.logits.shape == (2, 5) and out.embedding.shape == (2, 512)
    assert tuple(s.shape for s in out.stages) == tuple((2, w) for w in WIDTHS)
    assert all(torch.isfinite(t).all() for t in (out.logits, out.embedding, *out.stages))


def test_backbone_pools_by_five_and_keeps_every_sample(teacher, x):
    maps, token = teacher.signal(x)
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 3000), (128, 600), (192, 120), (256, 24), (256, 5)]
    assert token.shape == (2, 128)
    layers = [sum(isinstance(m, torch.nn.Conv1d) for m in stage.modules()) for stage in teacher.signal.stages]
    assert layers == [2, 2, 3, 3, 3]


def test_spectrogram_is_129_by_29_and_matches_a_framewise_fft(teacher, x):
    spec = teacher.spectrogram(x)
    assert spec.shape == (2, 129, 29)
    signal = x[0, 0].double().numpy()
    frames = np.stack([signal[t * 100: t * 100 + 200] * np.hamming(200) for t in range(29)])
    reference = 20 * np.log10(np.abs(np.fft.rfft(frames, n=256, axis=1)).T)
    np.testing.assert_allclose(spec[0].double().numpy(), reference, atol=1e-3)


def test_stft_settings_follow_the_sampling_rate():
    assert LogSpectrogram(250, 125, 256)(torch.randn(1, 1, 3750)).shape == (1, 129, 29)    # SHHS, 125 Hz
    teacher = build(3750, sfreq=125)
    assert teacher.spectrogram.window.shape == (250,) and teacher.spectrogram.hop == 125
    assert teacher.spectral.positions.shape == (29, 128)


def test_positions_are_sin_on_even_and_cos_on_odd_features():
    code = sinusoidal_positions(29, 128)
    assert torch.allclose(code[3, 0], torch.tensor(math.sin(3.0))) and torch.allclose(code[3, 1],
                                                                                        torch.tensor(math.cos(3.0)))
    assert torch.allclose(code[5, 2], torch.tensor(math.sin(5 / 10000 ** (2 / 128))))


def test_a_smaller_transformer_is_an_option(x):
    small = build(n_layers=1, d_model=32, n_heads=4, ffn_dim=64)
    assert len(small.spectral.layers) == 1
    assert tuple(s.shape[1] for s in small(x).stages) == (64, 128, 192, 256, 256, 64)


# --------------------------------------------------------------------------- InfoNCE alignment


def test_info_nce_is_finite_symmetric_and_has_the_closed_form_value():
    eye = torch.eye(2)
    assert torch.allclose(info_nce(eye, eye, 1.0), torch.tensor(math.log(1 + math.exp(-1))))
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 32, generator=g), torch.randn(16, 32, generator=g)
    loss = info_nce(a, b, 0.1)
    assert torch.isfinite(loss) and loss > 0
    assert torch.allclose(loss, info_nce(b, a, 0.1), atol=1e-6)


def test_info_nce_is_lower_for_aligned_pairs_than_for_shuffled_pairs():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 32, generator=g)
    b = a + 0.1 * torch.randn(16, 32, generator=g)
    shuffled = b[torch.roll(torch.arange(16), 1)]
    assert info_nce(a, b, 0.1) < 0.1 < info_nce(a, shuffled, 0.1)


def test_forward_stores_the_alignment_of_its_two_tokens(x):
    teacher = build()
    assert teacher.last_alignment_loss is None
    fused = teacher(x).stages[-1]
    expected = info_nce(fused[:, :128], fused[:, 128:], teacher.options.temperature)
    assert torch.allclose(teacher.last_alignment_loss, expected)
    assert teacher.last_alignment_loss.requires_grad
    assert copy.deepcopy(teacher).last_alignment_loss is None        # a graph is never deep-copied


# --------------------------------------------------------------------------- gradients


def test_cross_entropy_and_alignment_each_reach_both_branches(x):
    teacher = build()
    first_conv, spectral_in = teacher.signal.stages[0][0].weight, teacher.spectral.embed.weight
    for loss in (lambda out: F.cross_entropy(out.logits, torch.tensor([2, 4])),
                 lambda out: teacher.last_alignment_loss):
        teacher.zero_grad(set_to_none=True)
        loss(teacher(x)).backward()
        assert first_conv.grad.abs().sum() > 0 and spectral_in.grad.abs().sum() > 0


def test_teacher_training_adds_the_weighted_alignment(x):
    from kdbench.contracts import Batch

    teacher = build(alignment_weight=0.25)
    batch = Batch(torch.zeros(2, 1), x, torch.tensor([2, 4]), torch.arange(2))
    assert teacher.training_losses(None, batch) == {}                      # nothing before the first forward
    out = teacher(x)
    terms = teacher.training_losses(out, batch)
    torch.testing.assert_close(terms["alignment"], 0.25 * teacher.last_alignment_loss)
    assert build(alignment_weight=0.0).training_losses(out, batch) == {}


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("shape, options, says", [
    ((1, 100), {}, "shorter than one 200-sample STFT window"),
    ((2, 3000), {}, "reads one EEG channel"),
    ((1, 3000), {"n_fft": 128}, "n_fft=128 is shorter"),
    ((1, 3000), {"n_heads": 3}, "divisible by n_heads=3"),
])
def test_unusable_settings_are_refused_in_one_line(shape, options, says):
    with pytest.raises(KdbenchError) as error:
        MC2SleepNetTeacher(MC2SleepNetTeacher.Options(**options), info(shape[1], shape[0]))
    assert says in str(error.value) and "\n" not in str(error.value)


def test_an_input_of_the_wrong_length_is_refused_in_one_line(teacher):
    with pytest.raises(KdbenchError, match=r"expected input \(batch, 1, 3000\), got \(2, 1, 150\)"):
        teacher(torch.randn(2, 1, 150))


# --------------------------------------------------------------------------- end to end


def test_mc2sleepnet_teaches_a_synthetic_run_through_the_cli(workdir, cli):
    result = cli("run", "--distiller", "kd", "--dataset", "synthetic", "--config", "tiny.toml", "--no-progress",
                 "--teacher", "mc2sleepnet", "--epochs", "1")
    assert result.code == 0, result.err
    assert "teacher epoch 1/1" in result.out + result.err and "teacher (mc2sleepnet)" in result.out
