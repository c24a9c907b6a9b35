"""The ``precomputed`` teacher: stored embeddings in, a trained linear probe for logits, no network."""

import pytest
import torch

from kdbench.config import resolve
from kdbench.contracts import FIELDS, Dataset, DatasetInfo
from kdbench.engine import fit, prepare
from kdbench.errors import KdbenchError
from kdbench.plugins import load_plugins
from kdbench_plugins.teachers.precomputed import Precomputed


class StoredEmbeddings(Dataset):
    """A toy dataset whose teacher input is a stored 16-d embedding (class mean + noise)."""

    name = "toy-embeddings"
    default_teacher = "precomputed"
    default_student = "tiny-3dcnn"
    run_defaults = {"epochs": 2, "batch_size": 8,
                    "teacher_training": {"epochs": 10, "batch_size": 8,
                                         "optimizer": {"name": "adam", "lr": 0.01, "weight_decay": 0.0}}}

    def __init__(self, options, seed):
        super().__init__(options, seed)
        self.info = DatasetInfo(("a", "b", "c"), (16,), (1, 4, 8, 8))
        gen = torch.Generator().manual_seed(seed)
        self.means = torch.randn(3, 16, generator=gen) * 3
        self.data = {}
        for split, n in (("train", 48), ("test", 24)):
            label = torch.arange(n) % 3
            self.data[split] = [
                {"teacher": self.means[y] + torch.randn(16, generator=gen), "label": int(y), "index": i,
                 "student": torch.rand(1, 4, 8, 8, generator=gen) + 0.1 * int(y)}
                for i, y in enumerate(label)]

    def split(self, name, fields=FIELDS):
        return self.data[name]

    def fingerprint(self):
        return f"toy-{self.seed}"


@pytest.fixture
def loaded():
    plugins = load_plugins()
    plugins["datasets"].register(StoredEmbeddings, plugin="tests")
    return plugins


def test_embedding_passes_through_and_probe_gives_logits():
    info = DatasetInfo(("a", "b"), (5,), (1, 2, 4, 4))
    teacher = Precomputed(Precomputed.Options(), info)
    x = torch.randn(3, 5)
    out = teacher(x)
    assert torch.equal(out.embedding, x) and out.logits.shape == (3, 2) and out.stages == ()
    normed = Precomputed(Precomputed.Options(normalize=True), info)(x).embedding
    torch.testing.assert_close(normed.norm(dim=1), torch.ones(3))


def test_refuses_a_raw_signal():
    with pytest.raises(KdbenchError, match=r"one stored embedding of shape \(D,\).*\(1, 3000\)"):
        Precomputed(Precomputed.Options(), DatasetInfo(("a",), (1, 3000), (1, 2, 4, 4)))


def test_run_with_stored_embeddings(workdir, loaded):
    config = resolve([{"dataset": {"name": "toy-embeddings"}, "distiller": {"name": "crd"}}], loaded)
    assert config.teacher.name == "precomputed"
    result = fit(prepare(config, loaded, progress=False, echo=lambda m: None), progress=False, echo=lambda m: None)
    # the linear probe on well-separated stored embeddings is near perfect
    assert result.teacher_scores.accuracy > 0.9
    assert 0.0 <= result.scores.accuracy <= 1.0
    [student] = [r for r in workdir.runs() if r.data.tags.get("kdbench.role") == "student"]
    assert student.info.status == "FINISHED" and student.data.tags["kdbench.teacher"] == "precomputed"


def test_a_raw_signal_is_refused_as_an_embedding():
    from kdbench.contracts import DatasetInfo
    from kdbench.errors import KdbenchError
    from kdbench_plugins.teachers.precomputed import Precomputed, PrecomputedOptions

    info = DatasetInfo(tuple("abc"), (320_000,), (3, 4, 8, 8))
    with pytest.raises(KdbenchError, match=r"320000 values per sample \(a raw signal\?\): use a model teacher"):
        Precomputed(PrecomputedOptions(), info)
