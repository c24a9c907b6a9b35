"""The command line answers --help without importing torch, MLflow, MNE or PyAV (the speed itself is measured
in benchmarks/cli_latency.py, not asserted here)."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "mlflow", "mne", "av", "braindecode", "torchvision")
PROBE = """
import sys
from kdbench.cli import main
try:
    main({args!r})
except SystemExit:
    pass
print("LOADED", *sorted(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["teacher", "train", "--help"],
                                  ["data", "synth", "--help"], ["data", "check", "--help"], ["show", "--help"],
                                  ["list", "--help"], ["--version"]])
def test_help_imports_nothing_heavy(args):
    done = subprocess.run([sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "LOADED", done.stdout


def test_show_describes_a_plugin_from_its_declarations(cli):
    result = cli("show", "distiller", "kd")
    assert result.code == 0
    out = result.out
    assert "Hinton, Vinyals & Dean" in out  # the module docstring's first paragraph: the source paper
    assert "temperature  float  4.0      > 0" in out and "kd_weight" in out
    unknown = cli("show", "distiller", "kdd")
    assert unknown.code == 2 and "did you mean 'kd'" in unknown.err
