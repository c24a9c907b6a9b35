"""``kdbench leaderboard``: a table's finished runs, aggregated over seeds, laid out like the paper, beside the
paper's numbers; printed, or written to files, and logged to MLflow as a run tagged ``kdbench.role=leaderboard``.
Nothing heavy is imported until the command runs, so ``kdbench --help`` stays quick.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import KdbenchError

FORMATS = ("md", "latex", "csv", "html")
SUFFIX = {"md": "md", "latex": "tex", "csv": "csv", "html": "html"}
#: the name of every file written (``--out``) and logged: leaderboard.md, leaderboard.tex, ...
STEM = "leaderboard"


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise KdbenchError(f"--seeds {text!r}: give comma-separated integers, e.g. --seeds 0,1,2") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise KdbenchError(f"--seeds {text!r}: give distinct non-negative integers, e.g. --seeds 0,1,2")
    return seeds


def render(fmt: str, board, lines) -> str:
    from . import render as text

    if fmt == "html":
        from .html import page

        return page(board, lines)
    return {"md": text.markdown, "latex": text.latex, "csv": text.long_csv}[fmt](board, lines)


def leaderboard_tags(board) -> dict[str, str]:
    from .. import __version__
    from ..tracking import process_tags, source_commit

    tags = {"kdbench.role": "leaderboard", "kdbench.table": board.name, "kdbench.version": __version__,
            "kdbench.sweep_file": str(board.sweep.path.resolve()), **process_tags()}
    if commit := source_commit():
        tags["kdbench.git_commit"] = commit
    return tags


@click.command("leaderboard")
@click.argument("table")
@click.option("--format", "formats", multiple=True, type=click.Choice(FORMATS),
              help="md (default), latex (booktabs), csv (long, numeric) or html (a self-contained page); "
                   "repeatable with --out")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="write DIR/leaderboard.{md,tex,csv,html} (every format unless --format names some) instead of "
                   "printing")
@click.option("--tracking-uri", help="MLflow tracking URI of the runs (default: the sweep file's, else "
                                     "$MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
@click.option("--experiment", help="MLflow experiment of the runs (default: the sweep file's, else kdbench)")
@click.option("--seeds", metavar="0,1,2", help="these seeds instead of the sweep file's")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="the same config overrides the sweep ran with (they are part of each cell's config hash)")
def leaderboard_cmd(table, formats, out, tracking_uri, experiment, seeds, sets) -> None:
    """Aggregate a table's finished runs over seeds, laid out like the paper, beside the paper's numbers.

    TABLE is a table name (table2 or table2_s3ve: leaderboards/table2_s3ve.toml, in ./leaderboards or
    kdbench's own) or a sweep file's path. Runs are matched to the file's cells by config hash; the newest
    FINISHED student run of each counts, so a sweep run with --set needs the same --set here. Without --out the table goes to stdout (--format html included);
    every rendering is also logged to MLflow as a run tagged kdbench.role=leaderboard.
    """
    from ..sweep.commands import cli_layer
    from ..tracking import import_mlflow, tracked_run
    from .collect import prepare, read
    from .stats import compute

    if len(formats) > 1 and out is None:
        raise KdbenchError("several --format need --out DIR (one file each); without --out give one --format")
    chosen = list(dict.fromkeys(formats)) or (list(FORMATS) if out is not None else ["md"])
    board = prepare(table, parse_seeds(seeds), cli_layer(tracking_uri, experiment, sets))
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise KdbenchError(f"--out {out}: cannot create the folder ({error.strerror or error})") from None
    for label in board.unmatched_paper():
        click.echo(f"warning: {board.sweep.spec.paper} has numbers for group {label[0]!r}, row {label[1]!r}, "
                   f"which the table has no entry for", err=True)
    read(board)
    with tracked_run(board.uri, board.experiment, run_name=f"leaderboard {board.name}",
                     tags=leaderboard_tags(board)) as run:
        mlflow = import_mlflow()
        lines = compute(board)
        texts = {fmt: render(fmt, board, lines) for fmt in dict.fromkeys(["md", "latex", "csv", *chosen])}
        mlflow.log_params({"table": board.name, "seeds": ",".join(map(str, sorted({s for e in board.entries
                                                                                 for s in e.seeds})))})
        mlflow.log_metrics({"entries": len(lines), "entries_missing": sum(1 for line in lines if not line.n),
                            "entries_short": sum(1 for line in lines if line.short),
                            "runs": sum(line.n for line in lines)})
        for fmt, text in texts.items():
            mlflow.log_text(text, f"{STEM}.{SUFFIX[fmt]}")
        mlflow.log_text(board.sweep.path.read_text(encoding="utf-8"), f"sweep/{board.sweep.path.name}")
        if out is None:
            click.echo(texts[chosen[0]].rstrip("\n"))
        else:
            for fmt in chosen:
                path = out / f"{STEM}.{SUFFIX[fmt]}"
                try:
                    path.write_text(texts[fmt], encoding="utf-8")
                except OSError as error:
                    raise KdbenchError(f"cannot write {path} ({error.strerror or error})") from None
                click.echo(f"wrote {path}")
    missing = sum(1 for line in lines if not line.n)
    click.echo(f"{len(lines) - missing} of {len(lines)} entries have finished runs; logged as MLflow run "
               f"{run.info.run_id} (experiment {board.experiment!r})", err=True)
