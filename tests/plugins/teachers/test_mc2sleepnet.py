"""The MC2SleepNet teacher. Epoch level: shapes, the spectrogram, InfoNCE, gradients, refusals, a CLI run.
Sequence level: shapes, the centre epoch, padding, cross-masking and its loss, gradients, a teacher-training run."""

from __future__ import annotations

import copy
import math

import kdbench_plugins.teachers.eeg as plugin
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kdbench_plugins.teachers.eeg import MC2SleepNetTeacher
from kdbench_plugins.teachers.eeg.mc2sleepnet import (
    LogSpectrogram,
    choose_masked,
    info_nce,
    masked_count,
    sinusoidal_positions,
)
from pydantic import ValidationError

from kdbench.cli import main
from kdbench.contracts import Batch, DatasetInfo
from kdbench.errors import KdbenchError

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
    assert sum(p.numel() for p in teacher.parameters()) == 3_046_730      # as documented; nothing of the sequence part
    assert not hasattr(teacher, "sequence_signal") and teacher.sequence_length == 1
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
    ((2, 1, 3000), {}, "odd number of epochs >= 3"),
    ((1, 1, 3000), {}, "odd number of epochs >= 3"),
    ((3, 2, 3000), {}, "reads one EEG channel"),
    ((3, 1, 3000), {"sequence_heads": 3, "d_model": 16, "n_heads": 2}, "divisible by sequence_heads=3"),
    ((3, 1, 3000), {"masking_heads": 3, "d_model": 16, "n_heads": 2}, "divisible by masking_heads=3"),
    ((1, 3000), {"sequence_heads": 3}, None),                  # sequence settings do not matter for one epoch
])
def test_unusable_settings_are_refused_in_one_line(shape, options, says):
    if says is None:
        MC2SleepNetTeacher(MC2SleepNetTeacher.Options(**options), DatasetInfo(CLASSES, shape, (1, 8, 24, 24)))
        return
    with pytest.raises(KdbenchError) as error:
        MC2SleepNetTeacher(MC2SleepNetTeacher.Options(**options), DatasetInfo(CLASSES, shape, (1, 8, 24, 24)))
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


# --------------------------------------------------------------------------- sequence mode (teacher input (L, 1, n))

#: a small sequence model: 20 Hz epochs of 600 samples (STFT 40/20 samples, 64 points -> 33 x 29), width 16
TINY = {"sfreq": 20, "n_fft": 64, "d_model": 16, "n_heads": 2, "n_layers": 1, "ffn_dim": 32, "sequence_layers": 1,
        "sequence_heads": 2, "sequence_ffn_dim": 32, "masking_heads": 2}
TINY_SETS = [a for k, v in TINY.items() for a in ("--set", f"teacher.{k}={v}")]


def sequence_teacher(length: int = 3, **options) -> MC2SleepNetTeacher:
    torch.manual_seed(0)
    return MC2SleepNetTeacher(MC2SleepNetTeacher.Options(**{**TINY, **options}),
                              DatasetInfo(CLASSES, (length, 1, 600), (1, 600)))


@pytest.fixture(scope="module")
def xs() -> torch.Tensor:
    return torch.randn(4, 3, 1, 600, generator=torch.Generator().manual_seed(2))


def test_sequence_mode_shapes_stages_and_parameters(xs):
    teacher = sequence_teacher().eval()
    out = teacher(xs)
    assert out.logits.shape == (4, 5) and out.embedding.shape == (4, 512)
    assert tuple(s.shape[1] for s in out.stages) == (64, 128, 192, 256, 256, 32, 32)
    assert all(torch.isfinite(t).all() for t in (out.logits, out.embedding, *out.stages))
    assert len(teacher.sequence_signal.layers) == len(teacher.sequence_spectral.layers) == 1
    assert teacher.sequence_positions.shape == (3, 16) and teacher.last_reconstruction_loss is None
    full = MC2SleepNetTeacher(MC2SleepNetTeacher.Options(), DatasetInfo(CLASSES, (3, 1, 3000), (1, 3000)))
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert (count(full), count(full.sequence_signal), count(full.masking)) == (6_592_714, 1_575_936, 394_112)
    o = full.options
    assert (o.sequence_layers, o.sequence_heads, o.sequence_ffn_dim, o.masking_layers, o.masking_heads,
            o.mask_ratio, o.reconstruction_weight) == (4, 8, 1024, 1, 4, 0.25, 1.0)


def test_the_centre_epoch_decides_and_its_neighbours_count(xs):
    teacher = sequence_teacher().eval()
    with torch.no_grad():
        base = teacher(xs).logits
        for position in (1, 0, 2):                   # the centre, then each neighbour
            changed = xs.clone()
            changed[0, position] = torch.randn(1, 600, generator=torch.Generator().manual_seed(9))
            logits = teacher(changed).logits
            assert not torch.allclose(logits[0], base[0], atol=1e-5)
            torch.testing.assert_close(logits[1:], base[1:])      # eval mode: samples do not mix
        # the centre's CNN stages and epoch tokens are the centre epoch's alone
        stages, centre_only = teacher(xs).stages, teacher.signal(xs[:, 1])[0]
        torch.testing.assert_close(stages[0], centre_only[0].mean(-1))


def test_zero_epochs_are_padding_that_nothing_reads(xs):
    teacher = sequence_teacher().eval()
    padded = xs.clone()
    padded[0, 0] = 0                  # before the recording's start
    padded[1, 2] = 0                  # after its end
    padded[2, 1] = 0                  # a flat centre epoch still counts as the item's epoch
    seen = {}
    teacher.signal.register_forward_pre_hook(lambda module, args: seen.update(encoded=args[0].shape[0]))
    teacher.sequence_signal.register_forward_pre_hook(lambda module, args: seen.update(pad=args[1].clone()))
    with torch.no_grad():
        out = teacher(padded)
    expected = torch.zeros(4, 3, dtype=torch.bool)
    expected[0, 0] = expected[1, 2] = True
    assert seen["encoded"] == 10 and torch.equal(seen["pad"], expected)   # the keys no attention may read
    assert all(torch.isfinite(t).all() for t in (out.logits, *out.stages))
    with torch.no_grad():
        alone = teacher(padded[:1])       # the same alone as in the batch
    torch.testing.assert_close(alone.logits[0], out.logits[0], atol=1e-5, rtol=1e-4)
    teacher.train()
    teacher(padded)
    assert torch.isfinite(teacher.last_reconstruction_loss)


def test_masking_hides_a_quarter_per_sample_drawn_from_torch_rng():
    assert [masked_count(n, 0.25) for n in (3, 5, 7, 9, 16, 31)] == [1, 1, 2, 2, 4, 8]
    assert masked_count(3, 0.9) == 2 and masked_count(2, 0.01) == 1        # at least 1, never all
    torch.manual_seed(5)
    chosen = choose_masked(64, 7, 2)
    torch.manual_seed(5)
    assert torch.equal(chosen, choose_masked(64, 7, 2))
    assert chosen.shape == (64, 2) and bool((chosen[:, 0] != chosen[:, 1]).all()) and int(chosen.max()) <= 6
    assert len({tuple(sorted(row)) for row in chosen.tolist()}) > 5                # per sample, not one choice
    assert not torch.equal(chosen, choose_masked(64, 7, 2))


def test_cross_masking_loss_in_training_only(xs):
    teacher = sequence_teacher(7)
    seen = []
    teacher.masking.register_forward_pre_hook(lambda module, args: seen.append(args[1].clone()))
    x7 = torch.randn(4, 7, 1, 600, generator=torch.Generator().manual_seed(3))
    batch = Batch(torch.zeros(4, 1), x7, torch.tensor([0, 1, 2, 3]), torch.arange(4))
    teacher.train()
    torch.manual_seed(11)
    out = teacher(x7)
    loss = teacher.last_reconstruction_loss
    assert torch.isfinite(loss) and loss > 0 and loss.requires_grad
    assert [m.sum(1).tolist() for m in seen] == [[2] * 4, [2] * 4]         # each modality in turn, 2 of 7 epochs
    assert set(teacher.training_losses(out, batch)) == {"alignment", "reconstruction"}
    torch.manual_seed(11)
    teacher(x7)
    torch.testing.assert_close(teacher.last_reconstruction_loss, loss)      # seeded by torch's RNG
    torch.testing.assert_close(seen[2], seen[0])
    teacher.eval()
    out = teacher(x7)
    assert teacher.last_reconstruction_loss is None and set(teacher.training_losses(out, batch)) == {"alignment"}


def test_reconstruction_weight_and_reductions(xs):
    batch = Batch(torch.zeros(4, 1), xs, torch.tensor([0, 1, 2, 3]), torch.arange(4))
    losses = {}
    for options in ({}, {"reconstruction_reduction": "sum"}, {"reconstruction_tokens": "all", "reconstruction_reduction": "sum"},
                    {"reconstruction_weight": 0.5}):
        teacher = sequence_teacher(**options).train()
        torch.manual_seed(4)
        out = teacher(xs)
        losses[tuple(options.values())] = (teacher.last_reconstruction_loss, teacher.training_losses(out, batch))
    (total, terms) = losses[()]
    torch.testing.assert_close(terms["reconstruction"], total)
    torch.testing.assert_close(total, losses[("sum",)][0] / (4 * 1 * 16))   # 4 samples x 1 masked epoch x 16
    assert losses[("all", "sum")][0] > losses[("sum",)][0]                                     # every epoch, the masked one included
    torch.testing.assert_close(losses[(0.5,)][1]["reconstruction"], 0.5 * total)
    teacher = sequence_teacher(reconstruction_weight=0.0).train()
    out = teacher(xs)
    assert teacher.last_reconstruction_loss is None and set(teacher.training_losses(out, batch)) == {"alignment"}
    assert copy.deepcopy(sequence_teacher().train()).last_reconstruction_loss is None


def test_sequence_losses_reach_both_branches_and_both_sequence_encoders(xs):
    teacher = sequence_teacher(dropout=0.0).train()
    params = {"cnn": teacher.signal.stages[0][0].weight, "spectral": teacher.spectral.embed.weight,
              "signal sequence": teacher.sequence_signal.layers[0].self_attn.in_proj_weight,
              "spectral sequence": teacher.sequence_spectral.layers[0].self_attn.in_proj_weight,
              "signal cross": teacher.sequence_signal.layers[0].cross_attn.in_proj_weight,
              "spectral cross": teacher.sequence_spectral.layers[0].cross_attn.in_proj_weight}
    for name, loss in (("cross-entropy", lambda out: F.cross_entropy(out.logits, torch.tensor([0, 1, 2, 3]))),
                       ("reconstruction", lambda out: teacher.last_reconstruction_loss)):
        teacher.zero_grad(set_to_none=True)
        loss(teacher(xs)).backward()
        for where, p in params.items():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} does not reach the {where}"
    assert teacher.masking.token.grad.abs().sum() > 0
    assert teacher.masking.layers[0].cross_attn.in_proj_weight.grad.abs().sum() > 0


def test_a_sequence_of_the_wrong_shape_is_refused_in_one_line(xs):
    with pytest.raises(KdbenchError, match=r"expected input \(batch, 3, 1, 600\), got \(4, 1, 600\)"):
        sequence_teacher()(xs[:, 0])


@pytest.fixture(scope="module")
def sleepedf(tmp_path_factory):
    root = tmp_path_factory.mktemp("sleepedf-mc2") / "data"
    assert main(["data", "synth", "sleepedf", "--root", str(root), "--subjects", "4", "--set", "epochs=16",
                 "--set", "wake_edge=8"]) == 0
    return root


def test_teacher_training_on_sequences_logs_both_auxiliary_losses(sleepedf, workdir, cli):
    result = cli("teacher", "train", "--teacher", "mc2sleepnet", "--dataset", "sleepedf", "--data-root", str(sleepedf),
                 "--set", "dataset.context=1", "--set", "dataset.rate=20", "--epochs", "1", "--no-progress",
                 "--set", "teacher_training.batch_size=32", *TINY_SETS, "--tracking-uri", workdir.uri)
    assert result.code == 0, result.err
    [run] = [r for r in workdir.runs() if r.data.tags.get("kdbench.role") == "teacher"]
    metrics = run.data.metrics
    assert metrics["loss_reconstruction"] > 0 and metrics["loss_alignment"] > 0 and "final_accuracy" in metrics
    assert run.data.params["dataset.context"] == "1"
