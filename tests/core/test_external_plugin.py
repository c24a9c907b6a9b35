"""A third-party plugin package, installed with pip from outside the kdbench tree, shows up and runs.

The package lives in ``tests/fixtures/kdbench-example-plugin``; ``docs/plugins.md`` prints the same
files, and a test keeps the two identical so the documented example is always one that works.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_process

HERE = Path(__file__).resolve().parents[1]
PACKAGE = HERE / "fixtures" / "kdbench-example-plugin"
DOCS = HERE.parent / "docs" / "plugins.md"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(PACKAGE)], check=True, capture_output=True)
    assert (target / "kdbench_example" / "__init__.py").exists()
    return target


def test_installed_plugin_is_listed_and_runs(site, workdir):
    env = {"PYTHONPATH": str(site)}
    listed = run_process("list", "distillers", env=env, cwd=workdir.path)
    assert listed.code == 0, listed.err
    row = next(line for line in listed.out.splitlines() if line.startswith("logit-l2"))
    assert "Ba & Caruana 2014" in row and row.rstrip().endswith("example")

    shown = run_process("plugins", env=env, cwd=workdir.path)
    assert re.search(r"^example\s+kdbench-example 0\.1\.0\s+kdbench_example\s+ok$", shown.out, re.M), shown.out

    ran = run_process("run", "--distiller", "logit-l2", "--dataset", "synthetic", "--config", "tiny.toml",
                      "--set", "distiller.weight=0.5", env=env, cwd=workdir.path)
    assert ran.code == 0, ran.err
    [student] = [r for r in workdir.runs() if r.data.tags.get("kdbench.role") == "student"]
    assert student.info.status == "FINISHED" and student.data.tags["kdbench.distiller"] == "logit-l2"
    assert student.data.params["distiller.weight"] == "0.5" and "loss_l2" in student.data.metrics


def test_plugin_can_be_blocked(site, workdir):
    env = {"PYTHONPATH": str(site), "KDBENCH_BLOCK_PLUGINS": "example"}
    listed = run_process("list", "distillers", env=env, cwd=workdir.path)
    assert listed.code == 0 and "logit-l2" not in listed.out
    assert re.search(r"^example\s.*blocked$", run_process("plugins", env=env).out, re.M)


def test_documented_example_is_the_tested_package():
    text = DOCS.read_text()
    for relative in ("pyproject.toml", "kdbench_example/__init__.py"):
        block = re.search(rf"`{re.escape(relative)}`:\n\n```\w*\n(.*?)```", text, re.S)
        assert block, f"docs/plugins.md shows no {relative}"
        assert block.group(1) == (PACKAGE / relative).read_text(), relative
