"""DDP per run, for real: torchrun over gloo on this machine's CPU, two processes (no mocks).

What a 2-process run must equal. The two ranks' j-th batches are together the one-process j-th batch (same
order, see ``loop.RankSampler``), each rank's loss is the mean over its equal half, and the gradients are
averaged over the ranks, so every step is the one-process step, except for what couples the samples *inside*
a batch. Hence two tolerances:

- A student with nothing that couples samples (``tiny-gn`` below: the tiny student with GroupNorm instead of
  BatchNorm, no dropout) gives the one-process run's predictions exactly, and its epoch losses to float
  rounding (the all-reduce sums the halves in another order): relative 1e-5.
- The default student (``tiny-3dcnn``) has BatchNorm, which normalises each rank's 8 clips by their own mean
  and variance instead of the 16 clips' (and rank 0's running statistics are the ones evaluated), and dropout,
  whose masks each rank draws for its own half. Each step is therefore the one-process step perturbed by the
  sampling noise of 8-clip statistics and by other dropout masks: the epoch losses stay within relative 3 %
  (measured over seeds 0-7 of this configuration: at most 1.4 %), and the test accuracy within 0.1 absolute
  (measured: at most 0.07). The accuracy tolerance is the loose one because this student, three epochs in,
  still hovers near chance: its class scores are close, so a perturbation that moves the loss by 1 % can flip
  a handful of the 100 test predictions (one flip is 0.01); the loss is the sharp test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kdbench.engine.checkpoint import load
from kdbench.engine.distributed import run_distributed
from kdbench.engine.teacher_outputs import weights_digest
from tests.conftest import run_process

SMALL = """
epochs = 3
batch_size = 16

[dataset]
name = "synthetic"
train_size = 64
test_size = 100
labelled_fraction = 1.0   # every clip scored: with unscored clips each rank averages its CE over its own (docs)

[teacher_training]
epochs = 1
batch_size = 32
"""

#: a student in which no sample of a batch affects another (installed below as a real plugin)
PROBE = '''
"""``tiny-gn``: the tiny student with GroupNorm and no dropout, for the DDP equivalence test."""

from pydantic import Field
from torch import nn

from kdbench.hookspecs import hookimpl
from kdbench.options import PluginOptions
from kdbench_plugins.shared.tiny import ThreeStageNet, block


class TinyGNOptions(PluginOptions):
    width: int = Field(8, gt=0)
    embedding_dim: int = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class TinyGN(ThreeStageNet):
    """tiny-3dcnn with GroupNorm and no dropout."""

    name = "tiny-gn"
    Options = TinyGNOptions

    def __init__(self, options, info):
        super().__init__(options, info)
        c, w = info.student_input_shape[0], options.width
        blocks = [block(nn.Conv3d(c, w, 3, stride=(1, 2, 2), padding=1, bias=False), nn.GroupNorm(1, w)),
                  block(nn.Conv3d(w, 2 * w, 3, stride=(1, 2, 2), padding=1, bias=False), nn.GroupNorm(1, 2 * w)),
                  block(nn.Conv3d(2 * w, 4 * w, 3, stride=2, padding=1, bias=False), nn.GroupNorm(1, 4 * w))]
        self.build_head(blocks, 4 * w, options, info.num_classes)


@hookimpl
def register_students(register):
    register(TinyGN)
'''


@pytest.fixture(scope="module")
def probe_env(tmp_path_factory) -> dict[str, str]:
    """PYTHONPATH for processes that see the ``tiny-gn`` student, found through its entry point like any plugin."""
    site = tmp_path_factory.mktemp("probe-site")
    (site / "kdbench_ddp_probe.py").write_text(PROBE)
    info = site / "kdbench_ddp_probe-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kdbench-ddp-probe\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[kdbench]\nstudents.probe = kdbench_ddp_probe\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


class Saved:
    """A saved state dict, digested like the module it came from."""

    def __init__(self, state):
        self.state = state

    def state_dict(self):
        return self.state


def students(workdir):
    return {r.data.params["output_dir"]: r for r in workdir.runs() if r.data.tags.get("kdbench.role") == "student"}


def losses(workdir, run) -> list[float]:
    import mlflow

    history = mlflow.MlflowClient(workdir.uri).get_metric_history(run.info.run_id, "loss")
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def test_two_processes_give_the_metrics_of_one_with_the_same_global_batch(workdir, cli, probe_env):
    (workdir.path / "small.toml").write_text(SMALL)
    layer = {"dataset": {"name": "synthetic", "train_size": 64, "test_size": 100, "labelled_fraction": 1.0},
             "epochs": 3, "batch_size": 16,
             "teacher_training": {"epochs": 1, "batch_size": 32}, "distiller": {"name": "kd"},
             "student": {"name": "tiny-gn"}, "seed": 0, "output_dir": "gn-ddp"}
    (workdir.path / "gn.json").write_text(json.dumps(layer))
    run = ("run", "--distiller", "kd", "--dataset", "synthetic", "--config", "small.toml", "--no-progress")
    # two DDP runs at once on this node (each rendezvous on its own free port), each training its teacher on
    # rank 0 (seeds differ, so the teachers do); the API (a config layer resolved by the ranks) and the CLI
    gn_output: list[str] = []
    with ThreadPoolExecutor(2) as pool:
        gn_job = pool.submit(run_distributed, workdir.path / "gn.json", workdir.path / "gn-result.json", 2,
                             env=probe_env, resume=False, log=gn_output.append)
        bn_job = pool.submit(run_process, *run, "--seed", "1", "--nproc-per-node", "2", "--set", "output_dir=bn-ddp",
                             cwd=workdir.path)
        gn, bn = gn_job.result(), bn_job.result()
    assert gn["status"] == "done", gn
    assert "epoch 3/3: loss" in "\n".join(gn_output)  # rank 0's lines, handed over one by one
    assert bn.code == 0, bn.err
    # the same runs in one process, with the teachers the DDP runs cached
    gn_one = run_process(*run, "--student", "tiny-gn", "--seed", "0", "--set", "output_dir=gn-one", env=probe_env,
                         cwd=workdir.path)
    assert gn_one.code == 0, gn_one.err
    bn_one = cli(*run, "--seed", "1", "--set", "output_dir=bn-one")
    assert bn_one.code == 0, bn_one.err

    runs = students(workdir)
    assert sorted(runs) == ["bn-ddp", "bn-one", "gn-ddp", "gn-one"]  # one MLflow run per DDP run
    assert all(r.info.status == "FINISHED" for r in workdir.runs())
    assert [runs[k].data.tags.get("kdbench.ranks") for k in sorted(runs)] == ["2", None, "2", None]
    teachers = [r for r in workdir.runs() if r.data.tags.get("kdbench.role") == "teacher"]
    assert len(teachers) == 2  # trained once each, by a rank 0; the one-process runs found them in the cache
    assert runs["gn-one"].data.tags["kdbench.teacher_source"].startswith("cache:")

    # no sample coupling: the same predictions, the same losses to float rounding
    final = {k.removeprefix("final_"): v for k, v in runs["gn-one"].data.metrics.items() if k.startswith("final_")}
    assert gn["metrics"] == final
    assert losses(workdir, runs["gn-ddp"]) == pytest.approx(losses(workdir, runs["gn-one"]), rel=1e-5)
    # BatchNorm and dropout per rank: within the tolerances argued in the module docstring
    bn_ddp, one = runs["bn-ddp"].data.metrics, runs["bn-one"].data.metrics
    assert losses(workdir, runs["bn-ddp"]) == pytest.approx(losses(workdir, runs["bn-one"]), rel=0.03)
    assert abs(bn_ddp["final_accuracy"] - one["final_accuracy"]) <= 0.1
    assert bn_ddp["teacher_accuracy"] == one["teacher_accuracy"]

    # every rank ended with the same weights, which are the checkpoint's; rank 0 alone wrote it
    [checkpoint] = (workdir.path / "gn-ddp").rglob("checkpoint.pt")
    state = load(checkpoint)
    assert gn["student_weights"] == [weights_digest(Saved(state["student"]))[:16]] * 2
    assert state["run_id"] == gn["run_id"] == runs["gn-ddp"].info.run_id and state["epoch"] == 3
    assert [p.name for p in checkpoint.parent.iterdir()] == ["checkpoint.pt"]
    [bn_checkpoint] = (workdir.path / "bn-ddp").rglob("checkpoint.pt")
    assert load(bn_checkpoint)["run_id"] == runs["bn-ddp"].info.run_id
    # the CLI prints the summary a one-process run prints
    assert bn.out.splitlines()[0] == bn_one.out.splitlines()[0] == "metric    student (kd)  teacher (tiny-eeg)"
    assert f"MLflow run {runs['bn-ddp'].info.run_id} (config " in bn.out


def test_a_batch_that_does_not_split_evenly_is_refused_in_one_line(workdir, cli):
    done = cli("run", "--distiller", "kd", "--dataset", "synthetic", "--config", "tiny.toml", "--nproc-per-node", "2",
               "--set", "batch_size=15")
    assert done.code == 2
    assert done.err == ("kdbench: error: batch_size 15 cannot be split evenly over 2 processes; set a batch_size "
                        "divisible by 2 (e.g. --set batch_size=14) or change --nproc-per-node\n")
    assert workdir.runs() == []


def test_a_rank_that_refuses_is_one_line_and_leaves_no_run(workdir):
    """Rank 0 refuses while preparing; rank 1, waiting for it, sees its collective break. The earlier failure
    is the one reported, and torchrun adds nothing."""
    done = run_process("run", "--distiller", "kd", "--dataset", "synthetic", "--config", "tiny.toml",
                       "--nproc-per-node", "2", "--teacher-checkpoint", "missing.pt", "--no-progress", cwd=workdir.path)
    assert done.code == 2
    assert done.err == "kdbench: error: teacher checkpoint 'missing.pt' does not exist\n"
    assert workdir.runs() == []


def processes_in(folder: Path) -> dict[int, bytes]:
    """The live processes of a DDP run working in ``folder`` (torchrun and its ranks): pid → command line."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes()
            if b"kdbench.engine.distributed" in command and (proc / "cwd").resolve() == folder.resolve():
                found[int(proc.name)] = command
        except OSError:
            continue
    return found


def test_sigterm_stops_the_ranks_and_the_run_ends_killed(workdir):
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdbench", "run", "--distiller", "kd", "--dataset", "synthetic", "--config",
         "tiny.toml", "--epochs", "200", "--nproc-per-node", "2", "--no-progress"],
        cwd=workdir.path, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    lines = []
    deadline = time.monotonic() + 180
    for line in proc.stderr:  # wait until the ranks have finished an epoch
        lines.append(line)
        if line.startswith("epoch 2/200") or time.monotonic() > deadline:
            break
    running = processes_in(workdir.path).values()
    assert len([c for c in running if b"torch.distributed.run" not in c]) == 2, "".join(lines)
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines) + rest
    assert rest.endswith("kdbench: interrupted\n") and "Traceback" not in rest and "rank" not in rest, rest
    [student] = [r for r in workdir.runs() if r.data.tags.get("kdbench.role") == "student"]
    assert student.info.status == "KILLED" and student.data.tags["kdbench.ranks"] == "2"
    [checkpoint] = list((workdir.path / "kdbench-runs").rglob("checkpoint.pt"))
    assert load(checkpoint)["epoch"] >= 1 and load(checkpoint)["run_id"] == student.info.run_id
    assert processes_in(workdir.path) == {}  # the ranks have ended, and torchrun with them
