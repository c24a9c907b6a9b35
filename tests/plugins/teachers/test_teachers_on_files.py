"""Teachers trained on generated datasets in their real file formats (issue 5's paths, at tiny sizes):
``kdbench teacher train`` then a distillation run that uses the trained weights by ``runs:/ID``; SEN learning
from the subject ids the sleep datasets carry."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest

from kdbench.cli import main
from kdbench.contracts import collate
from kdbench_plugins.datasets.sleep.sleepedf import SleepEDF, SleepEDFOptions

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

SMALL = ["--set", "dataset.frames=4", "--set", "dataset.height=32", "--set", "dataset.width=32"]


@pytest.fixture(scope="module")
def s3ve(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("s3ve") / "data"
    assert main(["data", "synth", "s3ve", "--root", str(root), "--subjects", "4", "--seed", "5",
                 "--set", "epochs=12"]) == 0
    return root


@pytest.fixture(scope="module")
def sleepedf(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sleepedf") / "data"
    assert main(["data", "synth", "sleepedf", "--root", str(root), "--subjects", "4", "--seed", "2",
                 "--set", "epochs=16", "--set", "wake_edge=8"]) == 0
    return root


def teacher_run_id(out: str) -> str:
    return out.split("--teacher-checkpoint runs:/")[1].split()[0]


def test_attnsleep_trained_on_s3ve_then_sacd_uses_it(s3ve, workdir, cli):
    trained = cli("teacher", "train", "--teacher", "attnsleep", "--dataset", "s3ve", "--data-root", str(s3ve),
                  "--epochs", "1", "--set", "teacher_training.batch_size=16", "--no-progress", *SMALL)
    assert trained.code == 0, trained.err
    run_id = teacher_run_id(trained.out)
    ran = cli("run", "--distiller", "sacd", "--dataset", "s3ve", "--data-root", str(s3ve), "--student", "tiny-3dcnn",
              "--teacher-checkpoint", f"runs:/{run_id}", "--epochs", "1", "--set", "batch_size=8", "--no-progress",
              *SMALL)
    assert ran.code == 0, ran.err
    assert "teacher: no checkpoint given" not in ran.err            # the trained teacher was used, not retrained
    runs = {r.data.tags["kdbench.role"]: r for r in workdir.runs()}
    assert set(runs) == {"teacher", "student"} and all(r.info.status == "FINISHED" for r in runs.values())
    student = runs["student"]
    assert student.data.tags["kdbench.teacher"] == "attnsleep" and student.data.tags["kdbench.teacher_run_id"] == run_id
    assert student.data.tags["kdbench.teacher_source"].startswith("checkpoint:runs:/")
    # SACD's terms were trained (its loss dict is logged per epoch)
    assert {"loss_ce", "loss_ce_eeg", "loss_jsd", "loss_structure", "loss_contrast"} <= set(student.data.metrics)


def test_sleep_samples_carry_their_subject(sleepedf):
    dataset = SleepEDF(SleepEDFOptions(root=str(sleepedf)), 0)
    train = dataset.split("train")
    subjects = {dataset.reader.nights[int(n)].subject for n in train.night_of}
    assert sorted(set(train.groups.tolist())) == list(range(len(subjects))) and len(subjects) >= 2
    batch = collate([train[i] for i in range(0, len(train), max(1, len(train) // 8))])
    assert batch.group.min() >= 0 and len(set(batch.group.tolist())) >= 2
    # every item of one night has that night's subject id
    for n in np.unique(train.night_of):
        assert len(set(train.groups[train.night_of == n].tolist())) == 1


def test_sen_trains_its_domain_head_on_the_subject_ids(sleepedf, workdir, cli):
    trained = cli("teacher", "train", "--teacher", "sen", "--dataset", "sleepedf", "--data-root", str(sleepedf),
                  "--epochs", "1", "--set", "teacher.filters=8", "--set", "teacher_training.batch_size=32",
                  "--no-progress")
    assert trained.code == 0, trained.err
    [run] = workdir.runs()
    history = mlflow.MlflowClient(workdir.uri).get_metric_history(run.info.run_id, "loss_domain")
    assert len(history) == 1 and history[0].value > 0        # subject cross-entropy through the reversed head
