"""The ``kdbench`` command line. Plugins may add subcommands through the ``register_commands`` hook.

User errors (:class:`kdbench.errors.KdbenchError`) end as one line on stderr and exit status 2;
Ctrl-C and SIGTERM end with status 130 after the MLflow run is marked KILLED.
"""

from __future__ import annotations

import os
import signal
import sys

import click

from . import __version__
from .errors import KdbenchError
from .plugins import plugins
from .registry import KIND_NAMES


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def warn_broken() -> None:
    for info in plugins().broken:
        click.echo(f"warning: plugin {info.name!r} failed to load ({info.error}); see `kdbench plugins`", err=True)


class Commands(click.Group):
    """The core commands, plus those plugins add (``register_commands``), looked up only when asked for: loading
    plugins imports their networks (torch), and ``kdbench --help`` must answer at once."""

    def get_command(self, ctx, name):
        return super().get_command(ctx, name) or {c.name: c for c in plugins().commands}.get(name)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Plugins may add commands: `kdbench plugins` lists them.")
@click.version_option(__version__, prog_name="kdbench")
@click.option("-v", "--verbose", is_flag=True,
              help="show MLflow's own messages (store creation, migrations) and download progress bars")
def cli(verbose: bool) -> None:
    """Cross-modal knowledge distillation benchmarks."""
    if verbose:  # read by kdbench.tracking, here and in any worker process started from here
        os.environ["KDBENCH_VERBOSE"] = "1"


@cli.command("list")
@click.argument("kind", required=False, type=click.Choice(KIND_NAMES))
def list_cmd(kind: str | None) -> None:
    """List the registered datasets, teachers, students and distillers."""
    warn_broken()
    for k in [kind] if kind else KIND_NAMES:
        rows = [(e.name, e.description, e.plugin) for e in plugins()[k].entries()]
        click.echo(f"{k}:")
        click.echo(table(rows, ("name", "description", "plugin")) if rows else "  (none)")
        click.echo()


@cli.command("show")
@click.argument("kind", type=click.Choice([k[:-1] for k in KIND_NAMES]))
@click.argument("name")
def show_cmd(kind: str, name: str) -> None:
    """Describe one plugin: what it is, its source paper, and every option with type, default and bounds."""
    from .describe import describe

    warn_broken()
    click.echo(describe(plugins()[f"{kind}s"].get(name)))


@cli.command("plugins")
def plugins_cmd() -> None:
    """Show every plugin found, its package, and whether it loaded."""
    loaded = plugins()
    rows = []
    for p in loaded.report:
        status = ("blocked" if p.blocked else f"error: {p.error}" if p.error else
                  f"unavailable: {p.unavailable}" if p.unavailable else "ok")
        rows.append((p.name, f"{p.distribution} {p.version}", p.module, status))
    click.echo(table(rows, ("plugin", "package", "module", "status")))
    if loaded.commands:
        click.echo("\ncommands added by plugins: " + ", ".join(sorted(c.name for c in loaded.commands)))


def config_options(epochs_help: str):
    """The options ``kdbench run`` and ``kdbench teacher train`` share, declared once."""
    shared = [
        click.option("--dataset", help="dataset (`kdbench list datasets`)"),
        click.option("--teacher", help="teacher network; default: the dataset's"),
        click.option("--data-root", help="the dataset's folder (dataset.root); default $KDBENCH_DATA/<dataset>"),
        click.option("--skip-bad", is_flag=True,
                     help="leave out items `kdbench data check` reports bad, instead of stopping"),
        click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML or YAML config file"),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="override one config key (repeatable)"),
        click.option("--epochs", type=int, help=epochs_help),
        click.option("--seed", type=int),
        click.option("--device", help="auto | cpu | cuda | cuda:N | mps"),
        click.option("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"),
        click.option("--experiment", help="MLflow experiment name"),
        click.option("--no-progress", is_flag=True, help="no progress bars"),
    ]

    def apply(command):
        for option in reversed(shared):
            command = option(command)
        return command

    return apply


def flags_layer(*, distiller=None, dataset=None, teacher=None, student=None, teacher_checkpoint=None, epochs=None,
                seed=None, device=None, tracking_uri=None, experiment=None, epochs_key="epochs", data_root=None,
                skip_bad=False) -> dict:
    """The command-line flags as the highest config layer."""
    flags: dict = {"skip_bad": True} if skip_bad else {}
    for section, value in [("distiller", distiller), ("dataset", dataset), ("teacher", teacher),
                           ("student", student)]:
        if value:
            flags[section] = {"name": value}
    if teacher_checkpoint:
        flags.setdefault("teacher", {})["checkpoint"] = teacher_checkpoint
    if data_root:
        flags.setdefault("dataset", {})["root"] = data_root
    if epochs is not None:
        section, _, key = epochs_key.rpartition(".")
        (flags.setdefault(section, {}) if section else flags)[key] = epochs
    for key, value in [("seed", seed), ("device", device)]:
        if value is not None:
            flags[key] = value
    for key, value in [("uri", tracking_uri), ("experiment", experiment)]:
        if value:
            flags.setdefault("tracking", {})[key] = value
    return flags


def resolve_layers(config_file, sets, flags, sections):
    from .config import load_file, parse_set, resolve

    layers = [load_file(config_file)] if config_file else []
    layers += [parse_set(item) for item in sets]
    layers.append(flags)
    warn_broken()
    return resolve(layers, plugins(), sections)


#: above this many classes the per-class accuracies stay in MLflow instead of the terminal
MAX_CLASS_ROWS = 10


def shown(scores: dict) -> dict:
    per_class = [k for k in scores if k.startswith("acc_")]
    if len(per_class) <= MAX_CLASS_ROWS:
        return scores
    click.echo(f"(per-class accuracies of the {len(per_class)} classes: in the MLflow run)")
    return {k: v for k, v in scores.items() if k not in per_class}


def echo_err(message: str) -> None:
    click.echo(message, err=True)


@cli.command("run")
@click.option("--distiller", help="distillation method (`kdbench list distillers`)")
@click.option("--student", help="student network; default: the dataset's")
@click.option("--teacher-checkpoint", help="teacher weights: a file or runs:/<run id>; default: train and cache")
@config_options("student training epochs")
@click.option("--resume", is_flag=True, help="continue this configuration's checkpoint, in the same MLflow run")
@click.option("--nproc-per-node", type=click.IntRange(min=1), default=1, show_default=True,
              help="train over K processes on this node with DDP (one GPU each, or CPU processes over gloo); "
                   "batch_size stays the global batch (docs/distributed.md)")
@click.option("--dry-run", is_flag=True, help="print the resolved config and its hash; run nothing")
def run_cmd(distiller, student, teacher_checkpoint, dataset, teacher, data_root, skip_bad, config_file, sets, epochs,
            seed, device, tracking_uri, experiment, no_progress, resume, nproc_per_node, dry_run) -> None:
    """Train a student with one distiller on one dataset, tracked in MLflow."""
    from .config import RUN_SECTIONS, config_hash

    flags = flags_layer(distiller=distiller, dataset=dataset, teacher=teacher, student=student,
                        teacher_checkpoint=teacher_checkpoint, epochs=epochs, seed=seed, device=device,
                        tracking_uri=tracking_uri, experiment=experiment, data_root=data_root, skip_bad=skip_bad)
    config = resolve_layers(config_file, sets, flags, RUN_SECTIONS)
    if dry_run:
        import yaml

        click.echo(f"# config hash {config_hash(config)}")
        click.echo(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).rstrip())
        return

    progress = not no_progress and sys.stderr.isatty()
    if nproc_per_node > 1:
        from .engine.distributed import fit_distributed

        done = fit_distributed(config, nproc_per_node, resume=resume, progress=progress)
        if done["status"] != "done":
            raise KdbenchError(done["reason"])  # its details, if any, are printed above
        summary(config, done["metrics"], done["teacher_metrics"], done["run_id"], done["config_hash"])
        return
    from .engine import fit, prepare

    prepared = prepare(config, plugins(), resume=resume, progress=progress, echo=echo_err)
    result = fit(prepared, progress=progress, echo=echo_err)
    summary(config, result.scores.as_dict(), result.teacher_scores.as_dict(), result.run_id, result.config_hash)


def summary(config, student_scores: dict, teacher_scores: dict, run_id: str, digest: str) -> None:
    """What ``kdbench run`` prints when a run is done, however many processes trained it."""
    rows = [(k, f"{v:.4f}", f"{teacher_scores[k]:.4f}") for k, v in shown(student_scores).items()]
    click.echo(table(rows, ("metric", f"student ({config.distiller.name})", f"teacher ({config.teacher.name})")))
    click.echo(f"\nMLflow run {run_id} (config {digest}) in experiment {config.tracking.experiment!r}")


@cli.group("teacher")
def teacher_group() -> None:
    """Teacher networks: train one on a dataset, once, for every later run."""


@teacher_group.command("train")
@config_options("teacher training epochs (teacher_training.epochs)")
def teacher_train_cmd(dataset, teacher, data_root, skip_bad, config_file, sets, epochs, seed, device, tracking_uri,
                      experiment, no_progress) -> None:
    """Train a teacher on a dataset's training split, track it, and cache it for `kdbench run`."""
    from .config import TEACHER_SECTIONS
    from .engine import fit_teacher_only, prepare_teacher

    flags = flags_layer(dataset=dataset, teacher=teacher, epochs=epochs, seed=seed, device=device,
                        tracking_uri=tracking_uri, experiment=experiment, epochs_key="teacher_training.epochs",
                        data_root=data_root, skip_bad=skip_bad)
    config = resolve_layers(config_file, sets, flags, TEACHER_SECTIONS)
    progress = not no_progress and sys.stderr.isatty()
    prepared = prepare_teacher(config, plugins(), progress=progress, echo=echo_err)
    scores, source = fit_teacher_only(prepared, progress=progress, echo=echo_err)
    rows = [(k, f"{v:.4f}") for k, v in shown(scores).items()]
    click.echo(table(rows, ("metric", f"teacher ({config.teacher.name})")))
    click.echo(f"\nweights: {source.location}\nMLflow run {source.run_id}; use it with --teacher-checkpoint "
               f"runs:/{source.run_id} (runs with the same teacher, dataset and seed find it in the cache by themselves)")


from .data.commands import data_group  # noqa: E402

cli.add_command(data_group)
from .runs import runs_group  # noqa: E402

cli.add_command(runs_group)
from .sweep.commands import sweep_cmd  # noqa: E402

cli.add_command(sweep_cmd)
from .leaderboard.commands import leaderboard_cmd  # noqa: E402

cli.add_command(leaderboard_cmd)


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        status = cli.main(args=argv, prog_name="kdbench", standalone_mode=False)
        if isinstance(status, int):  # a command's click.exceptions.Exit(n) arrives here as n
            return status
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.exceptions.Abort:
        click.echo("kdbench: interrupted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("kdbench: interrupted", err=True)
        return 130
    except KdbenchError as error:
        if error.details:
            click.echo(error.details, err=True)
        click.echo(f"kdbench: error: {error}", err=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
