"""``kdbench sweep FILE``: plan every cell once (refusing bad input before anything starts), then run what is missing.

The order: read and validate the file; resolve every cell (an unknown plugin or option in any cell stops the
sweep here); create the store and experiments in this process; one query says which cells are done; teachers
shared by several cells are trained (or loaded) and their outputs stored, once each; then the cells fan out.
A failing cell never stops the others; the exit status says whether any failed.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import click

from ..errors import ConfigError
from . import spec


def _csv_ints(value: str | None, what: str) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} {value!r}: give comma-separated integers, e.g. 0,1,2") from None


def cli_layer(tracking_uri: str | None, experiment: str | None, sets: tuple[str, ...]) -> dict:
    from ..config import merge, parse_set

    layer = merge({}, *(parse_set(item) for item in sets))
    tracking = {k: v for k, v in (("uri", tracking_uri), ("experiment", experiment)) if v}
    return merge(layer, {"tracking": tracking}) if tracking else layer


@click.command("sweep")
@click.argument("file")
@click.option("--dry-run", is_flag=True, help="list the cells, their config hashes and which are done; run nothing")
@click.option("--gpus", help="GPU indices, one worker each (e.g. 0,1,2,3)")
@click.option("--max-parallel", type=click.IntRange(min=1), help="cells at once (CPU: processes; default 1)")
@click.option("--launcher", type=click.Choice(["local", "slurm"]), default="local", show_default=True)
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=1, show_default=True,
              help="DDP processes per cell (torchrun); with --gpus, each cell takes this many GPUs")
@click.option("--seeds", help="seeds for every cell, overriding the file's (e.g. 0,1,2)")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="override a config key in every cell")
@click.option("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
@click.option("--experiment", help="MLflow experiment name")
@click.option("--slurm-partition", help="SLURM partition (--launcher slurm)")
@click.option("--slurm-time", type=int, default=24 * 60, show_default=True, help="minutes per cell job")
@click.option("--slurm-folder", default="kdbench-slurm", show_default=True, help="submitit's logs and job files")
@click.option("--slurm-local", is_flag=True, hidden=True, help="submitit's local executor (tests, no cluster)")
def sweep_cmd(file, dry_run, gpus, max_parallel, launcher, nproc_per_node, seeds, sets, tracking_uri, experiment,
              slurm_partition, slurm_time, slurm_folder, slurm_local) -> None:
    """Run every cell of a sweep file (or a table in leaderboards/), skipping what is done."""
    from ..cli import table, warn_broken  # here: kdbench.cli imports this module
    from ..plugins import plugins
    from .plan import mark_done, open_stores, resolve_cells, stores

    sweep = spec.load(file, _csv_ints(seeds, "--seeds"))
    gpu_list = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else None
    if gpu_list is not None:
        _csv_ints(gpus, "--gpus")
    warn_broken()
    planned = resolve_cells(sweep, cli_layer(tracking_uri, experiment, sets), plugins())
    if dry_run:
        if all(_store_exists(uri) for uri in stores(planned)):
            mark_done(planned)
        rows = [(p.cell.group or "", p.cell.row, str(p.cell.seed), p.digest, p.state) for p in planned]
        click.echo(table(rows, ("group", "row", "seed", "config hash", "state")))
        counts = Counter(p.state for p in planned)
        per_seed = len({p.cell.entry for p in planned})
        click.echo(f"\n{len(planned)} cells ({per_seed} per seed): {counts['done']} done, "
                   f"{counts['resume']} to resume, {counts['new']} to run")
        return
    open_stores(planned)
    for run_id in mark_done(planned, close_stale=True):
        click.echo(f"note: run {run_id}, whose process is gone, is now marked KILLED")
    from .run import run_sweep

    status = run_sweep(sweep, planned, launcher=launcher, gpus=gpu_list, max_parallel=max_parallel,
                       nproc=nproc_per_node, slurm={"partition": slurm_partition, "time": slurm_time,
                                                     "folder": slurm_folder, "local": slurm_local},
                       progress=sys.stderr.isatty())
    raise click.exceptions.Exit(status)


def _store_exists(uri: str) -> bool:
    from ..tracking import sqlite_path

    db = sqlite_path(uri)
    return db is None or Path(db).exists()
