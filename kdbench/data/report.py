"""The one report every dataset check produces: counts per split and class, and every problem with its file.

``kdbench data check`` prints it; a run on data with problems stops before its first step with the same
text unless ``--skip-bad`` is given, and then the items the problems name are left out and listed in the
MLflow run. A problem that names no item (a missing split list, an empty folder) cannot be skipped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data: the file, what is wrong with it, and which items it spoils."""

    file: str
    message: str
    #: keys of the items this problem makes unusable; empty = the dataset as a whole is unusable.
    items: tuple[str, ...] = ()

    @property
    def skippable(self) -> bool:
        return bool(self.items)

    def line(self) -> str:
        scope = f" [{len(self.items)} item{'s' * (len(self.items) != 1)}]" if self.items else " [dataset]"
        return f"{self.file}: {self.message}{scope}"


@dataclass
class DataReport:
    """Counts of usable items per split and class, what was dropped on purpose, and the problems."""

    dataset: str
    root: str
    class_names: tuple[str, ...]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    #: things the loader left out by design (e.g. movement epochs), counted; not problems.
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: what ``counts`` counts: "usable" items (the default), or e.g. "found" when nothing is usable and the
    #: table shows what is there instead (say why in a note).
    counts_are: str = "usable"

    @property
    def usable(self) -> bool:
        return not self.problems

    @property
    def skippable(self) -> bool:
        """True when leaving out the named items would leave a usable dataset."""
        return all(p.skippable for p in self.problems)

    def emptied_splits(self) -> list[str]:
        """The train/test splits that have items but no usable one (what --skip-bad would leave empty)."""
        if self.counts_are != "usable":
            return []
        return [s for s in ("train", "test") if s in self.counts and sum(self.counts[s].values()) == 0]

    def bad_items(self) -> frozenset[str]:
        return frozenset(key for p in self.problems for key in p.items)

    def render(self) -> str:
        lines = [f"dataset {self.dataset!r} at {self.root}"]
        if self.counts:
            lines += self._table()
        for what, n in self.dropped.items():
            lines.append(f"  dropped by design: {n} {what}")
        lines += [f"  note: {note}" for note in self.notes]
        if self.problems:
            lines.append(f"{len(self.problems)} problem{'s' * (len(self.problems) != 1)}:")
            lines += [f"  {p.line()}" for p in self.problems]
            usable = sum(sum(c.values()) for c in self.counts.values()) if self.counts_are == "usable" else 0
            emptied = self.emptied_splits()
            if self.skippable and usable == 0:
                lines.append("  --skip-bad would leave nothing to train on: fix the problems")
            elif self.skippable and emptied:
                lines.append(f"  --skip-bad would leave no items in the {' and '.join(emptied)} split"
                             f"{'s' * (len(emptied) > 1)}: fix the problems")
            elif self.skippable:
                n = len(self.bad_items())
                lines.append(f"  --skip-bad would leave out {n} item{'s' * (n != 1)} and use the rest")
            else:
                lines.append("  problems marked [dataset] cannot be skipped: fix them first")
        else:
            lines.append("no problems: usable")
        return "\n".join(lines)

    def _table(self) -> list[str]:
        """Counts per split and class: splits as rows, or, for many classes, classes as rows (stays readable)."""
        splits, names = list(self.counts), list(self.class_names)
        what = "" if self.counts_are == "usable" else f"   ({self.counts_are} items)"
        totals = {s: sum(self.counts[s].values()) for s in splits}
        if len(names) <= 8:
            width = max(6, *(len(n) for n in names))
            out = ["  " + "split".ljust(8) + "".join(n.rjust(width + 1) for n in names) + "total".rjust(9) + what]
            for s in splits:
                out.append("  " + s.ljust(8) + "".join(str(self.counts[s].get(n, 0)).rjust(width + 1) for n in names)
                           + str(totals[s]).rjust(9))
            return out
        width = max(5, *(len(n) for n in names))
        out = ["  " + "class".ljust(width) + "".join(s.rjust(8) for s in splits) + what]
        out += ["  " + n.ljust(width) + "".join(str(self.counts[s].get(n, 0)).rjust(8) for s in splits) for n in names]
        out.append("  " + "total".ljust(width) + "".join(str(totals[s]).rjust(8) for s in splits))
        return out

    def to_json(self) -> str:
        return json.dumps(asdict(self))  # key order kept: splits and classes are shown in it

    @classmethod
    def from_json(cls, text: str) -> DataReport:
        data = json.loads(text)
        data["class_names"] = tuple(data["class_names"])
        data["problems"] = [Problem(p["file"], p["message"], tuple(p["items"])) for p in data["problems"]]
        return cls(**data)
