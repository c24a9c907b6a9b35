"""Sweeps: every cell of a table (datasets × teachers × students × distillers × seeds) run, resumably.

``spec`` reads a sweep file into cells; ``plan`` resolves them and asks the store, in one query, which are done;
``job`` runs one cell (or one shared teacher) in a worker; ``local`` and ``slurm`` are the launchers;
``commands`` is ``kdbench sweep``. The leaderboard reads the same files (:mod:`kdbench.leaderboard`).
"""
