"""The GPU fast paths, exercised where a CPU can: bf16 autocast, channels_last_3d, torch.compile's wiring, the
loader's pinning and persistent workers, and the settings' validation.

fp16 autocast with its gradient scaler and cuDNN's benchmark mode exist on CUDA only; what is checked for them
here is that a CPU run leaves them off. None of these settings changes what the experiment is: they stay out of
the config hash.
"""

from __future__ import annotations

import pytest
import torch

from kdbench.config import config_hash, parse_set, resolve
from kdbench.engine import fit, loop, prepare
from kdbench.errors import ConfigError
from kdbench.plugins import plugins
from kdbench.tracking import MemoryTracker

TINY = {"dataset": {"name": "synthetic", "train_size": 60, "test_size": 30}, "epochs": 1, "batch_size": 16,
        "teacher_training": {"epochs": 1, "batch_size": 32}, "distiller": {"name": "kd"}}

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def config(tmp_path, *sets):
    return resolve([TINY, {"output_dir": str(tmp_path / "runs")}, *map(parse_set, sets)], plugins())


def quiet(message):
    pass


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_CACHE_DIR", str(tmp_path / "cache"))


def conv_dtypes(student) -> list[torch.dtype]:
    """A hook on the student's first 3-D convolution records the dtype it computes in."""
    seen: list[torch.dtype] = []
    conv = next(m for m in student.modules() if isinstance(m, torch.nn.Conv3d))
    conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


def test_settings_are_validated_and_stay_out_of_the_hash(tmp_path):
    base = config(tmp_path)
    assert (base.amp, base.channels_last, base.compile, base.cudnn_benchmark, base.pin_memory,
            base.persistent_workers) == ("fp16", False, False, False, True, True)
    assert config(tmp_path, "amp=true").amp == "fp16" and config(tmp_path, "amp=false").amp is False
    assert config(tmp_path, "amp=bf16").amp == "bf16"
    for other in ("amp=bf16", "amp=false", "channels_last=true", "compile=true", "cudnn_benchmark=true",
                  "pin_memory=false", "persistent_workers=false"):
        assert config_hash(config(tmp_path, other)) == config_hash(base), other
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, "amp=fp32")
    assert "amp" in str(caught.value) and "'fp16'" in str(caught.value) and "\n" not in str(caught.value)


def test_amp_means_a_dtype_per_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert loop.amp_dtype("fp16", cpu) is None and loop.amp_dtype("fp16", cuda) is torch.float16
    assert loop.amp_dtype("bf16", cpu) is torch.bfloat16 and loop.amp_dtype("bf16", cuda) is torch.bfloat16
    assert loop.amp_dtype(False, cuda) is None
    assert not loop.scaler_for(cpu, None).is_enabled()
    assert not loop.scaler_for(cuda, torch.bfloat16).is_enabled()   # bfloat16 needs no loss scaling


def test_bf16_autocast_runs_the_networks_in_bfloat16_on_cpu(tmp_path, cache):
    """oneDNN is off here: its bfloat16 3-D convolutions give non-finite weight gradients at some small shapes
    on CPUs without native bfloat16 (seen on this AMD EPYC, torch 2.14.1; docs/config.md), a kernel's problem
    that would make this test depend on the machine's CPU. ATen's own kernels run the same autocast path."""
    with torch.backends.mkldnn.flags(enabled=False):
        bf16_run(tmp_path)


def bf16_run(tmp_path):
    default = prepare(config(tmp_path), plugins(), progress=False, echo=quiet)
    assert default.amp is None   # fp16, the default, is CUDA only: a CPU run is float32
    fp32_dtypes = conv_dtypes(default.student)
    fp32 = fit(default, tracker=MemoryTracker(), progress=False, echo=quiet)
    bf16 = prepare(config(tmp_path, "amp=bf16"), plugins(), progress=False, echo=quiet)
    assert bf16.amp is torch.bfloat16 and not bf16.training.scaler.is_enabled()
    dtypes = conv_dtypes(bf16.student)
    result = fit(bf16, tracker=MemoryTracker(), progress=False, echo=quiet)
    assert set(fp32_dtypes) == {torch.float32} and set(dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in bf16.student.parameters())   # weights stay float32
    losses = [result.history[0][k] for k in ("loss", "loss_kd")]
    assert all(torch.isfinite(torch.tensor(v)) for v in losses)
    assert result.history[0]["loss"] != fp32.history[0]["loss"]   # the rounding really changed


def test_channels_last_converts_the_students_convolutions_and_clips(tmp_path, cache):
    plain = prepare(config(tmp_path), plugins(), progress=False, echo=quiet)
    first = fit(plain, tracker=MemoryTracker(), progress=False, echo=quiet)
    fast = prepare(config(tmp_path, "channels_last=true"), plugins(), progress=False, echo=quiet)
    convs = [m.weight for m in fast.student.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in convs)
    seen: list[bool] = []
    first_conv = next(m for m in fast.student.modules() if isinstance(m, torch.nn.Conv3d))
    first_conv.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last_3d)))
    second = fit(fast, tracker=MemoryTracker(), progress=False, echo=quiet)
    assert seen and all(seen)
    # the same arithmetic in another memory order: equal up to float32 summation order over one epoch
    assert second.history[0]["loss"] == pytest.approx(first.history[0]["loss"], rel=1e-4)


def test_compile_routes_the_students_forward_through_torch_compile(tmp_path, cache):
    """The 'eager' backend: dynamo traces the student (what `compile = true` wires in) without generating code
    (inductor's C++ compilation takes minutes on this CPU; on a GPU it is the point)."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    prepared = prepare(config(tmp_path, "compile=true", "compile_backend=eager"), plugins(), progress=False,
                       echo=quiet)
    result = fit(prepared, tracker=MemoryTracker(), progress=False, echo=quiet)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    assert 0.0 <= result.scores.accuracy <= 1.0
    assert not any(k.startswith("_orig_mod.") for k in prepared.student.state_dict())   # checkpoints: plain keys
    torch._dynamo.reset()


def test_loader_pins_only_for_cuda_and_keeps_workers_if_asked():
    split = list(range(8))
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    make = lambda device, **kw: loop.loader(split, 4, shuffle=False, generator=None, num_workers=1,  # noqa: E731
                                            device=device, **kw)
    assert make(cuda).pin_memory and not make(cpu).pin_memory and not make(cuda, pin_memory=False).pin_memory
    assert make(cpu).persistent_workers and not make(cpu, persistent_workers=False).persistent_workers
    assert not loop.loader(split, 4, shuffle=False, generator=None, num_workers=0, device=cpu).persistent_workers
