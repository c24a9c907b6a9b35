"""Sweep files: what cells a file declares, and every refusal before anything starts (no worker, no run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdbench.errors import ConfigError
from kdbench.sweep import spec

MINIMAL = """
[grid]
dataset = ["synthetic"]
distiller = ["baseline", "kd"]
seed = [0, 1]
[set]
epochs = 1
"dataset.train_size" = 200
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_minimal_form_expands_to_every_combination_per_seed(tmp_path):
    sweep = spec.load(str(write(tmp_path, MINIMAL)))
    assert [(c.row, c.seed) for c in sweep.cells] == [("baseline", 0), ("baseline", 1), ("kd", 0), ("kd", 1)]
    first = sweep.cells[0]
    assert first.layers[0] == {"epochs": 1, "dataset": {"train_size": 200}}  # [set] keys are --set keys
    assert first.layers[2] == {"dataset": {"name": "synthetic"}, "distiller": {"name": "baseline"}}
    assert first.layers[3] == {"seed": 0}


def test_seeds_from_the_command_line_replace_the_files(tmp_path):
    sweep = spec.load(str(write(tmp_path, MINIMAL)), seeds=[3, 4, 5])
    assert sorted({c.seed for c in sweep.cells}) == [3, 4, 5] and len(sweep.cells) == 6


def test_labels_groups_and_varying_choices_name_the_rows(tmp_path):
    text = """
group_by = "teacher"
[labels]
kd = "KD"
tiny-eeg = "Tiny EEG"
[grid]
dataset = "synthetic"
teacher = "tiny-eeg"
student = ["tiny-3dcnn", "r3d18"]
distiller = "kd"
[[cells]]
group = "-"
row = "Baseline"
distiller = "baseline"
set = { "distiller.name" = "baseline", optimizer = { lr = 0.01 } }
"""
    cells = spec.load(str(write(tmp_path, text))).cells
    assert [(c.group, c.row) for c in cells] == [("Tiny EEG", "KD · tiny-3dcnn"), ("Tiny EEG", "KD · r3d18"),
                                                 ("-", "Baseline")]
    assert cells[2].layers[1] == {"distiller": {"name": "baseline"}, "optimizer": {"lr": 0.01}}


@pytest.mark.parametrize("text, message", [
    ("[gird]\ndistiller = 'kd'\n", "unknown key 'gird': did you mean grid?"),
    ("[grid]\ndistiler = 'kd'\n", "unknown key 'grid.distiler': did you mean grid.distiller?"),
    ("[grid]\n", "[grid] is empty: name at least a distiller"),
    ("title = 't'\n", "declares no cells"),
    ("seeds = []\n[grid]\ndistiller = 'kd'\n", "seeds"),
    ("[grid]\ndistiller = []\n", "grid.distiller"),
    ("[grid]\ndistiller = 'kd'\n[[cells]]\ndistiller = 'kd'\ndataset = 'synthetic'\n", "both shown as group"),
    ("[grid\n", "is not valid TOML"),
    ("[[cells]]\nrow = 'A'\ndistiller = 'kd'\ncompare_to = 'Nobody'\n",
     "row 'A' has compare_to = 'Nobody', which is not another row of the file; name one of: "),
])
def test_a_bad_file_is_refused_in_one_line(tmp_path, text, message):
    with pytest.raises(ConfigError) as caught:
        spec.load(str(write(tmp_path, text)))
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert "s.toml" in str(caught.value)


def test_table4_compares_fusion_and_reverse_rows_with_the_eeg_baseline():
    """Rows whose student has no baseline of its own (late fusion, a pretrained EEG network) name the row they
    are compared with; the two baselines stay baselines."""
    from kdbench.leaderboard.collect import entries_of
    from kdbench.leaderboard.stats import baseline_of
    from kdbench.plugins import plugins
    from kdbench.sweep.plan import resolve_cells

    sweep = spec.load("table4")
    entries = entries_of(resolve_cells(sweep, {"dataset": {"name": "synthetic"}}, plugins()))
    against = {e.row: (base.row if (base := baseline_of(e, entries)) else None) for e in entries}
    assert against == {"Baseline R3D": None, "Baseline AttnSleep": None, **{row: "Baseline AttnSleep" for row in "ABCDEFG"}}
    assert [e.row for e in entries if e.baseline] == ["Baseline R3D", "Baseline AttnSleep"]


def test_a_table_is_found_by_its_name_or_its_short_name(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the tables beside the sources are found from anywhere
    assert spec.find("table2").name == "table2_s3ve.toml"
    assert spec.find("table5_ablation").name == "table5_ablation.toml"
    with pytest.raises(ConfigError, match="no table named 'table9': give a sweep file's path or one of .*demo"):
        spec.find("table9")
    with pytest.raises(ConfigError, match="does not exist"):
        spec.find("nowhere.toml")


@pytest.mark.parametrize("table, per_seed, seeds", [("table2", 23, 3), ("table3", 8, 3), ("table5", 6, 3),
                                                    ("demo", 10, 3)])
def test_dry_run_lists_each_tables_cells_with_hashes(cli, workdir, table, per_seed, seeds):
    result = cli("sweep", table, "--dry-run")
    assert result.code == 0, result.err
    lines = [line for line in result.out.splitlines() if line.rstrip().endswith(" new")]
    assert len(lines) == per_seed * seeds
    hashes = [line.split()[-2] for line in lines]
    assert len(set(hashes)) == len(hashes) and all(len(h) == 16 for h in hashes)
    assert f"{per_seed * seeds} cells ({per_seed} per seed)" in result.out
    assert workdir.runs() == []


def test_table2_groups_by_teacher_with_the_papers_rows(cli, workdir):
    out = cli("sweep", "table2", "--dry-run", "--seeds", "0").out
    rows = [line.split("  ")[0].strip() for line in out.splitlines()[2:25]]
    assert rows[:2] == ["-", "-"] and rows[2:9] == ["AttnSleep"] * 7 and rows[16:] == ["Modified-SEN"] * 7
    assert "Baseline R(2+1)D" in out and "SACD" in out


def test_the_ablation_variants_are_sacd_options(workdir):
    from kdbench.config import resolve
    from kdbench.plugins import plugins

    sweep = spec.load("table5")
    configs = {c.row: resolve(list(c.layers), plugins()) for c in sweep.cells if c.seed == 0}
    assert {c.distiller.name for c in configs.values()} == {"sacd"}
    d = {row: c.distiller.options for row, c in configs.items()}
    assert (d["v0"]["lambda_d"], d["v0"]["lambda_c"], d["v0"]["lambda_jsd"]) == (0, 0, 0)
    assert d["v1"]["lambda_d"] == 0 and d["v1"]["lambda_c"] > 0 and d["v2"]["lambda_jsd"] == 0
    assert d["v3"]["lambda_c"] == 0 and d["v4"]["two_way"] is False and d["full"]["two_way"] is True


@pytest.mark.parametrize("text, message", [
    ("[grid]\ndataset = 'synthetic'\ndistiller = ['kd', 'kdd']\n", "unknown distiller 'kdd'"),
    ("[grid]\ndataset = 'synthetic'\ndistiller = 'kd'\n[set]\n'distiller.temprature' = 2\n", "temprature"),
    ("[grid]\ndataset = 'synthetic'\ndistiller = 'kd'\n[set]\nepochs = 0\n", "epochs = 0"),
])
def test_a_bad_cell_stops_the_sweep_before_anything_starts(cli, workdir, text, message):
    path = write(workdir.path, text)
    result = cli("sweep", str(path), "--max-parallel", "2")
    assert result.code == 2
    assert message in result.err and len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert workdir.runs() == [] and not (workdir.path / "kdbench-runs").exists()


def test_an_unknown_table_is_refused_by_sweep_and_leaderboard_alike(cli, workdir):
    result = cli("sweep", "table9")
    assert result.code == 2 and "no table named 'table9'" in result.err
    assert len(result.err.strip().splitlines()) == 1
