"""``kdbench data synth | prepare`` edge cases that belong to the core commands, not to one dataset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["--subjects", "2", "--set", "epochs=4"]


def test_synth_into_the_current_folder_and_refusals(tmp_path, monkeypatch, cli):
    target = tmp_path / "here"
    target.mkdir()
    monkeypatch.chdir(target)
    made = cli("data", "synth", "s3ve", "--root", ".", *TINY)
    assert made.code == 0, made.err
    assert (target / "subjects.csv").exists() and not list(tmp_path.glob(".here.synth-*"))
    again = cli("data", "synth", "s3ve", "--root", ".", *TINY)
    assert again.code == 2 and "is not empty; give `kdbench data synth` a new folder" in again.err
    (tmp_path / "afile").write_text("x")
    for root, says in [(tmp_path / "afile", "is a file"), (tmp_path / "afile" / "sub", "cannot create"),
                       ("/proc/kdbench-test", "cannot create")]:
        refused = cli("data", "synth", "s3ve", "--root", str(root), *TINY)
        assert refused.code == 2 and says in refused.err and "Traceback" not in refused.err, (root, refused.err)
        assert len(refused.err.strip().splitlines()) == 1


def test_a_hard_killed_synth_leaves_nothing_the_next_one_keeps(tmp_path, cli):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                    # a pid that no longer runs
    leftover = tmp_path / f".night.synth-{dead.pid}"
    leftover.mkdir()
    (leftover / "half.edf").write_text("")
    alive = tmp_path / f".night.synth-{os.getpid()}0"  # not ours to judge: a pid we cannot know is dead
    made = cli("data", "synth", "s3ve", "--root", str(tmp_path / "night"), *TINY)
    assert made.code == 0, made.err
    assert not leftover.exists()
    assert not alive.exists()


@pytest.mark.usefixtures("workdir")
def test_prepare_skips_an_empty_split_and_prepares_the_others(tmp_path, cli):
    root = tmp_path / "two"
    assert cli("data", "synth", "s3ve", "--root", str(root), *TINY).code == 0
    done = cli("data", "prepare", "s3ve", "--root", str(root), "--set", "frames=2", "--set", "height=16",
               "--set", "width=16", "--set", "val_fraction=0")
    assert done.code == 0, done.err
    lines = dict(line.split(": ", 1) for line in done.out.strip().splitlines())
    assert lines["val"] == "no items, nothing to prepare"
    for split in ("train", "test"):
        count, _, path = lines[split].partition(" in ")
        assert count.split()[1] == "items," and int(count.split()[0]) > 0 and (Path(path) / "meta.json").exists(), lines[split]


def test_synth_flags_are_the_generator_options(tmp_path, cli):
    """Every field of the dataset's SynthOptions is a flag (hyphens for underscores, `--key=value` too), and a
    flag wins over --set."""
    made = cli("data", "synth", "s3ve", "--root", str(tmp_path / "two"), "--set", "subjects=4", "--subjects", "2",
               "--epochs=4", "--csv-every", "1")
    assert made.code == 0, made.err
    assert "S001: 4 epochs" in made.err and "S002: 4 epochs" in made.err
    hypnograms = sorted(str(p.relative_to(tmp_path / "two")) for p in (tmp_path / "two").glob("*/hypnogram.*"))
    assert hypnograms == ["S001/hypnogram.csv", "S002/hypnogram.csv"]   # csv_every 1: every night's is a CSV


@pytest.mark.parametrize("args, says", [
    (["--subjectz", "2"], "unknown option --subjectz; its options are --root, --seed, --set KEY=VALUE and the "
                          "generator's: --subjects, --epochs, --eeg-rate, --fps, --width, --height, --csv-every"),
    (["--subjects"], "--subjects needs a value"),
    (["--subjects", "2", "stray"], "unexpected argument 'stray'"),
    (["--no-subjects"], "unknown option --no-subjects"),            # not a true/false option
    (["--subjects", "two"], "subjects = 'two': Input should be a valid integer"),
])
def test_synth_refuses_a_bad_flag_in_one_line(tmp_path, cli, args, says):
    refused = cli("data", "synth", "s3ve", "--root", str(tmp_path / "x"), *args)
    assert refused.code == 2 and not (tmp_path / "x").exists()
    [line] = refused.err.strip().splitlines()
    assert line.startswith("kdbench: error: ") and says in line, line


def test_synth_wants_the_name_before_the_generator_flags(tmp_path, cli):
    refused = cli("data", "synth", "--subjects", "2", "s3ve", "--root", str(tmp_path / "x"))
    assert refused.code == 2 and refused.err.strip().splitlines() == [
        "kdbench: error: kdbench data synth: give the dataset's NAME before the generator's options (--subjects came "
        "first): kdbench data synth NAME --root DIR [--option-name VALUE ...]"]


def test_synth_flags_parse_like_set_values_and_booleans_take_both_forms():
    from kdbench.data.commands import _option_flags
    from kdbench.options import PluginOptions

    class Options(PluginOptions):
        noisy: bool = False
        maybe: bool | None = None
        sizes: list[int] = [1]
        label: str = "x"
        scale: float = 1.0

    parse = lambda *args: _option_flags(list(args), Options, "here")  # noqa: E731
    assert parse("--noisy") == {"noisy": True} and parse("--no-noisy") == {"noisy": False}
    assert parse("--noisy", "false", "--scale", "-2.5") == {"noisy": False, "scale": -2.5}
    assert parse("--noisy", "--maybe=true") == {"noisy": True, "maybe": True}
    assert parse("--sizes", "[2, 3]", "--label", "two words") == {"sizes": [2, 3], "label": "two words"}
    assert parse("--label", "7") == {"label": 7}          # TOML, as --set: the option's validation decides
    with pytest.raises(Exception, match="unknown option --no-scale"):
        parse("--no-scale")


def test_synth_help_points_at_the_generator_options(cli):
    shown = cli("data", "synth", "--help")
    assert shown.code == 0 and "kdbench show dataset" in " ".join(shown.out.split())
    assert "--subjects" not in shown.out and "--clips-per-class" not in shown.out
