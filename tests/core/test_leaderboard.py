"""``kdbench leaderboard``: a sweep file's cells matched to their FINISHED student runs, aggregated over seeds,
rendered as Markdown, LaTeX, long CSV and a self-contained HTML page, and logged as a leaderboard run.

Two stores are built once for the module. ``real`` holds tiny ``kdbench run``s on synthetic data: their numbers
are whatever training gives, and the tests recompute them from the store. ``designed`` holds runs logged with
the MLflow client with chosen scores, so that the best entries, ties, the paper's differences and the paired
intervals are known in advance (plus runs that must not count: older, FAILED, teacher-role, other experiment).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from kdbench.cli import main
from tests.conftest import TINY

TINY = TINY.replace("epochs = 2\n", "epochs = 1\n", 1)  # conftest's tiny runs, one student epoch
assert "epochs = 1\nbatch_size = 16" in TINY
TINY_SET = """
[set]
epochs = 1
batch_size = 16
"dataset.train_size" = 60
"dataset.test_size" = 30
"teacher_training.epochs" = 1
"teacher_training.batch_size" = 32
"""


def cells(*blocks: str) -> str:
    return "\n".join(f"[[cells]]\n{block.strip()}\n" for block in blocks)


REAL = f"""
title = "Tiny & real: synthetic_EEG → video"
seeds = [0, 1]
group_by = "teacher"
{TINY_SET}
""" + cells('group = "-"\nrow = "Baseline"\ndataset = "synthetic"\ndistiller = "baseline"',
            'group = "tiny"\nrow = "KD"\ndataset = "synthetic"\ndistiller = "kd"',
            'group = "tiny"\nrow = "KD T2"\ndataset = "synthetic"\ndistiller = "kd"\n'
            'set = { "distiller.temperature" = 2.0 }',
            'group = "tiny"\nrow = "KD T8"\ndataset = "synthetic"\ndistiller = "kd"\n'
            'set = { "distiller.temperature" = 8.0 }')
#: the runs made for REAL: (row, distiller, seed, --set items); KD T2 has one seed of two, KD T8 none
REAL_RUNS = [("Baseline", "baseline", 0, ()), ("Baseline", "baseline", 1, ()), ("KD", "kd", 0, ()),
             ("KD", "kd", 1, ()), ("KD T2", "kd", 0, ("distiller.temperature=2.0",))]
CLASSES = ["W", "N1", "N2", "N3", "REM"]

DESIGNED = """
title = "Designed"
paper = "paper.csv"
seeds = [0, 1, 2]
labels = { kd = "KD", fitnet = "FitNet" }
""" + cells('group = "-"\nrow = "Baseline"\ndataset = "synthetic"\ndistiller = "baseline"',
            'group = "A"\ndataset = "synthetic"\ndistiller = ["kd", "fitnet"]',
            'group = "B"\nrow = "KD T2"\ndataset = "synthetic"\ndistiller = "kd"\n'
            'set = { "distiller.temperature" = 2.0 }',
            'group = "B"\nrow = "KD T8"\ndataset = "synthetic"\ndistiller = "kd"\n'
            'set = { "distiller.temperature" = 8.0 }')
#: row → (distiller, --set items, {seed: (accuracy, mf1, kappa)}); FitNet lacks seed 2, KD T8 has no run.
#: KD and FitNet tie on MF1 (0.375 exactly); FitNet has the best accuracy of group A, KD the best κ.
DESIGN = {
    "Baseline": ("baseline", (), {0: (0.50, 0.25, 0.20), 1: (0.52, 0.25, 0.22), 2: (0.55, 0.25, 0.25)}),
    "KD": ("kd", (), {0: (0.60, 0.375, 0.30), 1: (0.61, 0.375, 0.31), 2: (0.66, 0.375, 0.33)}),
    "FitNet": ("fitnet", (), {0: (0.70, 0.25, 0.28), 1: (0.72, 0.5, 0.29)}),
    "KD T2": ("kd", ("distiller.temperature=2.0",), {0: (0.58, 0.3, 0.27), 1: (0.58, 0.3, 0.27),
                                                       2: (0.58, 0.3, 0.27)}),
    "KD T8": ("kd", ("distiller.temperature=8.0",), {}),
}
PAPER = """group,row,metric,value,std
A,KD,accuracy,62.0,0.5
A,KD,kappa,0.30,
-,Baseline,accuracy,50.0,
Z,Ghost,accuracy,1.0,
"""


@dataclass
class Store:
    folder: Path
    uri: str
    sweep: Path
    hashes: dict  # (row, seed) → config hash, for the designed store


def confusion_of(seed: int, accuracy: float) -> list[list[int]]:
    """A designed confusion matrix: 10 samples per class, mostly right, the rest on the next class."""
    right = round(10 * accuracy)
    return [[right if j == i else (10 - right if j == (i + 1) % 5 else 0) for j in range(5)] for i in range(5)]


def per_class(accuracy: float) -> dict[str, float]:
    return {"W": accuracy + 0.125, "N1": accuracy - 0.25, "N2": accuracy, "N3": accuracy, "REM": accuracy}


@pytest.fixture(scope="module")
def real(tmp_path_factory, mlflow_template) -> Store:
    folder = tmp_path_factory.mktemp("leaderboard-real")
    shutil.copy(mlflow_template, folder / "mlflow.db")
    (folder / "tiny.toml").write_text(TINY)
    (folder / "real.toml").write_text(REAL)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("KDBENCH_CACHE_DIR", str(folder / "cache"))
        for _, distiller, seed, sets in REAL_RUNS:
            args = ["run", "--distiller", distiller, "--dataset", "synthetic", "--config", "tiny.toml", "--seed",
                    str(seed), "--no-progress", "--tracking-uri", uri, *(x for s in sets for x in ("--set", s))]
            assert main(args) == 0, args
    return Store(folder, uri, folder / "real.toml", {})


def dry_run_hash(distiller: str, seed: int, sets: tuple[str, ...]) -> str:
    """The config hash `kdbench run --dry-run` prints: what a real run of the cell would be tagged with."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["run", "--dry-run", "--distiller", distiller, "--dataset", "synthetic", "--seed", str(seed),
                     *(x for s in sets for x in ("--set", s))]) == 0
    return re.search(r"# config hash (\w+)", out.getvalue()).group(1)


def log_run(client, experiment_id: str, digest: str, seed: int, accuracy: float, mf1: float, kappa: float, *,
            start: int, status: str = "FINISHED", role: str = "student") -> str:
    from mlflow.entities import Metric

    run = client.create_run(experiment_id, start_time=start, tags={
        "kdbench.role": role, "kdbench.config_hash": digest, "kdbench.seed": str(seed)})
    scores = {"accuracy": accuracy, "mf1": mf1, "kappa": kappa,
              **{f"acc_{c}": v for c, v in per_class(accuracy).items()}}
    client.log_batch(run.info.run_id, metrics=[Metric(f"final_{k}", v, start, 0) for k, v in scores.items()])
    client.log_dict(run.info.run_id, {"class_names": CLASSES, "matrix": confusion_of(seed, accuracy)},
                    "confusion_matrix.json")
    client.set_terminated(run.info.run_id, status, end_time=start + 1)
    return run.info.run_id


@pytest.fixture(scope="module")
def designed(tmp_path_factory, mlflow_template) -> Store:
    import mlflow

    from kdbench.tracking import experiment_id

    folder = tmp_path_factory.mktemp("leaderboard-designed")
    shutil.copy(mlflow_template, folder / "mlflow.db")
    (folder / "designed.toml").write_text(DESIGNED)
    (folder / "paper.csv").write_text(PAPER)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    here, elsewhere = experiment_id(uri, "kdbench"), experiment_id(uri, "other")
    hashes = {(row, seed): dry_run_hash(distiller, seed, sets)
              for row, (distiller, sets, _) in DESIGN.items() for seed in (0, 1, 2)}
    start = 1_700_000_000_000
    for row, (_, _, scores) in DESIGN.items():
        for seed, (accuracy, mf1, kappa) in scores.items():
            start += 1000
            log_run(client, here, hashes[row, seed], seed, accuracy, mf1, kappa, start=start)
    kd0 = hashes["KD", 0]  # none of these may count for KD seed 0 (0.60, logged above)
    log_run(client, here, kd0, 0, 0.10, 0.1, 0.1, start=1_600_000_000_000)  # an older FINISHED run
    log_run(client, here, kd0, 0, 0.99, 0.1, 0.1, start=start + 1000, status="FAILED")
    log_run(client, here, kd0, 0, 0.98, 0.1, 0.1, start=start + 2000, role="teacher")
    log_run(client, elsewhere, kd0, 0, 0.97, 0.1, 0.1, start=start + 3000)
    return Store(folder, uri, folder / "designed.toml", hashes)


def board(cli, store: Store, *args: str):
    result = cli("leaderboard", str(store.sweep), "--tracking-uri", store.uri, *args)
    assert result.code == 0, result.err
    return result


def long_rows(text: str) -> dict[tuple[str, str, str], dict[str, str]]:
    return {(r["group"], r["row"], r["metric"]): r for r in csv.DictReader(io.StringIO(text))}


def md_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in text.splitlines()
            if line.startswith("| ")]


# --------------------------------------------------------------------------- real runs


def test_real_runs_are_aggregated_over_seeds(real, cli):
    import mlflow

    client = mlflow.MlflowClient(real.uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = [r for r in client.search_runs(experiments)
            if r.data.tags.get("kdbench.role") == "student" and r.info.status == "FINISHED"]
    assert len(runs) == len(REAL_RUNS)

    def row_of(run):
        temperature = run.data.params.get("distiller.temperature")
        return {"baseline": "Baseline", "kd": {"4.0": "KD", "2.0": "KD T2"}.get(temperature)}[
            run.data.tags["kdbench.distiller"]]

    rows = long_rows(board(cli, real, "--format", "csv").out)
    for label in ("Baseline", "KD", "KD T2"):
        mine = [r for r in runs if row_of(r) == label]
        group = "-" if label == "Baseline" else "tiny"
        for metric in ("accuracy", "mf1", "kappa", *(f"acc_{c}" for c in CLASSES)):
            scale = 1 if metric == "kappa" else 100
            values = np.array([r.data.metrics[f"final_{metric}"] * scale for r in mine])
            got = rows[group, label, metric]
            assert int(got["n"]) == len(values) and got["seeds"] == "2"
            assert float(got["mean"]) == pytest.approx(values.mean(), rel=1e-7, abs=1e-9)
            if len(values) > 1:
                assert float(got["std"]) == pytest.approx(values.std(ddof=1), rel=1e-7, abs=1e-9)
            else:
                assert got["std"] == ""
    assert rows["tiny", "KD T8", "accuracy"]["n"] == "0" and rows["tiny", "KD T8", "accuracy"]["mean"] == ""
    # the paired comparison, from the store's accuracies seed by seed
    by_seed = {(row_of(r), int(r.data.tags["kdbench.seed"])): r.data.metrics["final_accuracy"] * 100 for r in runs}
    diffs = [by_seed["KD", s] - by_seed["Baseline", s] for s in (0, 1)]
    paired = rows["tiny", "KD", "accuracy_vs_baseline"]
    assert (paired["baseline_group"], paired["baseline_row"], paired["n"]) == ("-", "Baseline", "2")
    assert float(paired["mean"]) == pytest.approx(np.mean(diffs), abs=1e-9)
    if np.std(diffs) > 0:
        low, high = stats.t.interval(0.95, 1, loc=np.mean(diffs), scale=stats.sem(diffs))
        assert (float(paired["low"]), float(paired["high"])) == pytest.approx((low, high), abs=1e-7)
    one = rows["tiny", "KD T2", "accuracy_vs_baseline"]
    assert one["n"] == "1" and one["low"] == one["high"] == ""
    assert float(one["mean"]) == pytest.approx(by_seed["KD T2", 0] - by_seed["Baseline", 0], abs=1e-9)


def test_markdown_shows_the_papers_layout_with_short_and_missing_entries(real, cli):
    out = board(cli, real).out
    rows = md_rows(out)
    assert rows[0] == ["Teacher", "Method", "n", "Accuracy", "MF1", "κ", *CLASSES, "Δacc vs baseline"]
    body = rows[1:]
    assert [r[1] for r in body] == ["Baseline", "KD", "KD T2", "KD T8"]
    assert [r[0] for r in body] == ["-", "tiny", "", ""]  # a group's label on its first row only
    assert [r[2] for r in body] == ["2", "2", "1/2†", "0/2"]
    assert set(body[3][3:-1]) == {"—"} and body[3][-1] == "—"
    assert "—" not in body[2][3:-1] and "±" not in body[2][3]  # one seed: a mean, no spread
    assert body[0][-1] == "baseline"
    assert "1 of 4 entries have no finished run" in out
    assert "† fewer finished seeds than the table asks for" in out and "tiny / KD T2" in out


def test_seeds_flag_overrides_the_files_seeds(real, cli):
    rows = md_rows(board(cli, real, "--seeds", "0").out)[1:]
    assert [r[2] for r in rows] == ["1", "1", "1", "0/1"]


def test_set_flag_matches_runs_made_with_the_same_set(real, cli):
    """--set is part of each cell's config hash, as in `kdbench sweep`: runs made without it do not match."""
    other = board(cli, real, "--set", "epochs=2")
    assert other.code == 0, other.err
    assert [r[2] for r in md_rows(other.out)[1:]] == ["0/2", "0/2", "0/2", "0/2"]
    same = board(cli, real, "--set", "epochs=1")   # what the runs were made with (TINY): they match again
    assert [r[2] for r in md_rows(same.out)[1:]] == ["2", "2", "1/2†", "0/2"]


def test_html_page_is_self_contained_with_a_confusion_matrix_per_entry(real, cli, tmp_path):
    import mlflow

    from kdbench.leaderboard.html import normalised, summed_confusion
    from kdbench.leaderboard.stats import compute

    result = board(cli, real, "--format", "html", "--out", str(tmp_path))
    page = (tmp_path / "leaderboard.html").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaderboard.html"]
    parsed = Page()
    parsed.feed(page)
    assert parsed.tags.count("table") == 1 and parsed.tags.count("thead") == 1
    assert not {"script", "link", "iframe", "object", "embed"} & set(parsed.tags)
    assert all("://" not in value and not value.startswith("//") for value in parsed.values), "an external URL"
    assert "http" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert len(parsed.rows) == 1 + 4  # the header and one row per entry (no paper numbers here)
    assert len(parsed.images) == 3  # one per entry with runs; KD T8 has none
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "no finished run" in page and "1 of 4 entries have no finished run" in page
    assert "wrote" in result.out

    # the confusion matrix shown is the sum of the entry's runs' artifacts, row-normalised
    from kdbench.leaderboard.collect import prepare, read

    lines = compute(read(prepare(str(real.sweep), None, {"tracking": {"uri": real.uri}})))
    baseline = lines[0]
    client = mlflow.MlflowClient(real.uri)
    expected = np.zeros((5, 5))
    for run in baseline.entry.runs.values():
        (tmp_path / run.run_id).mkdir()
        path = client.download_artifacts(run.run_id, "confusion_matrix.json", str(tmp_path / run.run_id))
        expected += np.array(json.loads(Path(path).read_text())["matrix"])
    names, total, count = summed_confusion(baseline)
    assert names == CLASSES and count == 2 and (total == expected).all() and total.sum() == 60
    assert np.allclose(normalised(total).sum(axis=1), 1.0)


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.values, self.images, self.rows = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.values += [value or "" for _, value in attrs]
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag == "tr":
            self.rows.append(tag)


def test_latex_is_a_booktabs_table_with_escaped_labels(real, cli):
    tex = board(cli, real, "--format", "latex").out
    assert r"\caption{Tiny \& real: synthetic\_EEG $\to$ video}" in tex
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == 1
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    lines = tex.splitlines()
    positions = [lines.index(rule) for rule in (r"\toprule", r"\midrule", r"\bottomrule")]
    assert positions == sorted(positions)
    spec = re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1)
    assert spec == "ll" + "r" + "r" * 8 + "l"
    rows = [line for line in lines[positions[0] + 1:positions[2]] if line.endswith(r"\\")]
    assert len(rows) == 1 + 4
    for row in rows:
        assert len(re.findall(r"(?<!\\)&", row)) == len(spec) - 1, row
        assert row.count("{") == row.count("}"), row
    assert r"1/2$^\dagger$" in tex and r"\textbf{" in tex
    assert tex.count("{") == tex.count("}")


# --------------------------------------------------------------------------- designed runs


def test_designed_runs_best_paper_and_paired_interval(designed, cli):
    result = board(cli, designed, "--format", "csv")
    rows = long_rows(result.out)
    assert "'Z', row 'Ghost'" in result.err  # the paper's numbers for an entry the table lacks
    # the newest FINISHED student run of each config counts: not the older one, nor FAILED, teacher or elsewhere
    kd = rows["A", "KD", "accuracy"]
    assert float(kd["mean"]) == pytest.approx(np.mean([60, 61, 66]))
    assert float(kd["std"]) == pytest.approx(np.std([60, 61, 66], ddof=1))
    assert kd["n"] == "3" and (float(kd["paper"]), float(kd["paper_std"])) == (62.0, 0.5)
    assert float(kd["diff"]) == pytest.approx(np.mean([60, 61, 66]) - 62.0)
    kappa = rows["A", "KD", "kappa"]
    assert float(kappa["mean"]) == pytest.approx(np.mean([0.30, 0.31, 0.33]))
    assert float(kappa["diff"]) == pytest.approx(np.mean([0.30, 0.31, 0.33]) - 0.30)
    assert rows["A", "FitNet", "accuracy"]["n"] == "2" and rows["B", "KD T8", "accuracy"]["n"] == "0"
    for row, baseline_seeds in (("KD", (0, 1, 2)), ("FitNet", (0, 1)), ("KD T2", (0, 1, 2))):
        group = "B" if row == "KD T2" else "A"
        scores = DESIGN[row][2]
        diffs = [100 * (scores[s][0] - DESIGN["Baseline"][2][s][0]) for s in baseline_seeds]
        mean, sem = np.mean(diffs), stats.sem(diffs)
        low, high = stats.t.interval(0.95, len(diffs) - 1, loc=mean, scale=sem) if sem > 0 else (mean, mean)
        paired = rows[group, row, "accuracy_vs_baseline"]
        assert int(paired["n"]) == len(diffs)
        assert float(paired["mean"]) == pytest.approx(mean)
        assert (float(paired["low"]), float(paired["high"])) == pytest.approx((low, high))

    md = board(cli, designed).out
    table = md_rows(md)
    assert table[0][:3] == ["Group", "Method", "n"] and table[0][3:11] == ["Accuracy", "MF1", "κ", *CLASSES]
    by_label, group, row = {}, None, None
    for line in table[1:]:  # our line of an entry, then the paper's line under it if the paper reports it
        group = line[0] or group
        row = row if line[1] == "↳ paper (Δ)" else line[1]
        by_label[group, row if line[1] != "↳ paper (Δ)" else "paper of " + row] = line
    kd, fitnet = by_label["A", "KD"], by_label["A", "FitNet"]
    assert kd[3] == "62.3 ± 3.21" and fitnet[3].startswith("**71.0**")  # accuracy: FitNet leads group A
    assert kd[4].startswith("**37.5**") and fitnet[4].startswith("**37.5**")  # MF1: a tie, both bold
    assert kd[5].startswith("**0.31**") and not fitnet[5].startswith("**")  # κ: KD leads
    assert by_label["B", "KD T2"][3].startswith("**58.0**") and by_label["B", "KD T8"][3] == "—"
    assert by_label["-", "Baseline"][3].startswith("**52.3**")
    assert fitnet[2] == "2/3†"
    assert by_label["A", "paper of KD"][3:6] == ["62.0 ± 0.5 (+0.3)", "", "0.30 (+0.01)"]  # as printed in the CSV
    assert by_label["-", "paper of Baseline"][3] == "50.0 (+2.3)"
    assert kd[-1] == "+10.0 [+7.5, +12.5] (n=3)"
    assert by_label["A", "FitNet"][-1] == "+20.0 [+20.0, +20.0] (n=2)"
    assert by_label["B", "KD T8"][-1] == "—" and by_label["-", "Baseline"][-1] == "baseline"
    assert "1 of 5 entries have no finished run" in md and "- / Baseline for 4 rows" in md


def test_the_rendering_is_logged_as_a_finished_leaderboard_run(designed, cli, tmp_path):
    import mlflow

    from kdbench.sweep.plan import student_runs

    result = board(cli, designed, "--out", str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"leaderboard.{s}" for s in ("csv", "html", "md", "tex")]
    run_id = re.search(r"logged as MLflow run (\w+)", result.err).group(1)
    client = mlflow.MlflowClient(designed.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["kdbench.role"] == "leaderboard" and run.data.tags["kdbench.table"] == "designed"
    assert run.data.metrics["entries"] == 5 and run.data.metrics["entries_missing"] == 1
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"leaderboard.md", "leaderboard.tex", "leaderboard.csv", "leaderboard.html", "sweep"} <= artifacts
    logged = Path(client.download_artifacts(run_id, "leaderboard.md", str(tmp_path / "dl")))
    assert logged.read_text() == (tmp_path / "leaderboard.md").read_text()
    # the sweep's done-detection counts student runs only
    assert run_id not in student_runs(designed.uri, {"kdbench"})[0].values()
    assert designed.hashes["KD", 1] in student_runs(designed.uri, {"kdbench"})[0]


@pytest.mark.parametrize("error, status, code", [(RuntimeError("boom"), "FAILED", None),
                                                 (KeyboardInterrupt(), "KILLED", 130)])
def test_a_rendering_that_fails_ends_its_run_failed_or_killed(designed, cli, monkeypatch, error, status, code):
    import mlflow

    from kdbench.leaderboard import stats as leaderboard_stats

    def broken(board):
        raise error

    monkeypatch.setattr(leaderboard_stats, "compute", broken)
    client = mlflow.MlflowClient(designed.uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    before = {r.info.run_id for r in client.search_runs(experiments, "tags.`kdbench.role` = 'leaderboard'")}
    if code is None:
        with pytest.raises(RuntimeError, match="boom"):
            cli("leaderboard", str(designed.sweep), "--tracking-uri", designed.uri)
    else:
        assert cli("leaderboard", str(designed.sweep), "--tracking-uri", designed.uri).code == code
    [new] = [r for r in client.search_runs(experiments, "tags.`kdbench.role` = 'leaderboard'")
             if r.info.run_id not in before]
    assert new.info.status == status


# --------------------------------------------------------------------------- bad input and empty stores


def test_bad_input_is_refused_in_one_line(designed, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    unknown = cli("leaderboard", "nosuchtable", "--tracking-uri", designed.uri)
    assert unknown.code == 2 and "no table named 'nosuchtable'" in unknown.err
    assert len(unknown.err.strip().splitlines()) == 1
    missing = cli("leaderboard", "missing.toml", "--tracking-uri", designed.uri)
    assert missing.code == 2 and "does not exist" in missing.err
    nowhere = tmp_path / "nowhere" / "mlflow.db"
    no_store = cli("leaderboard", str(designed.sweep), "--tracking-uri", f"sqlite:///{nowhere}")
    assert no_store.code == 2 and "no MLflow store" in no_store.err and len(no_store.err.strip().splitlines()) == 1
    assert not nowhere.parent.exists()  # reading a leaderboard creates no store
    seeds = cli("leaderboard", str(designed.sweep), "--tracking-uri", designed.uri, "--seeds", "0,x")
    assert seeds.code == 2 and "--seeds" in seeds.err
    formats = cli("leaderboard", str(designed.sweep), "--tracking-uri", designed.uri, "--format", "md",
                  "--format", "csv")
    assert formats.code == 2 and "--out" in formats.err


def test_a_store_without_runs_renders_every_entry_missing(designed, cli, tmp_path, mlflow_template):
    shutil.copy(mlflow_template, tmp_path / "empty.db")
    result = cli("leaderboard", str(designed.sweep), "--tracking-uri", f"sqlite:///{tmp_path / 'empty.db'}")
    assert result.code == 0, result.err
    rows = md_rows(result.out)[1:]
    ours = [r for r in rows if r[1] != "↳ paper (Δ)"]
    assert len(ours) == 5 and all(set(r[3:11]) == {"—"} for r in ours)
    assert md_rows(result.out)[0][3:11] == ["Accuracy", "MF1", "κ", *CLASSES]  # the dataset's classes
    assert "5 of 5 entries have no finished run" in result.out
    paper = [r for r in rows if r[1] == "↳ paper (Δ)"]
    assert paper[0][3] == "50.0"  # the paper's number alone: nothing to subtract it from


def test_a_table_name_and_the_minimal_file_form(designed, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "leaderboards").mkdir()
    (tmp_path / "leaderboards" / "tinyboard_min.toml").write_text('[grid]\ndataset = "synthetic"\ndistiller = "kd"\n')
    result = cli("leaderboard", "tinyboard", "--tracking-uri", designed.uri)
    assert result.code == 0, result.err
    rows = md_rows(result.out)
    assert rows[0][:2] == ["Method", "n"]  # no group column: the file names no groups
    # its one cell is kd on synthetic with the defaults, seed 0: the designed KD run of seed 0
    assert rows[1] == ["kd", "1", "**60.0**", "**37.5**", "**0.30**", "**72.5**", "**35.0**", "**60.0**",
                       "**60.0**", "**60.0**", "no baseline"]
    assert "0 of 1 entries have no finished run" in result.out


def test_help_imports_nothing_heavy():
    probe = ("import sys\nfrom kdbench.cli import main\ntry:\n    main(['leaderboard', '--help'])\n"
             "except SystemExit:\n    pass\n"
             "print('LOADED', *sorted(m for m in ('torch', 'mlflow', 'pandas', 'matplotlib', 'scipy') "
             "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "kdbench leaderboard" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "LOADED"


def test_confidence_interval_matches_the_t_distribution():
    from kdbench.leaderboard.stats import paired, summarize

    ours, base = {0: 61.0, 1: 64.0, 2: 60.5, 5: 70.0}, {0: 55.0, 1: 57.5, 2: 56.0, 3: 40.0}
    got = paired(ours, base)
    diffs = [6.0, 6.5, 4.5]
    low, high = stats.t.interval(0.95, 2, loc=np.mean(diffs), scale=stats.sem(diffs))
    assert (got.n, got.mean) == (3, pytest.approx(np.mean(diffs)))
    assert (got.low, got.high) == (pytest.approx(low), pytest.approx(high))
    assert paired({0: 1.0}, {1: 1.0}) is None
    single = summarize([3.0])
    assert single.n == 1 and single.mean == 3.0 and math.isnan(single.std)
