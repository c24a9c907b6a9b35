"""CLI latency: how long the CLI takes to answer, against what Python, torch and MLflow cost on their own.

Each command is run as a fresh process, REPEAT times, the commands interleaved round by round so that a
noisy machine slows them alike; the table gives the median wall time of each and its ratio to
``python -c "import torch"``, the floor of anything that trains. ``--help`` needs neither torch nor MLflow and
shows a ratio near 0.1; ``plugins``, ``list`` and ``show`` load the plugins, which import torch, so theirs is
about 1. A change that makes a command import more than it needs moves its ratio, and this table shows it.
``kdbench runs`` reads a tracking store, so it needs MLflow: it is compared with ``python -c "import mlflow"``
too. It is given an existing, empty SQLite store, made once before the rounds (creating a store costs ~7 s,
which is not what this measures).

Measured in one run, on one machine: read the ratios, the absolute times only as context.

    python benchmarks/cli_latency.py [--quick] [--repeat 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]
TORCH = 'python -c "import torch"'


def commands(store_uri: str) -> dict[str, list[str]]:
    kd = [PY, "-m", "kdbench"]
    return {
        'python -c "pass"': [PY, "-c", "pass"],
        TORCH: [PY, "-c", "import torch"],
        'python -c "import mlflow"': [PY, "-c", "import mlflow"],
        "kdbench --help": [*kd, "--help"],
        "kdbench plugins": [*kd, "plugins"],
        "kdbench list": [*kd, "list"],
        "kdbench runs": [*kd, "runs", "--tracking-uri", store_uri],
        "kdbench run --help": [*kd, "run", "--help"],
        "kdbench data synth --help": [*kd, "data", "synth", "--help"],
        "kdbench teacher train --help": [*kd, "teacher", "train", "--help"],
        "kdbench show distiller sacd": [*kd, "show", "distiller", "sacd"],
    }


#: the rows the issue asks for; --quick times only these
QUICK = ('python -c "pass"', TORCH, "kdbench --help", "kdbench plugins", "kdbench list", "kdbench runs")


def child_env(cache: Path) -> dict[str, str]:
    """The clone's sources first on the path (so its code is measured), its own cache, no ambient store."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    path = env.get("PYTHONPATH")
    env.update(KDBENCH_CACHE_DIR=str(cache), PYTHONPATH=f"{ROOT}{os.pathsep}{path}" if path else str(ROOT))
    return env


def run(quick: bool = False, repeat: int | None = None) -> dict:
    repeat = repeat or (1 if quick else 5)
    with tempfile.TemporaryDirectory(prefix="kdbench-bench-cli-") as tmp:
        cwd = Path(tmp)
        env = child_env(cwd / "cache")
        uri = f"sqlite:///{cwd / 'mlflow.db'}"
        subprocess.run([PY, "-c", f"from kdbench.tracking import check_store; check_store({uri!r})"],
                       cwd=cwd, env=env, check=True, capture_output=True)
        todo = {k: v for k, v in commands(uri).items() if not quick or k in QUICK}
        times: dict[str, list[float]] = {name: [] for name in todo}
        for _ in range(repeat):
            for name, argv in todo.items():
                start = time.perf_counter()
                done = subprocess.run(argv, check=False, cwd=cwd, env=env, capture_output=True)
                times[name].append(time.perf_counter() - start)
                if done.returncode != 0:
                    raise RuntimeError(f"{name} failed: {done.stderr.decode()[-500:]}")
    median = {name: statistics.median(values) for name, values in times.items()}
    torch_s = median[TORCH]
    figures = {name: {"median_s": round(value, 3), "vs_import_torch": round(value / torch_s, 3)}
               for name, value in median.items()}
    rows = [f"| command | median of {repeat} (s) | ÷ `import torch` |", "| --- | --- | --- |"]
    rows += [f"| `{name}` | {f['median_s']:.2f} | {f['vs_import_torch']:.2f} |" for name, f in figures.items()]
    notes = [(f"Each command a fresh process, {repeat} interleaved round(s), median wall time; "
              f"`import torch` took {torch_s:.2f} s in this run."),
             "`--help` of any command imports neither torch nor MLflow (tests/core/test_cli.py checks that).",
             ("`plugins`, `list` and `show` load every plugin module, and the plugins are torch modules: "
              "one `import torch` is their floor."),
             "`kdbench runs` lists an empty store: importing MLflow and opening its SQLite store, no torch."]
    return {"name": "cli_latency", "title": "CLI latency against Python, torch and MLflow alone",
            "table": "\n".join(rows), "notes": notes, "figures": figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of the commands the issue names")
    parser.add_argument("--repeat", type=int, help="rounds (default 5, or 1 with --quick)")
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    args = parser.parse_args()
    result = run(quick=args.quick, repeat=args.repeat)
    from run_all import report  # this script's folder is on sys.path when it runs

    report(result, args.json)


if __name__ == "__main__":
    main()
