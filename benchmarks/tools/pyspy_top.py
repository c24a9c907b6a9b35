"""Our own frames in a py-spy profile: which kdbench or kdbench_plugins functions the time goes to.

Reads py-spy's raw (collapsed-stack) output, one ``frame;frame;...;leaf COUNT`` line per distinct stack, and
prints three Markdown tables over all samples:

- self: samples whose innermost Python frame is ours (py-spy without ``--native`` charges time spent in a C
  function, a torch or numpy op, to the Python line that called it, so "self" includes those ops);
- inclusive: samples with the function anywhere on the stack (each stack counted once per function);
- deepest own frame: samples charged to the innermost frame of ours, whatever library code runs below it
  (so ``train_epoch`` gets the backward pass it starts).

    py-spy record -o prof.txt --format raw --rate 100 -- python -m kdbench run --distiller crd --dataset synthetic
    python benchmarks/tools/pyspy_top.py prof.txt --top 10

(Not a benchmark: a tool for docs/performance.md's profile.)
"""

from __future__ import annotations

import argparse
import collections
import re

OWN = ("kdbench/", "kdbench_plugins/")
FRAME = re.compile(r"(.*) \((.*):(\d+)\)$")


def parse(path: str):
    with open(path) as lines:
        for line in lines:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            yield stack.split(";"), int(count)


def name(frame: str) -> tuple[str, bool]:
    """``function (file)`` without the line number, and whether it is ours (py-spy prints paths relative to
    sys.path entries, so ours start with the package name)."""
    m = FRAME.match(frame)
    if not m:
        return frame or "(no Python frame)", False
    func, file, _ = m.groups()
    own = file.startswith(OWN)
    return f"{func} ({file if own else file.rsplit('/', 1)[-1]})", own


def tables(path: str, top: int) -> str:
    total = 0
    own_self, inclusive, deepest = collections.Counter(), collections.Counter(), collections.Counter()
    for frames, count in parse(path):
        total += count
        named = [name(f) for f in frames]
        ours = [n for n, own in named if own]
        if named[-1][1]:
            own_self[named[-1][0]] += count
        for n in set(ours):
            inclusive[n] += count
        if ours:
            deepest[ours[-1]] += count
    out = [f"{total} samples"]
    for title, counter in (("self", own_self), ("inclusive", inclusive), ("deepest own frame", deepest)):
        out += ["", f"| our function ({title}) | samples | % of all |", "| --- | --- | --- |"]
        out += [f"| `{n}` | {c} | {100 * c / total:.1f} |" for n, c in counter.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", help="py-spy record --format raw output")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    print(tables(args.profile, args.top))


if __name__ == "__main__":
    main()
