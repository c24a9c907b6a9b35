"""Stored teacher outputs: computed once per (teacher weights, data, split), reused by every later run."""

import numpy as np
import pytest
import torch

from kdbench.paths import cache_dir
from kdbench.engine.teacher_outputs import TeacherOutputs
from kdbench_plugins.teachers.tiny_eeg import TinyEEGNet

TINY = ("--dataset", "synthetic", "--config", "tiny.toml", "--no-progress")


@pytest.fixture
def forwards(monkeypatch):
    """Counts calls of the synthetic teacher's forward (one call = one batch through the network)."""
    calls = {"n": 0}
    original = TinyEEGNet.forward

    def counting(self, x):
        calls["n"] += 1
        return original(self, x)

    monkeypatch.setattr(TinyEEGNet, "forward", counting)
    return calls


def stored_dirs():
    root = cache_dir() / "teacher-outputs"
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


def test_second_run_with_another_distiller_makes_no_teacher_forward(workdir, cli, forwards):
    assert cli("run", "--distiller", "kd", *TINY).code == 0
    first = forwards["n"]
    assert first > 0 and len(stored_dirs()) == 2  # train and test splits

    forwards["n"] = 0
    second = cli("run", "--distiller", "crd", *TINY)
    assert second.code == 0, second.err
    assert forwards["n"] == 0
    assert "teacher outputs: one pass" not in second.err
    print(f"teacher forward calls: first run {first}, second run {forwards['n']}")

    runs = [r for r in workdir.runs() if r.data.tags.get("kdbench.role") == "student"]
    accuracies = {r.data.metrics["teacher_accuracy"] for r in runs}
    assert len(accuracies) == 1  # the teacher's test metrics from stored outputs equal the live ones


def test_stored_outputs_equal_a_live_forward(workdir, cli):
    assert cli("run", "--distiller", "kd", *TINY).code == 0
    from kdbench.config import resolve
    from kdbench.engine.build import build_dataset, build_model
    from kdbench.engine.checkpoint import load
    from kdbench.engine.teacher import cached_path
    from kdbench.plugins import plugins

    import tomllib

    from tests.conftest import TINY as TINY_TOML

    config = resolve([tomllib.loads(TINY_TOML), {"distiller": {"name": "kd"}}], plugins())
    dataset = build_dataset(config, plugins())
    teacher = build_model("teacher", config, plugins(), dataset.info)
    teacher.load_state_dict(load(cached_path(config, dataset))["state_dict"])
    teacher.eval()
    split = dataset.split("train")
    x = torch.stack([split[i]["teacher"] for i in range(len(split))])
    with torch.no_grad():
        live = teacher(x)
    kept = next(TeacherOutputs(p) for p in stored_dirs() if len(TeacherOutputs(p)) == len(split))
    np.testing.assert_allclose(kept.embedding, live.embedding.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kept.logits, live.logits.numpy(), rtol=1e-5, atol=1e-6)
    assert [s.shape[1] for s in kept.stages] == [s.shape[1] for s in live.stages]
    looked_up = kept.lookup(torch.tensor([5, 0, 7]), torch.device("cpu"))
    torch.testing.assert_close(looked_up.embedding, live.embedding[[5, 0, 7]], rtol=1e-5, atol=1e-6)


def test_new_teacher_weights_never_meet_old_outputs(workdir, cli, forwards):
    assert cli("run", "--distiller", "kd", *TINY).code == 0
    forwards["n"] = 0
    # another seed trains another teacher: its outputs are computed anew, under another key
    assert cli("run", "--distiller", "kd", *TINY, "--seed", "1").code == 0
    assert forwards["n"] > 0 and len(stored_dirs()) == 4
    # other data (another fingerprint) means another teacher (its weights are keyed by the data too) and
    # so another pair of stored outputs
    assert cli("run", "--distiller", "kd", *TINY, "--set", "dataset.test_size=31").code == 0
    assert len(stored_dirs()) == 6


def test_cache_can_be_turned_off(workdir, cli, forwards):
    assert cli("run", "--distiller", "kd", *TINY).code == 0
    forwards["n"] = 0
    assert cli("run", "--distiller", "kd", *TINY, "--set", "teacher_cache=false", "--set", "output_dir=x").code == 0
    # 60 training samples / batch 16 = 4 steps an epoch, 2 epochs, + 2 test batches for its metrics + 1 probe
    assert forwards["n"] == 4 * 2 + 2 + 1


def test_weights_digest_sees_every_tensor_kind():
    from kdbench.engine.teacher_outputs import weights_digest

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))  # float weights and a 0-d long counter
    before = weights_digest(net)
    assert before == weights_digest(net)
    net[1].num_batches_tracked += 1
    assert weights_digest(net) != before
    net[1].num_batches_tracked -= 1
    with torch.no_grad():
        net[0].weight[0, 0] += 1e-6
    assert weights_digest(net) != before


def test_an_interrupted_pass_leaves_nothing_to_read(workdir, cli, monkeypatch):
    original = TinyEEGNet.forward

    def dies_in_the_outputs_pass(self, x):
        if x.shape[0] == 16:  # only the outputs pass uses the run's batch size (teacher training uses 32)
            raise KeyboardInterrupt
        return original(self, x)

    monkeypatch.setattr(TinyEEGNet, "forward", dies_in_the_outputs_pass)
    assert cli("run", "--distiller", "kd", *TINY).code == 130
    root = cache_dir() / "teacher-outputs"
    assert list(root.iterdir()) == []  # neither a partial key directory nor a temporary one
    monkeypatch.setattr(TinyEEGNet, "forward", original)
    assert cli("run", "--distiller", "kd", *TINY).code == 0
    assert len(stored_dirs()) == 2
