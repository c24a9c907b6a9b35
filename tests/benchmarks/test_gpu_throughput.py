"""benchmarks/gpu_throughput.py still runs: its CPU smoke mode (tiny shapes), whose every variant trains through
kdbench's loop. It asserts what the run produced, never how fast (speed is for the benchmark to report)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_throughput.py"

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def load():
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cpu_smoke_run_measures_every_variant_and_writes_json(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_CACHE_DIR", str(tmp_path / "cache"))
    bench = load()
    out = tmp_path / "gpu.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["cuda"] is False and result["device"].startswith("CPU") and result["compile_backend"] == "eager"
    rates = result["figures"]["r3d18"]
    assert list(rates) == list(bench.VARIANTS) and all(rate is not None and rate > 0 for rate in rates.values())
    assert result["table"].count("| `r3d18` |") == len(bench.VARIANTS)
