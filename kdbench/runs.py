"""``kdbench runs``: the runs of a tracking store as a table, a run's details, and runs left RUNNING by a
process that is gone (``--stale``, closed KILLED with ``--close``): what would otherwise need ``mlflow ui``
or pandas. MLflow is imported inside the commands only, so ``kdbench --help`` stays fast.
"""

from __future__ import annotations

from datetime import datetime

import click

from .errors import KdbenchError

STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
METRICS = ("final_accuracy", "final_mf1", "final_kappa")
#: a tag given without a dot names a kdbench tag: ``--tag distiller=kd`` is ``--tag kdbench.distiller=kd``
TAG_PREFIX = "kdbench."

tracking_uri_option = click.option(
    "--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")


def open_client(uri_flag: str | None):
    """The store named by the flag (or the usual default), opened as `kdbench run` opens it; a SQLite file
    that does not exist is refused instead of created: there is nothing to list."""
    from .tracking import check_store, import_mlflow, sqlite_path, tracking_uri

    uri = tracking_uri(uri_flag)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise KdbenchError(f"no MLflow store at {db} (nothing has been tracked there): pass the --tracking-uri "
                           f"your runs used, or set MLFLOW_TRACKING_URI")
    check_store(uri)
    return uri, import_mlflow().MlflowClient(uri)


def parse_tags(items: tuple[str, ...]) -> dict[str, str]:
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise KdbenchError(f"--tag {item!r}: write key=value (e.g. --tag distiller=kd)")
        tags[key if "." in key else TAG_PREFIX + key] = value
    return tags


def quoted(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise KdbenchError(f"cannot search for a value holding both kinds of quotes: {value!r}")


def search(client, experiment: str | None, tags: dict[str, str], status: str | None, limit: int | None):
    """The store's runs, newest first, filtered in the store (experiment, tags, status)."""
    if experiment:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
            raise KdbenchError(f"no experiment {experiment!r} in this store (experiments: {names})")
        ids = [found.experiment_id]
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return []
    clauses = [f"tags.`{key}` = {quoted(value)}" for key, value in tags.items()]
    if status:
        clauses.append(f"attributes.status = '{status}'")
    runs, token = [], None
    while True:
        page = client.search_runs(ids, " and ".join(clauses), max_results=1000 if limit is None else min(limit, 1000),
                                  order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token or (limit is not None and len(runs) >= limit):
            return runs if limit is None else runs[:limit]


def when(millis: int | None) -> str:
    return datetime.fromtimestamp(millis / 1000).strftime("%Y-%m-%d %H:%M:%S") if millis else "-"


def row(run) -> tuple[str, ...]:
    tags, metrics = run.data.tags, run.data.metrics
    kd = [tags.get(TAG_PREFIX + k, "-") for k in ("role", "dataset", "teacher", "student", "distiller", "seed",
                                                  "config_hash")]
    return (run.info.run_id, *kd, run.info.status,
            *(f"{metrics[m]:.4f}" if m in metrics else "-" for m in METRICS), when(run.info.start_time))


HEADER = ("run id", "role", "dataset", "teacher", "student", "distiller", "seed", "config hash", "status",
          "accuracy", "mf1", "kappa", "started")


@click.group("runs", invoke_without_command=True)
@click.option("--experiment", help="only this experiment (default: every experiment of the store)")
@click.option("--tag", "tag_items", multiple=True, metavar="KEY=VALUE",
              help="only runs with this tag (repeatable); a key without a dot is a kdbench tag: distiller=kd")
@click.option("--status", type=click.Choice(STATUSES, case_sensitive=False), help="only runs in this state")
@click.option("--stale", is_flag=True,
              help="only RUNNING runs whose process is gone (or cannot be checked: no host/pid tags, another host)")
@click.option("--close", is_flag=True, help="mark the stale runs KILLED (implies --stale)")
@click.option("--force", is_flag=True,
              help="with --close: also close the stale runs whose process cannot be checked from here")
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True, help="at most this many runs")
@tracking_uri_option
@click.pass_context
def runs_group(ctx, experiment, tag_items, status, stale, close, force, limit, tracking_uri) -> None:
    """List the runs of a tracking store, newest first; `kdbench runs show RUN_ID` shows one.

    A run is stale when it is RUNNING but the process that started it (tags kdbench.host, kdbench.pid) is
    gone from this host. Runs of older kdbench versions have no such tags, and runs of other hosts cannot
    be checked from here: they are listed as "unknown" or "elsewhere", and closed only with --close --force.
    """
    if ctx.invoked_subcommand is not None:
        return
    from .cli import table
    from .tracking import close_run, process_state

    stale = stale or close
    if force and not close:
        raise KdbenchError("--force only goes with --close")
    if stale and status and status.upper() != "RUNNING":
        raise KdbenchError(f"--stale lists RUNNING runs; drop --status {status}")
    _, client = open_client(tracking_uri)
    found = search(client, experiment, parse_tags(tag_items), "RUNNING" if stale else status and status.upper(),
                   None if stale else limit)
    if not stale:
        click.echo(table([row(r) for r in found], HEADER) if found else "no runs")
        if len(found) == limit:
            click.echo(f"(the newest {limit}; --limit shows more)")
        return

    listed = []
    for run in found:
        state, detail = process_state(run.data.tags)
        if state != "alive":
            listed.append((run, state, detail))
    if not listed:
        click.echo("no stale runs")
        return
    click.echo(table([(*row(r)[:9], when(r.info.start_time), f"{state}: {detail}") for r, state, detail in listed],
                     (*HEADER[:9], "started", "process")))
    if not close:
        return
    closed, kept = [], []
    for run, state, detail in listed:
        if state == "dead" or force:
            close_run(client, run.info.run_id, detail)
            closed.append(run.info.run_id)
        else:
            kept.append(run.info.run_id)
    click.echo(f"\nclosed {len(closed)} run{'s' * (len(closed) != 1)} as KILLED" + (f": {', '.join(closed)}" if closed
                                                                               else ""))
    if kept:
        click.echo(f"left {len(kept)} RUNNING whose process cannot be checked from here (no host/pid tags, or "
                   f"another host): --close --force closes them too")


def size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


@runs_group.command("show")
@click.argument("run_id")
@tracking_uri_option
@click.pass_context
def show_cmd(ctx, run_id, tracking_uri) -> None:
    """One run: its tags, params (the resolved config), final metrics and artifacts."""
    from .cli import table
    from .tracking import artifact_root, import_mlflow, list_artifacts, process_state

    uri, client = open_client(tracking_uri or ctx.parent.params.get("tracking_uri"))
    mlflow = import_mlflow()
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise KdbenchError(f"no run {run_id!r} in {uri}: `kdbench runs` lists the run ids") from None
    info, data = run.info, run.data
    experiment = client.get_experiment(info.experiment_id)
    took = f" ({(info.end_time - info.start_time) / 1000:.0f} s)" if info.end_time and info.start_time else ""
    click.echo(f"run        {info.run_id}  {info.run_name or ''}".rstrip())
    click.echo(f"experiment {experiment.name!r} (id {info.experiment_id})")
    click.echo(f"status     {info.status}, started {when(info.start_time)}, ended {when(info.end_time)}{took}")
    if info.status == "RUNNING":
        state, detail = process_state(data.tags)
        click.echo(f"process    {state}: {detail}")
    click.echo(f"artifacts  {artifact_root(uri, run)}")

    tags = sorted((k, v) for k, v in data.tags.items() if not k.startswith("mlflow."))
    click.echo("\ntags:")
    click.echo(table(tags, ("tag", "value")) if tags else "  (none)")
    click.echo("\nparams (the resolved config):")
    click.echo(table(sorted(data.params.items()), ("param", "value")) if data.params else "  (none)")
    finals = sorted((k, f"{v:.4f}") for k, v in data.metrics.items() if k.startswith(("final_", "teacher_")))
    others = sorted((k, f"{v:.4f}") for k, v in data.metrics.items()
                    if not k.startswith(("final_", "teacher_")))
    click.echo("\nmetrics (final, and the teacher's):")
    click.echo(table(finals, ("metric", "value")) if finals else "  (none)")
    if others:
        click.echo(f"\n(and the last epoch's values of {len(others)} per-epoch metrics: "
                   f"{', '.join(k for k, _ in others)})")
    files = list_artifacts(uri, run)
    click.echo("\nartifacts:")
    click.echo(table([(path, size(n)) for path, n in files], ("path", "size")) if files else "  (none)")
