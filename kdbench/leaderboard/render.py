"""Markdown, LaTeX (booktabs) and long CSV of a leaderboard, laid out like the paper's tables.

One line per entry in file order, the group label on the first line of its group, the sweep file's columns,
the best mean of each group in bold, missing entries as —, and † on entries with fewer finished seeds than
the table asks for. Under an entry the paper reports, a "paper (Δ)" line gives its numbers and ours minus
them. The last column compares the row with its baseline (:mod:`kdbench.leaderboard.stats`).
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .collect import Board
from .stats import LEVEL, Line, Stat, scale

HEADERS = {"accuracy": "Accuracy", "mf1": "MF1", "kappa": "κ"}
STAT_HEADER = "Δacc vs baseline"


def header(metric: str) -> str:
    return HEADERS.get(metric) or metric.removeprefix("acc_")


def digits(metric: str) -> int:
    """Decimals of a mean, as the paper prints them: one for %, two for κ (a std gets one more)."""
    return 1 + (scale(metric) == 1.0)


@dataclass(frozen=True)
class Style:
    """How one output format writes the few things that differ between formats."""

    pm: str
    minus: str
    dash: str
    dagger: str
    bold: Callable[[str], str]
    escape: Callable[[str], str]
    #: how a spread follows its mean (default: ``pm`` then the number)
    spread: Callable[[str], str] | None = None
    #: how the paired comparison's interval and n follow its mean (default: "[low, high] (n=N)" after it)
    detail: Callable[[str, str], str] | None = None

    def number(self, value: float, places: int, sign: bool = False) -> str:
        text = f"{value:{'+' if sign else ''}.{places}f}"
        if float(text) == 0:  # no "-0.0", and no sign on a zero difference
            text = f"{0:.{places}f}"
        return self.minus + text[1:] if text.startswith("-") else text

    def signed(self, value: float, places: int) -> str:
        return self.number(value, places, sign=True)

    def with_spread(self, mean: str, spread: str) -> str:
        return mean + (self.spread(spread) if self.spread else f"{self.pm}{spread}")

    def ours(self, metric: str, stat: Stat, best: bool) -> str:
        if not stat.n:
            return self.dash
        text = self.number(stat.mean, digits(metric))
        text = self.bold(text) if best else text
        return text if math.isnan(stat.std) else self.with_spread(text, self.number(stat.std, digits(metric) + 1))

    def paper(self, line: Line, metric: str) -> str:
        """The paper's number as printed (± its std, if any), then ours minus it in brackets."""
        if metric not in line.paper:
            return ""
        reported = line.paper[metric]
        text = self.escape(reported.text)
        text = self.with_spread(text, self.escape(reported.std_text)) if reported.std_text else text
        diff = line.diff(metric)
        return text if diff is None else f"{text} ({self.signed(diff, digits(metric))})"

    def n(self, line: Line) -> str:
        return str(line.n) if line.n == line.asked else f"{line.n}/{line.asked}" + (self.dagger if line.n else "")

    def compared(self, line: Line) -> str:
        if line.entry.baseline:
            return "baseline"
        if line.base is None:
            return "no baseline"
        p = line.paired
        if p is None:
            return self.dash
        interval = f"[{self.signed(p.low, 1)}, {self.signed(p.high, 1)}] " if p.low is not None else ""
        if self.detail:
            return self.detail(self.signed(p.mean, 1), f"{interval}n={p.n}")
        return f"{self.signed(p.mean, 1)} {interval}(n={p.n})"


def has_groups(board: Board) -> bool:
    return any(entry.group for entry in board.entries)


def group_header(board: Board) -> str:
    by = board.sweep.spec.group_by
    return by.capitalize() if by else "Group"


def title(board: Board) -> str:
    return board.sweep.spec.title or board.name


def notes(board: Board, lines: list[Line], style: Style) -> list[str]:
    """The footer: missing entries counted, † explained, units, the paper column and the paired comparison."""
    e = style.escape
    missing = sum(1 for line in lines if not line.n)
    out = [e(f"{missing} of {len(lines)} entries have no finished run (shown as ") + style.dash + e(").")]
    short = [line for line in lines if line.short]
    if short:
        out.append(style.dagger + e(" fewer finished seeds than the table asks for (n = finished/asked): "
                                    + "; ".join(line.entry.label for line in short) + "."))
    out.append(e("Mean ± sample standard deviation over seeds; accuracy, MF1 and per-class accuracy in %, κ as a "
                  "fraction; the best mean of each group in bold."))
    if board.paper:
        out.append(e(f"paper (Δ): the paper's number ({board.sweep.spec.paper}) and, in brackets, ours minus it."))
    bases = Counter(line.base.label for line in lines if line.base is not None)
    if bases:
        used = "; ".join(f"{label or '(unnamed)'} for {count} row{'s' * (count != 1)}" for label, count in bases.items())
        out.append(e(f"{STAT_HEADER}: our accuracy minus the baseline's on the seeds both finished, in percentage "
                     f"points: mean [{LEVEL:.0%} t-interval] (n pairs). Baselines (same dataset and student): "
                     f"{used}."))
    return out


# --------------------------------------------------------------------------- Markdown


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*")


MD = Style(" ± ", "-", "—", "†", lambda s: f"**{s}**", md_escape)


def markdown(board: Board, lines: list[Line]) -> str:
    s, columns, groups = MD, board.columns, has_groups(board)
    head = [group_header(board)] * groups + ["Method", "n", *map(header, columns), STAT_HEADER]
    rows = []
    previous = None
    for line in lines:
        entry = line.entry
        group = [s.escape(entry.group) if entry.group != previous else ""] * groups
        previous = entry.group
        rows.append([*group, s.escape(entry.row), s.n(line),
                     *(s.ours(m, line.stats[m], m in line.best) for m in columns), s.compared(line)])
        if any(m in line.paper for m in columns):
            rows.append([""] * groups + ["↳ paper (Δ)", "", *(s.paper(line, m) for m in columns), ""])
    text = [f"### {md_escape(title(board))}", ""]
    if board.sweep.spec.description:
        text += [md_escape(board.sweep.spec.description.strip()), ""]
    text.append("| " + " | ".join(head) + " |")
    text.append("|" + "|".join(["---"] * (groups + 1) + ["--:"] * (len(head) - groups - 2) + ["---"]) + "|")
    text += ["| " + " | ".join(row) + " |" for row in rows]
    text.append("")
    footer = notes(board, lines, s)
    text += [f"{note}  " if i < len(footer) - 1 else note for i, note in enumerate(footer)]  # "  ": a line break
    return "\n".join(text) + "\n"


# --------------------------------------------------------------------------- LaTeX

TEX_CHARS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
    "|": r"\textbar{}", "κ": r"$\kappa$", "Δ": r"$\Delta$", "±": r"$\pm$", "→": r"$\to$", "·": r"$\cdot$",
    "−": "$-$", "—": "---", "–": "--", "†": r"$^\dagger$", "↳": r"$\hookrightarrow$", "×": r"$\times$",
}


def tex_escape(text: str) -> str:
    return "".join(TEX_CHARS.get(char, char) for char in text)


TEX = Style(r" $\pm$ ", "$-$", "---", r"$^\dagger$", lambda s: rf"\textbf{{{s}}}", tex_escape,
            spread=lambda s: rf"\,{{\scriptsize$\pm${s}}}", detail=lambda mean, rest: rf"{mean} {{\scriptsize {rest}}}")


def small(text: str) -> str:
    return rf"{{\scriptsize {text}}}" if text else ""


def latex(board: Board, lines: list[Line]) -> str:
    """A ``table`` float with a ``booktabs`` tabular, shrunk to the line width if wider (needs
    ``\\usepackage{booktabs,graphicx}``)."""
    s, columns, groups = TEX, board.columns, has_groups(board)
    spec = "l" * (groups + 1) + "r" + "r" * len(columns) + "l"
    head = [tex_escape(group_header(board))] * groups + ["Method", "$n$", *(tex_escape(header(m)) for m in columns),
                                                          tex_escape(STAT_HEADER)]
    out = [f"% kdbench leaderboard {tex_escape(board.name)}: needs \\usepackage{{booktabs,graphicx}}",
           r"\begin{table}[htbp]", r"\centering", rf"\caption{{{tex_escape(title(board))}}}",
           rf"\label{{tab:kdbench-{''.join(c if c.isalnum() else '-' for c in board.name)}}}",
           r"\footnotesize", r"\setlength{\tabcolsep}{3pt}",
           r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",  # only ever shrunk
           rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
           " & ".join(head) + r" \\", r"\midrule"]
    previous = None
    for line in lines:
        entry = line.entry
        if groups and previous is not None and entry.group != previous:
            out.append(r"\midrule")
        group = [tex_escape(entry.group) if entry.group != previous else ""] * groups
        previous = entry.group
        cells = [*group, tex_escape(entry.row), s.n(line), *(s.ours(m, line.stats[m], m in line.best) for m in columns),
                 s.compared(line)]
        out.append(" & ".join(cells) + r" \\")
        if any(m in line.paper for m in columns):
            cells = [""] * groups + [r"\quad\textit{paper} ($\Delta$)", "",
                                     *(small(s.paper(line, m)) for m in columns), ""]
            out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}}", r"\par\smallskip",
            r"\parbox{\linewidth}{\raggedright " + r" \\ ".join(notes(board, lines, s)) + "}",
            r"\end{table}"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- CSV

CSV_HEADER = ["group", "row", "metric", "mean", "std", "n", "seeds", "paper", "paper_std", "diff", "low", "high",
              "baseline_group", "baseline_row"]
#: the CSV's name for the paired comparison with the baseline
PAIRED_METRIC = "accuracy_vs_baseline"


def number(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else repr(float(value))


def long_csv(board: Board, lines: list[Line]) -> str:
    """One line per entry and metric (every metric, shown or not), numbers in the paper's units; plus one
    ``accuracy_vs_baseline`` line per compared row (the paired difference, its sd, n pairs, low/high)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for line in lines:
        entry = line.entry
        for metric in board.metrics:
            stat = line.stats[metric]
            reported = line.paper.get(metric)
            paper_value, paper_std = (reported.value, reported.std) if reported else (None, None)
            writer.writerow([entry.group, entry.row, metric, number(stat.mean), number(stat.std), stat.n, line.asked,
                             number(paper_value), number(paper_std), number(line.diff(metric)), "", "", "", ""])
        if line.base is not None:
            p = line.paired
            writer.writerow([entry.group, entry.row, PAIRED_METRIC, number(p and p.mean), number(p and p.std),
                             p.n if p else 0, line.asked, "", "", "", number(p and p.low), number(p and p.high),
                             line.base.group, line.base.row])
    return buffer.getvalue()
