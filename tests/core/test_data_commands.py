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
