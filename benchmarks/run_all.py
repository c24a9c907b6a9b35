"""Run every benchmark, keep its JSON, and write their tables into docs/performance.md.

Each benchmark module here exposes ``run(quick) -> dict`` (name, title, table, notes, figures); this runs them
one after another in one process, on one machine, writes ``benchmarks/results/<name>.json`` and replaces the
part of docs/performance.md between the two ``benchmarks:`` markers with a section per benchmark, headed by
the machine, the date and the commit. Every figure is a ratio measured inside its own benchmark's run.

    python benchmarks/run_all.py                 # all, full size (about half an hour on a 2-core CPU)
    python benchmarks/run_all.py --only cli_latency growth
    python benchmarks/run_all.py --quick --no-docs   # a smoke run: JSON only
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs" / "performance.md"
BEGIN, END = "<!-- benchmarks:begin (written by benchmarks/run_all.py) -->", "<!-- benchmarks:end -->"
#: in the order they are run and shown: the framework's own cost first
BENCHMARKS = ("framework_overhead", "teacher_reuse", "data_path", "growth", "sweep_scheduling", "cli_latency",
              "gpu_throughput", "predict_memory")


def report(result: dict, json_path: str | None) -> None:
    """What each benchmark prints when run on its own: its table and notes, and its JSON if asked."""
    print(result["table"])
    for note in result["notes"]:
        print(f"- {note}")
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2))


def script_main(doc: str, run, quick_help: str) -> None:
    """The command line of a benchmark that takes only ``--quick`` and ``--json`` when run on its own."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    args = parser.parse_args()
    report(run(quick=args.quick), args.json)


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "?"
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, commit {commit}, "
            f"{datetime.date.today().isoformat()}")


def section(result: dict, seconds: float) -> str:
    lines = [f"### {result['title']} (`benchmarks/{result['name']}.py`)", "", result["table"], ""]
    lines += [f"- {note}" for note in result.get("notes", [])]
    quick = " in its quick mode (smoke figures)" if result.get("quick") else ""
    lines += [f"- Measured{quick} on {result.get('machine', '?')}; the benchmark ran {seconds:.0f} s.", ""]
    return "\n".join(lines)


def write_docs(sections: list[str], header: str) -> None:
    text = DOCS.read_text()
    block = "\n".join([BEGIN, "", header, "", *sections, END])
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## The benchmark suite\n\n" + block + "\n"
    DOCS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run these benchmarks only")
    parser.add_argument("--quick", action="store_true", help="each benchmark's quick mode (a smoke run)")
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/performance.md")
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON files")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.only or BENCHMARKS:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        result = load(name).run(quick=args.quick)
        seconds = time.perf_counter() - start
        (out / f"{name}.json").write_text(json.dumps({**result, "seconds": seconds, "machine": machine(),
                                                      "quick": args.quick}, indent=2))
        print(result["table"], flush=True)
    # every benchmark's latest result (with --only, the others' come from their earlier JSON)
    results = [json.loads((out / f"{name}.json").read_text()) for name in BENCHMARKS if (out / f"{name}.json").exists()]
    sections = [section(result, result["seconds"]) for result in results]
    if not args.no_docs:
        write_docs(sections, "Written by `python benchmarks/run_all.py` from `benchmarks/results/*.json`; each "
                             "section says where and when it was measured.")
        print(f"wrote {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
