"""A self-contained HTML page of a leaderboard: the table as in Markdown, then, per entry, the row-normalised
confusion matrix of its runs (their ``confusion_matrix.json`` artifacts summed, like the paper's Fig. 6) and its
per-class accuracy (mean ± sd over seeds, the paper's numbers as markers), as inline PNG images.

The page loads nothing from anywhere: styles are inline and images are ``data:`` URIs, so it opens offline,
from a mail or from an artifact store.
"""

from __future__ import annotations

import base64
import io
import math
from datetime import datetime
from html import escape

import numpy as np

from .. import __version__
from .collect import Board, read_confusion
from .render import (
    STAT_HEADER,
    Style,
    group_header,
    has_groups,
    header,
    notes,
    title,
)
from .stats import Line

HTML = Style(" ± ", "−", "—", "†", lambda s: f"<b>{s}</b>", escape,
             spread=lambda s: f'<span class="sd"> ± {s}</span>',
             detail=lambda mean, rest: f'{mean}<br><span class="sd">{rest}</span>')

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 1.5rem;
       color: #1d2330; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2.2rem; }
.meta { color: #5b6475; font-size: .85rem; margin-top: 0; }
.scroll { overflow-x: auto; margin-top: 1rem; }
table.board { border-collapse: collapse; font-size: .82rem; }
table.board th, table.board td { padding: .2rem .35rem; white-space: nowrap; }
table.board .sd { color: #5b6475; font-size: .82em; }
table.board thead th { border-top: 2px solid #1d2330; border-bottom: 1px solid #1d2330; text-align: right; }
table.board thead th.label { text-align: left; }
table.board tbody tr:last-child td { border-bottom: 2px solid #1d2330; }
table.board td { text-align: right; font-variant-numeric: tabular-nums; }
table.board td.label, table.board td.stat { text-align: left; }
table.board td.stat { font-size: .8rem; line-height: 1.15; vertical-align: top; }
table.board tr.group-start td { border-top: 1px solid #9aa3b2; }
table.board tr.paper td { color: #6b7385; font-size: .72rem; font-style: italic; padding-top: 0; }
table.board tr.paper td .sd { color: inherit; font-size: .9em; }
table.board tr.missing td.num { color: #9aa3b2; }
.notes { font-size: .82rem; color: #444c5c; max-width: 80rem; } .notes p { margin: .25rem 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr)); gap: 1rem; align-items: start; }
figure.card { margin: 0; border: 1px solid #d8dce4; border-radius: 6px; padding: .6rem; background: #fff; }
figure.card figcaption { font-weight: 600; margin-bottom: .4rem; }
figure.card img { width: 100%; height: auto; display: block; }
figure.card .runs { font-size: .75rem; color: #6b7385; margin-top: .3rem; word-break: break-all; }
figure.card .none { color: #9aa3b2; font-style: italic; }
"""


def summed_confusion(line: Line) -> tuple[list[str], np.ndarray, int] | None:
    """The entry's runs' confusion matrices summed: (class names, matrix, runs summed); None if none has one.
    A run whose classes differ from the first one's is left out."""
    names, total, count = None, None, 0
    for run in line.entry.runs.values():
        data = read_confusion(run)
        if data is None:
            continue
        matrix = np.asarray(data["matrix"], dtype=float)
        if names is None:
            names, total = list(data["class_names"]), np.zeros_like(matrix)
        if list(data["class_names"]) != names or matrix.shape != total.shape:
            continue
        total += matrix
        count += 1
    return (names, total, count) if names is not None else None


def normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row (true class) divided by its sum: the fraction of that class predicted as each class."""
    sums = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, sums, out=np.zeros_like(matrix, dtype=float), where=sums > 0)


def figure(line: Line, classes: list[str], confusion) -> str:
    """A PNG (base64) of the entry's normalised confusion matrix (if any) and per-class accuracy bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = max(len(classes), len(confusion[0]) if confusion else 0)
    side = 3.6 if k <= 8 else min(9.0, 2.0 + 0.16 * k)
    panels = 2 if confusion else 1
    fig, axes = plt.subplots(1, panels, figsize=(side * panels + (0.6 if panels == 2 else 1.5), side), dpi=90,
                             squeeze=False)
    axes = axes[0]
    small = 8 if k <= 12 else 5
    if confusion:
        names, matrix, _ = confusion
        share = normalised(matrix)
        ax = axes[0]
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 8 else 0, fontsize=small)
        ax.set_yticks(range(len(names)), names, fontsize=small)
        ax.set_xlabel("predicted", fontsize=9)
        ax.set_ylabel("true", fontsize=9)
        ax.set_title("confusion (row-normalised)", fontsize=9)
        if len(names) <= 12:
            for (i, j), value in np.ndenumerate(share):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.55 else "#1d2330")
    ax = axes[-1]
    means = [line.stats.get(f"acc_{c}") for c in classes]
    heights = [s.mean if s is not None and s.n else 0.0 for s in means]
    errors = [0.0 if s is None or math.isnan(s.std) else s.std for s in means]
    positions = np.arange(len(classes))
    ax.bar(positions, heights, yerr=errors, color="#4c78a8", ecolor="#1d2330", capsize=2, label="ours (mean ± sd)")
    paper = [(i, line.paper[f"acc_{c}"].value) for i, c in enumerate(classes) if f"acc_{c}" in line.paper]
    if paper:
        ax.scatter([i for i, _ in paper], [v for _, v in paper], marker="D", s=18, color="#e45756", zorder=3,
                   label="paper")
    ax.set_xticks(positions, classes, rotation=90 if len(classes) > 8 else 0, fontsize=small)
    ax.set_ylim(0, 118)  # room above 100 % for the legend
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("accuracy (%)", fontsize=9)
    ax.set_title("per-class accuracy", fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.legend(fontsize=7, loc="upper center", ncol=2, frameon=False)
    ax.grid(axis="y", color="#e3e6ec", linewidth=0.6)
    ax.set_axisbelow(True)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def table(board: Board, lines: list[Line]) -> str:
    s, columns, groups = HTML, board.columns, has_groups(board)
    head = [(group_header(board), "label")] * groups + [("Method", "label"), ("n", "")] + \
        [(header(m), "") for m in columns] + [(STAT_HEADER, "label")]
    cells = [f'<th class="{cls}">{escape(text)}</th>' if cls else f"<th>{escape(text)}</th>" for text, cls in head]
    cells[-1] = '<th class="label">Δacc<br>vs baseline</th>'  # STAT_HEADER, on two lines
    out = ['<div class="scroll"><table class="board">', "<thead><tr>" + "".join(cells) + "</tr></thead>", "<tbody>"]
    previous = None
    for line in lines:
        entry = line.entry
        classes = ["group-start"] if groups and previous is not None and entry.group != previous else []
        classes += [] if line.n else ["missing"]
        group = [escape(entry.group) if entry.group != previous else ""] * groups
        previous = entry.group
        cells = [f'<td class="label">{g}</td>' for g in group] + [f'<td class="label">{escape(entry.row)}</td>',
                                                                   f'<td class="num">{s.n(line)}</td>']
        cells += [f'<td class="num">{s.ours(m, line.stats[m], m in line.best)}</td>' for m in columns]
        reported = any(m in line.paper for m in columns)
        span = ' rowspan="2"' if reported else ""  # beside the paper's line too
        cells.append(f'<td class="stat"{span}>{s.compared(line)}</td>')
        attribute = f' class="{" ".join(classes)}"' if classes else ""
        out.append(f"<tr{attribute}>" + "".join(cells) + "</tr>")
        if reported:
            cells = ['<td class="label"></td>'] * groups + ['<td class="label">↳ paper (Δ)</td>', "<td></td>"]
            cells += [f'<td class="num">{s.paper(line, m)}</td>' for m in columns]
            out.append('<tr class="paper">' + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def card(board: Board, line: Line) -> str:
    label = escape(line.entry.label or line.entry.row or "(unnamed)")
    caption = f"<figcaption>{label} <span class=\"meta\">({line.n}/{line.asked} seeds)</span></figcaption>"
    if not line.n:
        return f'<figure class="card">{caption}<p class="none">no finished run</p></figure>'
    confusion = summed_confusion(line)
    image = figure(line, board.classes or (confusion[0] if confusion else []), confusion)
    summed = f"confusion matrix: {confusion[2]} run(s) summed" if confusion else "no confusion_matrix.json logged"
    runs = ", ".join(f"seed {seed}: {run.run_id}" for seed, run in sorted(line.entry.runs.items()))
    return (f'<figure class="card">{caption}<img alt="confusion matrix and per-class accuracy of {label}" '
            f'src="data:image/png;base64,{image}"><div class="runs">{escape(summed)}; runs {escape(runs)}</div>'
            f"</figure>")


def page(board: Board, lines: list[Line]) -> str:
    spec = board.sweep.spec
    seeds = sorted({seed for entry in board.entries for seed in entry.seeds})
    meta = (f"kdbench {__version__} · sweep file {board.sweep.path} · seeds {', '.join(map(str, seeds))} · "
            f"experiment {board.experiment!r} · {datetime.now():%Y-%m-%d %H:%M}")
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{escape(title(board))}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
             f"<h1>{escape(title(board))}</h1>", f'<p class="meta">{escape(meta)}</p>']
    if spec.description:
        parts.append(f"<p>{escape(spec.description.strip())}</p>")
    parts.append(table(board, lines))
    parts.append('<div class="notes">' + "".join(f"<p>{note}</p>" for note in notes(board, lines, HTML)) + "</div>")
    parts.append("<h2>Per entry: confusion matrix and per-class accuracy</h2>")
    parts.append('<div class="cards">' + "\n".join(card(board, line) for line in lines) + "</div>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
