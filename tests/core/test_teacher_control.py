"""Negative controls of the teacher's knowledge (``teacher_control``): what the distiller receives under each."""

from __future__ import annotations

import pytest
import torch

from kdbench.config import config_hash
from kdbench.engine import fit_teacher_stage, prepare
from kdbench.errors import KdbenchError
from kdbench.plugins import plugins
from kdbench.tracking import MemoryTracker
from tests.core.test_engine import cache, config, quiet  # noqa: F401  (cache is a fixture)


def captured_teacher_outputs(prepared) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Run the training loss over one epoch of batches, keeping the indices and the teacher logits the
    distiller was given."""
    indices, logits = [], []
    forward = prepared.distiller.forward

    def spy(student_out, teacher_out, batch):
        indices.append(batch.index.clone())
        logits.append(teacher_out.logits.detach().clone())
        return forward(student_out, teacher_out, batch)

    prepared.distiller.forward = spy
    with torch.no_grad():
        for batch in prepared.training.train_data:
            prepared.training.loss_fn(batch)
    return indices, logits


def test_the_control_enters_the_hash_only_when_set(tmp_path):
    plain, shuffled, random = (config(tmp_path, "kd", *sets) for sets in
                               ([], ["teacher_control=shuffled"], ["teacher_control=random"]))
    assert plain.teacher_control == "none"
    assert len({config_hash(plain), config_hash(shuffled), config_hash(random)}) == 3
    # "none" leaves the hash as it was before the option existed, so existing stores keep finding their runs
    assert config_hash(config(tmp_path, "kd", "teacher_control=none")) == config_hash(plain)


def test_shuffled_gives_each_sample_another_samples_stored_outputs_once_per_epoch(tmp_path, cache):  # noqa: F811
    first = prepare(config(tmp_path, "kd"), plugins(), progress=False, echo=quiet)
    fit_teacher_stage(first, MemoryTracker(), progress=False, echo=quiet)  # trains the teacher, stores outputs

    honest = prepare(config(tmp_path, "kd"), plugins(), progress=False, echo=quiet)
    shuffled = prepare(config(tmp_path, "kd", "teacher_control=shuffled"), plugins(), progress=False, echo=quiet)
    assert set(shuffled.stored) == {"train", "test"}
    index, given = captured_teacher_outputs(shuffled)
    index, given = torch.cat(index), torch.cat(given)
    stored = shuffled.stored["train"]
    own = stored.lookup(index, torch.device("cpu")).logits
    assert not torch.equal(given, own)  # not the sample's own outputs ...
    all_rows = stored.lookup(torch.arange(len(stored)), torch.device("cpu")).logits
    # ... but every stored row exactly once over the epoch: same marginal statistics, no per-sample knowledge
    assert sorted(map(tuple, given.tolist())) == sorted(map(tuple, all_rows[torch.unique(index)].tolist()))
    moved = (given != own).any(dim=1).float().mean().item()
    assert moved > 0.8
    honest_index, honest_given = captured_teacher_outputs(honest)
    assert torch.equal(torch.cat(honest_given), stored.lookup(torch.cat(honest_index), torch.device("cpu")).logits)


def test_random_uses_an_untrained_teacher_and_says_so(tmp_path, cache):  # noqa: F811
    prepared = prepare(config(tmp_path, "kd", "teacher_control=random"), plugins(), progress=False, echo=quiet)
    assert prepared.source.kind == "random" and prepared.teacher_fit is None
    torch.manual_seed(0)
    tracker = MemoryTracker()
    from kdbench.engine import fit

    fit(prepared, tracker=tracker, progress=False, echo=quiet)
    (run,) = tracker.runs.values()  # no teacher training run
    assert run["tags"]["kdbench.teacher_control"] == "random"
    assert run["tags"]["kdbench.teacher_source"].startswith("random:untrained tiny-eeg")


def test_shuffled_without_stored_outputs_is_refused_in_one_line(tmp_path, cache):  # noqa: F811
    bad = config(tmp_path, "kd", "teacher_control=shuffled", "teacher_cache=false")
    with pytest.raises(KdbenchError, match="teacher_cache is false") as caught:
        prepare(bad, plugins(), progress=False, echo=quiet)
    assert "\n" not in str(caught.value)
