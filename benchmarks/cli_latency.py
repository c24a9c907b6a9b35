"""How long the CLI takes to answer, against what Python and torch cost on their own.

Each command is run REPEAT times as a fresh process, the commands interleaved round by round so that a
noisy machine slows them alike; the median wall time of each and its ratio to ``python -c "import torch"``
are printed (as a Markdown table, and as JSON with --json). Measured in one run, on one machine: read the
ratios, the absolute times only as context.

    python benchmarks/cli_latency.py --repeat 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

PY = sys.executable
COMMANDS = {
    'python -c "pass"': [PY, "-c", "pass"],
    'python -c "import torch"': [PY, "-c", "import torch"],
    "kdbench --help": [PY, "-m", "kdbench", "--help"],
    "kdbench run --help": [PY, "-m", "kdbench", "run", "--help"],
    "kdbench data synth --help": [PY, "-m", "kdbench", "data", "synth", "--help"],
    "kdbench teacher train --help": [PY, "-m", "kdbench", "teacher", "train", "--help"],
    "kdbench plugins": [PY, "-m", "kdbench", "plugins"],
    "kdbench list": [PY, "-m", "kdbench", "list"],
    "kdbench show distiller sacd": [PY, "-m", "kdbench", "show", "distiller", "sacd"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(args.repeat):
            for name, argv in COMMANDS.items():
                start = time.perf_counter()
                done = subprocess.run(argv, cwd=cwd, capture_output=True)
                times[name].append(time.perf_counter() - start)
                if done.returncode != 0:
                    sys.exit(f"{name} failed: {done.stderr.decode()[-500:]}")
    median = {name: statistics.median(values) for name, values in times.items()}
    torch_time = median['python -c "import torch"']
    rows = {name: {"median_s": round(value, 3), "vs_import_torch": round(value / torch_time, 2)}
            for name, value in median.items()}
    if args.json:
        print(json.dumps({"repeat": args.repeat, "commands": rows}, indent=2))
        return
    print(f"| command | median of {args.repeat} (s) | ÷ `import torch` |")
    print("| --- | --- | --- |")
    for name, row in rows.items():
        print(f"| `{name}` | {row['median_s']:.2f} | {row['vs_import_torch']:.2f} |")


if __name__ == "__main__":
    main()
