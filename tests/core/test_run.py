"""Full runs through the CLI on tiny synthetic data: tracking, teacher cache, determinism, resume."""

import json

import pytest

from kdbench.paths import cache_dir
from kdbench_plugins.distillers.kd import KD

RUN = ("run", "--distiller", "kd", "--dataset", "synthetic", "--config", "tiny.toml", "--no-progress")


def by_role(runs, role):
    return [r for r in runs if r.data.tags.get("kdbench.role") == role]


def final(run):
    return {k: v for k, v in run.data.metrics.items() if k.startswith("final_")}


def test_full_run_is_tracked(workdir, cli):
    result = cli(*RUN)
    assert result.code == 0, result.err
    assert "accuracy" in result.out and "student (kd)" in result.out

    runs = workdir.runs()
    [teacher_run], [student_run] = by_role(runs, "teacher"), by_role(runs, "student")
    assert teacher_run.info.status == student_run.info.status == "FINISHED"
    tags = student_run.data.tags
    assert (tags["kdbench.dataset"], tags["kdbench.teacher"], tags["kdbench.student"], tags["kdbench.distiller"],
            tags["kdbench.seed"]) == ("synthetic", "tiny-eeg", "tiny-3dcnn", "kd", "0")
    assert len(tags["kdbench.config_hash"]) == 16 and tags["kdbench.version"]
    import torch

    assert tags["kdbench.threads"] == str(torch.get_num_threads()) and tags["kdbench.device"] == "cpu"
    assert teacher_run.data.tags["kdbench.threads"] == tags["kdbench.threads"]
    assert tags["kdbench.teacher_run_id"] == teacher_run.info.run_id
    assert tags["kdbench.config_hash"] in result.out

    import mlflow

    client = mlflow.MlflowClient(workdir.uri)
    for key in ("accuracy", "mf1", "kappa", "acc_W", "acc_N1", "acc_N2", "acc_N3", "acc_REM", "loss_kd"):
        history = client.get_metric_history(student_run.info.run_id, key)
        assert [m.step for m in history] == [1, 2], key
    assert set(final(student_run)) >= {"final_accuracy", "final_mf1", "final_kappa", "final_acc_REM"}
    assert final(student_run)["final_accuracy"] == student_run.data.metrics["accuracy"]
    assert 0 <= student_run.data.metrics["teacher_accuracy"] <= 1

    artifacts = {a.path for a in client.list_artifacts(student_run.info.run_id)}
    assert {"config.json", "confusion_matrix.png", "confusion_matrix.json"} <= artifacts
    png = client.download_artifacts(student_run.info.run_id, "confusion_matrix.png", str(workdir.path))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    stored = json.load(open(client.download_artifacts(student_run.info.run_id, "config.json", str(workdir.path))))
    assert stored["distiller"] == {"name": "kd", "temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}
    assert student_run.data.params["distiller.temperature"] == "4.0"
    confusion = json.load(open(client.download_artifacts(student_run.info.run_id, "confusion_matrix.json",
                                                         str(workdir.path))))
    assert sum(map(sum, confusion["matrix"])) == 30  # the test split


def test_teacher_is_trained_once_and_reused(workdir, cli):
    assert cli(*RUN).code == 0
    assert len(list((cache_dir() / "teachers").glob("*.pt"))) == 1
    second = cli("run", "--distiller", "baseline", "--dataset", "synthetic", "--config", "tiny.toml", "--no-progress")
    assert second.code == 0 and "reusing" in second.err
    runs = workdir.runs()
    assert len(by_role(runs, "teacher")) == 1 and len(by_role(runs, "student")) == 2
    baseline = next(r for r in by_role(runs, "student") if r.data.tags["kdbench.distiller"] == "baseline")
    assert baseline.data.tags["kdbench.teacher_source"].startswith("cache:")
    # a different seed is a different teacher
    assert cli(*RUN, "--seed", "1").code == 0
    assert len(by_role(workdir.runs(), "teacher")) == 2


def test_a_teacher_run_in_another_store_is_not_named_as_if_it_were_here(workdir, cli, mlflow_template):
    import shutil

    import mlflow

    assert cli(*RUN).code == 0
    [here] = by_role(workdir.runs(), "student")
    other = workdir.path / "other.db"
    shutil.copy(mlflow_template, other)
    assert cli(*RUN, "--tracking-uri", f"sqlite:///{other}", "--set", "output_dir=elsewhere").code == 0
    client = mlflow.MlflowClient(f"sqlite:///{other}")
    [there] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    tags = there.data.tags
    assert tags["kdbench.teacher_source"].startswith("cache:") and "kdbench.teacher_run_id" not in tags
    assert tags["kdbench.teacher_run_elsewhere"] == f"{here.data.tags['kdbench.teacher_run_id']} in {workdir.uri}"
    # the weights are named by what they are, the same in both stores
    assert tags["kdbench.teacher_weights"] == here.data.tags["kdbench.teacher_weights"]


def test_teacher_checkpoint_by_run_uri_and_bad_path(workdir, cli):
    assert cli(*RUN).code == 0
    [teacher_run] = by_role(workdir.runs(), "teacher")
    uri = f"runs:/{teacher_run.info.run_id}"
    again = cli(*RUN, "--teacher-checkpoint", uri, "--set", "output_dir=other")
    assert again.code == 0, again.err
    newest = max(by_role(workdir.runs(), "student"), key=lambda r: r.info.start_time)
    assert newest.data.tags["kdbench.teacher_source"] == f"checkpoint:{uri}"
    assert newest.data.metrics["teacher_accuracy"] == by_role(workdir.runs(), "student")[-1].data.metrics[
        "teacher_accuracy"]
    missing = cli(*RUN, "--teacher-checkpoint", "nowhere.pt")
    assert missing.code == 2 and "checkpoint 'nowhere.pt' does not exist" in missing.err
    # an unreadable file or a folder gets the fix for a teacher checkpoint, not for a damaged resume checkpoint
    (workdir.path / "junk.pt").write_bytes(b"not weights")
    (workdir.path / "folder.pt").mkdir()
    for bad, what in (("junk.pt", "is unreadable"), ("folder.pt", "is a folder, not a weights file")):
        refused = cli(*RUN, "--teacher-checkpoint", bad)
        assert refused.code == 2 and f"teacher checkpoint '{bad}' {what}" in refused.err, refused.err
        assert "--teacher-checkpoint at a teacher file" in refused.err and "delete it" not in refused.err


def test_same_seed_same_metrics(workdir, cli):
    assert cli(*RUN, "--set", "output_dir=a").code == 0
    assert cli(*RUN, "--set", "output_dir=b").code == 0
    first, second = by_role(workdir.runs(), "student")
    assert final(first) == final(second)
    assert first.data.metrics["loss"] == second.data.metrics["loss"]


def test_interrupted_run_resumes_to_the_same_metrics(workdir, cli, monkeypatch):
    three = ("--set", "epochs=3")
    assert cli(*RUN, *three, "--set", "output_dir=straight").code == 0

    original, calls = KD.forward, {"n": 0}

    def dies_in_epoch_two(self, *args):
        calls["n"] += 1
        if calls["n"] == 4 + 2:  # 60 samples / batch 16 = 4 steps an epoch: step 2 of epoch 2
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(KD, "forward", dies_in_epoch_two)
    killed = cli(*RUN, *three, "--set", "output_dir=interrupted")
    assert killed.code == 130 and "interrupted" in killed.err
    interrupted = next(r for r in by_role(workdir.runs(), "student") if r.info.status == "KILLED")
    assert not list((workdir.path / "interrupted").rglob("*.tmp"))  # nothing half-written

    monkeypatch.setattr(KD, "forward", original)
    resumed = cli(*RUN, *three, "--set", "output_dir=interrupted", "--resume")
    assert resumed.code == 0 and "resuming run" in resumed.err and "after epoch 1" in resumed.err

    runs = {r.info.run_id: r for r in by_role(workdir.runs(), "student")}
    assert len(runs) == 2  # resumed in the same MLflow run
    again = runs[interrupted.info.run_id]
    straight = next(r for rid, r in runs.items() if rid != interrupted.info.run_id)
    assert again.info.status == "FINISHED"
    assert final(again) == final(straight) and len(final(again)) == 8
    import mlflow

    client = mlflow.MlflowClient(workdir.uri)
    for key in ("accuracy", "loss"):
        assert [m.value for m in client.get_metric_history(again.info.run_id, key)] == \
               [m.value for m in client.get_metric_history(straight.info.run_id, key)]


def test_a_checkpoint_tracked_in_another_store_continues_there_in_a_new_run(workdir, cli, mlflow_template):
    """The same configuration run again against another store (--tracking-uri) with --resume, as a sweep does: the
    checkpoint's run is not in that store, so its weights and history continue in a new run there, which says
    where they come from (it used to fail: "cannot reopen MLflow run ... not found")."""
    import shutil

    import mlflow

    assert cli(*RUN).code == 0
    [first] = by_role(workdir.runs(), "student")
    shutil.copy(mlflow_template, workdir.path / "other.db")
    other = f"sqlite:///{workdir.path / 'other.db'}"
    again = cli(*RUN, "--tracking-uri", other, "--resume")
    assert again.code == 0, again.err
    assert f"run {first.info.run_id} is not in this tracking store; continuing it in a new run here" in again.err

    client = mlflow.MlflowClient(other)
    [moved] = [r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
               if r.data.tags.get("kdbench.role") == "student"]
    assert moved.info.status == "FINISHED" and moved.info.run_id != first.info.run_id
    assert moved.data.tags["kdbench.continued_from"] == f"run {first.info.run_id} in {workdir.uri}, after epoch 2"
    assert final(moved) == final(first) and len(final(first)) == 8      # the same weights, evaluated again
    assert moved.data.params["tracking.uri"] == other
    assert {k: v for k, v in moved.data.params.items() if k != "tracking.uri"} == \
           {k: v for k, v in first.data.params.items() if k != "tracking.uri"}
    assert moved.data.metrics["teacher_accuracy"] == first.data.metrics["teacher_accuracy"]
    first_client = mlflow.MlflowClient(workdir.uri)
    for key in ("accuracy", "loss"):   # the epochs trained before are in the new run too
        assert [(m.step, m.value) for m in client.get_metric_history(moved.info.run_id, key)] == \
               [(m.step, m.value) for m in first_client.get_metric_history(first.info.run_id, key)]
    assert {a.path for a in client.list_artifacts(moved.info.run_id)} >= {"config.json", "student"}
    [still] = by_role(workdir.runs(), "student")
    assert still.info.status == "FINISHED"                               # the first store is untouched

    # the checkpoint now names the new run and its store: resumed there once more, it reopens that run
    third = cli(*RUN, "--tracking-uri", other, "--resume")
    assert third.code == 0 and "not in this tracking store" not in third.err
    assert len([r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
                if r.data.tags.get("kdbench.role") == "student"]) == 1


@pytest.mark.parametrize("args,message", [
    (("--distiller", "nosuch"), "unknown distiller 'nosuch'"),
    (("--set", "optimizer.lr=-1"), "optimizer.lr = -1: Input should be greater than 0"),
    (("--config", "typo.toml"), "unknown key 'optimizer.lrr': did you mean optimizer.lr?"),
    (("--device", "cuda:7"), "cuda"),
    (("--set", "dataset.train_size=0"), "dataset.train_size = 0"),
])
def test_bad_input_is_one_line_and_leaves_no_run(workdir, cli, args, message):
    (workdir.path / "typo.toml").write_text("[optimizer]\nlrr = 0.1\n")
    flags = dict(zip(["--distiller", "--dataset"], ["kd", "synthetic"]))
    for i in range(0, len(args), 2):
        flags[args[i]] = args[i + 1]
    result = cli("run", *[x for kv in flags.items() for x in kv], "--no-progress")
    assert result.code == 2
    assert result.err.startswith("kdbench: error: ") and message in result.err
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert [r.info.status for r in workdir.runs()] == []
