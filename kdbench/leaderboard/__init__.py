"""Leaderboards: a sweep file's cells, their finished runs, aggregated over seeds and laid out like the paper.

``collect`` reads the sweep file and, in one query per store, the FINISHED student runs matched to its cells
by config hash; ``stats`` aggregates seeds, picks the best per group and compares each row with its baseline
(paired over seeds); ``render`` writes Markdown, LaTeX (booktabs) and long CSV; ``html`` a self-contained page
with each entry's confusion matrix; ``commands`` is ``kdbench leaderboard``. See docs/leaderboards.md.
"""
