"""The EEG teachers of the ``sleep`` plugin: shapes, sizes, stages, gradients, SEN's domain head, a CLI run."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

import kdbench_plugins.teachers.eeg as plugin
from kdbench.contracts import DatasetInfo
from kdbench.errors import KdbenchError
from kdbench_plugins.teachers.eeg import AttnSleepTeacher, DeepSleepNetTeacher, GradientReversal, SENTeacher
from kdbench_plugins.teachers.eeg.common import braindecode_models
from kdbench_plugins.teachers.eeg.attnsleep_deepsleepnet import attnsleep_d_model

CLASSES = ("W", "N1", "N2", "N3", "REM")
TEACHERS = (AttnSleepTeacher, DeepSleepNetTeacher, SENTeacher)


def info(n_times: int = 3000, channels: int = 1) -> DatasetInfo:
    return DatasetInfo(CLASSES, (channels, n_times), (1, 8, 24, 24))


def build(cls, n_times: int = 3000, **options):
    torch.manual_seed(0)
    return cls(cls.Options(**options), info(n_times))


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 1, 3000, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def full() -> dict:
    """Each teacher at its defaults on 3000 samples at 100 Hz (DeepSleepNet's 25 M weights included)."""
    return {cls.name: build(cls) for cls in TEACHERS}


# --------------------------------------------------------------------------- registration and options


def test_hook_registers_the_eeg_teachers_with_one_line_descriptions():
    found = []
    plugin.register_teachers(found.append)
    assert found[:3] == [AttnSleepTeacher, DeepSleepNetTeacher, SENTeacher]
    assert [cls.name for cls in found] == ["attnsleep", "deepsleepnet", "sen", "mc2sleepnet"]
    for cls in found:
        assert cls.__doc__.strip().splitlines()[0].endswith(".")


def test_options_are_described_refuse_unknown_keys_and_default_to_512():
    for cls in TEACHERS:
        fields = cls.Options.model_fields
        assert all(field.description for field in fields.values()), cls.name
        assert not {"name", "checkpoint"} & set(fields)
        assert cls.Options().embedding_dim == 512 and cls.Options().sfreq == 100
        with pytest.raises(ValidationError):
            cls.Options(embeding_dim=512)
    sen = SENTeacher.Options()
    assert (sen.num_domains, sen.grl_lambda, sen.head_width, sen.reduction_ratio) == (60, 0.001, 128, 2)


def test_a_multichannel_or_flat_input_is_refused_in_one_line():
    for cls in TEACHERS:
        for shape in ((2, 3000), (3000,)):
            with pytest.raises(KdbenchError, match="one EEG channel"):
                cls(cls.Options(), DatasetInfo(CLASSES, shape, (1, 8, 24, 24)))
    with pytest.raises(KdbenchError, match=r"deepsleepnet: 1 samples at 100 Hz do not fit its CNN \(n_times=1"):
        build(DeepSleepNetTeacher, n_times=1)


# --------------------------------------------------------------------------- shapes and sizes


@pytest.mark.parametrize("name, stages", [("attnsleep", (256, 30, 30)), ("deepsleepnet", (128, 256, 1024)),
                                          ("sen", (128, 256, 256))])
def test_output_shapes_embedding_and_stages(full, x, name, stages):
    teacher = full[name].eval()
    with torch.no_grad():
        out = teacher(x)
    assert out.logits.shape == (2, 5) and out.embedding.shape == (2, 512)
    assert tuple(s.shape for s in out.stages) == tuple((2, c) for c in stages)
    assert all(torch.isfinite(t).all() for t in (out.logits, out.embedding, *out.stages))
    classifier = teacher.label_head if name == "sen" else teacher.head.classifier
    torch.testing.assert_close(out.logits, classifier(out.embedding))   # the logits read the embedding


def test_attnsleep_core_has_braindecodes_parameter_count(full):
    core = full["attnsleep"].core
    assert n_params(core) == 510_800                                    # return_feats=True: no final layer
    assert core.len_last_layer == 2400
    assert n_params(braindecode_models().AttnSleep(sfreq=100, n_times=3000, n_outputs=5)) == 522_805
    head = 2400 * 512 + 512 + 512 * 5 + 5
    assert n_params(full["attnsleep"]) == 510_800 + head


def test_deepsleepnet_core_is_braindecodes_at_100_hz(full):
    core = full["deepsleepnet"].core
    reference = braindecode_models().DeepSleepNet(return_feats=True, n_chans=1, n_times=3000, sfreq=100)
    assert n_params(core) == n_params(reference) == 24_739_712
    first_small, first_large = core.cnn1.conv1[0], core.cnn2.conv1[0]     # paper: Fs/2, Fs/16; 4 Fs, Fs/2
    assert (first_small.kernel_size, first_small.stride, first_small.padding) == ((1, 50), (1, 6), (0, 22))
    assert (first_large.kernel_size, first_large.stride, first_large.padding) == ((1, 400), (1, 50), (0, 175))
    assert isinstance(core.cnn2.conv1[2], torch.nn.ReLU)                # the paper's ReLU, not braindecode's ELU
    assert n_params(full["deepsleepnet"]) == n_params(reference) + 1024 * 512 + 512 + 512 * 5 + 5


def test_deepsleepnet_filters_follow_the_sampling_rate():
    core = build(DeepSleepNetTeacher, n_times=3840, sfreq=128, bilstm_hidden_size=8).core
    assert (core.cnn1.conv1[0].kernel_size, core.cnn1.conv1[0].stride) == ((1, 64), (1, 8))
    assert (core.cnn2.conv1[0].kernel_size, core.cnn2.conv1[0].stride) == ((1, 512), (1, 64))


def test_sen_layer_sizes_match_sen_dal(full):
    """Weights counted from SEN-DAL's layer list (methods.md §2), 64 filters, 100 Hz, 3000 samples."""
    bn = lambda c: 2 * c                                                 # noqa: E731
    conv = lambda c_in, c_out, k, bias: c_in * c_out * k + (c_out if bias else 0)  # noqa: E731
    small = conv(1, 64, 50, False) + bn(64) + conv(64, 128, 8, True) + 2 * conv(128, 128, 8, True) + 3 * bn(128)
    large = conv(1, 64, 400, False) + bn(64) + conv(64, 128, 6, True) + 2 * conv(128, 128, 6, True) + 3 * bn(128)
    fusion = (256 * 128 + 128) + (128 * 256 + 256)                      # SE over both streams, r = 2
    project = 128 * (16 + 8) * 512 + 512                                # streams end with 16 and 8 steps
    label = (512 * 128 + 128) + (128 * 5 + 5)
    domain = (512 * 128 + 128) + (128 * 60 + 60)
    assert n_params(full["sen"]) == small + large + fusion + project + label + domain == 2_383_809


def test_sen_streams_reproduce_sen_dal_lengths_at_128_hz():
    """SEN-DAL's 90-s EOG input at 128 Hz (11 520 samples) ends in 45 and 23 steps with 'same' padding."""
    teacher = build(SENTeacher, n_times=11_520, sfreq=128, filters=4).eval()
    x = torch.randn(1, 1, 11_520)
    with torch.no_grad():
        assert teacher.small(x)[2].shape == (1, 8, 45) and teacher.large(x)[2].shape == (1, 8, 23)
        assert teacher(x).embedding.shape == (1, 512)


# --------------------------------------------------------------------------- AttnSleep's d_model


def test_attnsleep_d_model_is_derived_and_braindecode_accepts_it_silently():
    assert (attnsleep_d_model(3000, 100), attnsleep_d_model(3750, 125), attnsleep_d_model(3840, 128)) == (80, 100, 101)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shhs = build(AttnSleepTeacher, n_times=3750, sfreq=125).eval()
        odd = build(AttnSleepTeacher, n_times=3840, sfreq=128, n_attn_heads=1).eval()
    assert [str(w.message) for w in caught] == []
    with torch.no_grad():
        assert shhs(torch.randn(1, 1, 3750)).stages[2].shape == (1, 30) and shhs.core.len_last_layer == 3000
        assert odd(torch.randn(1, 1, 3840)).embedding.shape == (1, 512) and odd.core.len_last_layer == 3030


def test_attnsleep_refuses_settings_braindecode_cannot_build():
    with pytest.raises(KdbenchError, match=r"d_model=101.*n_attn_heads=5.*one of \[1\]"):
        build(AttnSleepTeacher, n_times=3840, sfreq=128)
    with pytest.raises(KdbenchError, match="too short"):
        build(AttnSleepTeacher, n_times=1)


def test_attnsleep_stages_are_its_modules_pooled_over_time(full, x):
    teacher = full["attnsleep"].eval()
    with torch.no_grad():
        out = teacher(x)
        assert teacher._taps.store == {}                                 # no activation kept after forward
        mrcnn, tce = teacher.core.feature_extractor
        small, large = mrcnn.features1(x), mrcnn.features2(x)
        afr = mrcnn(x)
        torch.testing.assert_close(out.stages[0], torch.cat((small.mean(-1), large.mean(-1)), 1))
        torch.testing.assert_close(out.stages[1], afr.mean(-1))
        torch.testing.assert_close(out.stages[2], tce(afr).mean(-1))


def test_authors_init_is_applied_to_attnsleep():
    def norms(core):
        return torch.cat([m.weight for m in core.modules() if isinstance(m, torch.nn.BatchNorm1d)])

    core = build(AttnSleepTeacher).core
    convs = torch.cat([m.weight.flatten() for m in core.modules() if isinstance(m, torch.nn.Conv1d)])
    assert abs(convs.std().item() - 0.02) < 0.001 and abs(convs.mean().item()) < 0.001
    assert abs(norms(core).mean().item() - 1) < 0.01 and 0.01 < norms(core).std().item() < 0.03
    assert torch.equal(norms(build(AttnSleepTeacher, original_init=False).core), torch.ones(len(norms(core))))


# --------------------------------------------------------------------------- gradients and copies


@pytest.mark.parametrize("cls, options", [(AttnSleepTeacher, {}), (DeepSleepNetTeacher, {"bilstm_hidden_size": 16}),
                                          (SENTeacher, {"filters": 8})])
def test_gradients_reach_the_first_convolution(x, cls, options):
    teacher = build(cls, **options).train()
    out = teacher(x)
    (F.cross_entropy(out.logits, torch.tensor([0, 3])) + sum(s.square().mean() for s in out.stages)).backward()
    first = {"attnsleep": lambda t: t.core.feature_extractor[0].features1[0],
             "deepsleepnet": lambda t: t.core.cnn2.conv1[0], "sen": lambda t: t.large.first[0]}[cls.name](teacher)
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
    # braindecode (like the authors' code) builds three causal convs per attention but uses only the
    # last two, so convs.0 never gets a gradient; SEN's domain head waits for subject labels.
    idle = [n for n, p in teacher.named_parameters() if p.grad is None]
    assert all(".self_attn.convs.0." in n or n.startswith("domain_head.") for n in idle), idle
    assert len(idle) == {"attnsleep": 4, "deepsleepnet": 0, "sen": 4}[cls.name]


def test_a_deep_copy_keeps_its_own_taps(full, x):
    teacher = full["attnsleep"].eval()
    clone = copy.deepcopy(teacher)
    with torch.no_grad():
        a, b = teacher(x), clone(x)
    torch.testing.assert_close(a.stages, b.stages)
    assert clone._taps.store is not teacher._taps.store and teacher._taps.store == {} == clone._taps.store


# --------------------------------------------------------------------------- SEN's domain head


def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward():
    x = torch.randn(4, 3, requires_grad=True)
    upstream = torch.randn(4, 3)
    y = GradientReversal(0.001)(x)
    assert torch.equal(y, x)
    y.backward(upstream)
    torch.testing.assert_close(x.grad, -0.001 * upstream)


def test_sen_domain_head_reverses_its_gradient_into_the_encoder(x):
    teacher = build(SENTeacher, filters=8, num_domains=7).eval()
    embedding = teacher(x).embedding
    domain = teacher.domain_logits(embedding)
    assert domain.shape == (2, 7)
    target = torch.tensor([1, 5])
    project = teacher.project.weight
    reversed_grad, head_grad = torch.autograd.grad(F.cross_entropy(domain, target),
                                                   (project, teacher.domain_head[1].weight), retain_graph=True)
    plain = teacher.domain_head[1:](embedding)                          # the same head without the reversal
    plain_grad, plain_head_grad = torch.autograd.grad(F.cross_entropy(plain, target),
                                                      (project, teacher.domain_head[1].weight))
    torch.testing.assert_close(reversed_grad, -0.001 * plain_grad)
    torch.testing.assert_close(head_grad, plain_head_grad)              # the head itself learns normally
    assert plain_grad.abs().sum() > 0


def test_label_training_leaves_the_domain_head_untouched(x):
    """Cross-entropy on the logits alone never reaches the domain head."""
    teacher = build(SENTeacher, filters=8).train()
    F.cross_entropy(teacher(x).logits, torch.tensor([2, 4])).backward()
    assert all(p.grad is None for p in teacher.domain_head.parameters())
    assert teacher.label_head[0].weight.grad.abs().sum() > 0


def _batch(x, group):
    from kdbench.contracts import Batch

    n = x.shape[0]
    return Batch(torch.zeros(n, 1), x, torch.tensor([2, 4][:n]), torch.arange(n), torch.tensor(group))


def test_sen_adds_the_subject_loss_to_teacher_training_when_subjects_are_known(x):
    teacher = build(SENTeacher, filters=8, num_domains=7, domain_weight=0.5).train()
    out = teacher(x)
    terms = teacher.training_losses(out, _batch(x, [3, 6]))
    expected = 0.5 * F.cross_entropy(teacher.domain_logits(out.embedding), torch.tensor([3, 6]))
    torch.testing.assert_close(terms["domain"], expected)
    terms["domain"].backward()
    assert teacher.domain_head[1].weight.grad.abs().sum() > 0
    out = teacher.eval()(x)
    only_one = teacher.training_losses(out, _batch(x, [-1, 2]))                  # unknown subjects are left out
    torch.testing.assert_close(only_one["domain"], 0.5 * F.cross_entropy(
        teacher.domain_logits(out.embedding[1:]), torch.tensor([2])))
    assert teacher.training_losses(out, _batch(x, [-1, -1])) == {}
    with pytest.raises(KdbenchError, match=r"7 domain outputs but the data has subject id 9; set --set "
                                           r"teacher.num_domains=N"):
        teacher.training_losses(out, _batch(x, [9, 0]))


# --------------------------------------------------------------------------- end to end


def test_attnsleep_teaches_a_synthetic_run_through_the_cli(workdir, cli):
    result = cli("run", "--distiller", "kd", "--dataset", "synthetic", "--config", "tiny.toml", "--no-progress",
                 "--teacher", "attnsleep", "--epochs", "1")
    assert result.code == 0, result.err
    assert "teacher epoch 1/1" in result.out + result.err and "teacher (attnsleep)" in result.out
