"""``kdbench data synth | check | prepare``: the dataset-on-disk commands, for any dataset plugin."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from ..errors import KdbenchError
from ..paths import remove_abandoned


def _entry(name: str):
    from ..plugins import plugins

    return plugins()["datasets"].get(name)


def _values(sets: tuple[str, ...], section: str) -> dict:
    """``--set key=value`` items; ``dataset.key=value`` is accepted as well, as in ``kdbench run``."""
    from ..config import merge, parse_set

    values: dict = {}
    for item in sets:
        layer = parse_set(item)
        if list(layer) == [section] and isinstance(layer[section], dict):
            layer = layer[section]
        values = merge(values, layer)
    return values


def _dataset(name: str, root: str, sets: tuple[str, ...], seed: int):
    from ..config import validate

    entry = _entry(name)
    values = _values(sets, "dataset")
    if root:
        values["root"] = root
    if "root" not in entry.options.model_fields:
        raise KdbenchError(f"dataset {name!r} is generated in memory and has no files to check or prepare")
    return entry.cls(validate(entry.options, values, prefix="dataset."), seed)


def _fields(text: str) -> tuple[str, ...]:
    """``--fields student,teacher`` as a tuple in the order of ``FIELDS``; an unknown field is refused."""
    from .clips import FIELDS

    given = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in given if part not in FIELDS]
    if unknown or not given:
        raise KdbenchError(f"--fields {text!r}: give one or more of {', '.join(FIELDS)}, separated by commas")
    return tuple(f for f in FIELDS if f in given)


def _progress() -> bool:
    return sys.stderr.isatty()


def _is_bool(field) -> bool:
    """A field that takes true/false (``bool`` or ``bool | None``): it may be given as ``--flag`` / ``--no-flag``."""
    import typing

    args = typing.get_args(field.annotation)
    return field.annotation is bool or (bool in args and all(a in (bool, type(None)) for a in args))


def _option_flags(args: list[str], model, where: str) -> dict:
    """The values of ``--field-name VALUE`` (or ``--field-name=VALUE``) items of ``args`` for the fields of the
    pydantic ``model`` (hyphens for underscores), read like ``--set`` values (TOML literals, else text); a
    boolean field also takes ``--field-name`` / ``--no-field-name``. Anything else is refused in one line."""
    from ..config import parse_set

    fields = model.model_fields
    allowed = ", ".join(f"--{name.replace('_', '-')}" for name in fields) or "none"

    def refuse(what: str) -> KdbenchError:
        return KdbenchError(f"{where}: {what}; its options are --root, --seed, --set KEY=VALUE and the generator's: "
                            f"{allowed}")

    values: dict = {}
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if not token.startswith("--") or token == "--":
            raise refuse(f"unexpected argument {token!r}")
        flag, has_value, raw = token[2:].partition("=")
        key = flag.replace("-", "_")
        if key not in fields and key.startswith("no_") and key[3:] in fields and _is_bool(fields[key[3:]]) \
                and not has_value:
            values[key[3:]] = False
            continue
        if key not in fields:
            raise refuse(f"unknown option --{flag}")
        if not has_value:
            follows = args[i] if i < len(args) else None
            if _is_bool(fields[key]) and (follows is None or follows.lower() not in ("true", "false")):
                values[key] = True
                continue
            if follows is None or follows.startswith("--"):
                raise refuse(f"--{flag} needs a value")
            raw = follows
            i += 1
        values[key] = parse_set(f"{key}={raw}")[key]
    return values


@click.group("data")
def data_group() -> None:
    """Datasets on disk: write a small one, check one, prepare its clip cache."""


@data_group.command("synth", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("name")
@click.option("--root", required=True, help="folder to write (must not exist or be empty)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="one generator option (repeatable)")
@click.pass_context
def synth_cmd(ctx, name, root, seed, sets) -> None:
    """Write a small dataset NAME in its real file formats, with class-dependent signal in every modality.

    Each of the generator's options is also a flag, --option-name VALUE (a true/false one also --option-name /
    --no-option-name); `kdbench show dataset NAME` lists them under "generator options". Flags win over --set.
    """
    from ..config import validate

    if name.startswith("-"):  # an option of the generator before NAME is taken for NAME
        raise KdbenchError(f"kdbench data synth: give the dataset's NAME before the generator's options ({name} came "
                           f"first): kdbench data synth NAME --root DIR [--option-name VALUE ...]")
    entry = _entry(name)
    if entry.cls.SynthOptions is None:
        raise KdbenchError(f"dataset {name!r} has no generator (`kdbench list datasets` shows which plugin provides it)")
    values = _values(sets, "synth")
    values.update(_option_flags(ctx.args, entry.cls.SynthOptions, f"kdbench data synth {name}"))
    options = validate(entry.cls.SynthOptions, values, prefix="")
    target = Path(root).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise KdbenchError(f"{target} is a file; give `kdbench data synth` a new folder")
    if target.exists() and any(target.iterdir()):
        raise KdbenchError(f"{target} is not empty; give `kdbench data synth` a new folder so nothing is overwritten")
    # Written beside the target and renamed at the end: an interrupted run leaves no half dataset behind.
    tmp = target.with_name(f".{target.name}.synth-{os.getpid()}")
    if target.parent.is_dir():   # temporary folders of earlier `synth` runs into target, killed hard
        remove_abandoned(target.parent.glob(f".{target.name}.synth-*"))
    try:
        tmp.mkdir(parents=True)
    except OSError as error:
        raise KdbenchError(f"cannot create {target}: {error.strerror or error}; choose a writable folder") from None
    try:
        entry.cls.synthesize(tmp, options, seed, lambda m: click.echo(m, err=True))
        if target.exists():  # an empty folder, perhaps the one we are in: keep it, move the contents in
            for child in tmp.iterdir():
                os.rename(child, target / child.name)
        else:
            os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    click.echo(f"wrote a generated {name!r} dataset to {target}; next: kdbench data check {name} --root {target}")


@data_group.command("check")
@click.argument("name")
@click.option("--root", help="the dataset's folder (default $KDBENCH_DATA/<name>)")
@click.option("--seed", type=int, default=0, show_default=True, help="the run seed (seeded splits depend on it)")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="one dataset option (repeatable)")
@click.option("--fields", default="student,teacher", show_default=True, metavar="FIELD[,FIELD]",
              help="the inputs whose files are checked: student,teacher (what `kdbench run` reads) or teacher (what "
                   "`kdbench teacher train` reads, e.g. stored embeddings without the videos)")
def check_cmd(name, root, seed, sets, fields) -> None:
    """Validate every file of dataset NAME and print one report; exit 0 only if it is usable as it is."""
    from .guard import check

    wanted = _fields(fields)
    dataset = _dataset(name, root, sets, seed)
    report = check(dataset, fields=wanted, progress=_progress(), reuse=False)
    click.echo(report.render())
    if not report.usable:
        raise click.exceptions.Exit(1)


@data_group.command("prepare")
@click.argument("name")
@click.option("--root", help="the dataset's folder (default $KDBENCH_DATA/<name>)")
@click.option("--seed", type=int, default=0, show_default=True, help="the run seed (seeded splits depend on it)")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="one dataset option (repeatable)")
@click.option("--skip-bad", is_flag=True, help="leave out the items the check reports bad")
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="processes decoding in parallel (decoding video is CPU-bound)")
def prepare_cmd(name, root, seed, sets, skip_bad, workers) -> None:
    """Decode dataset NAME once into the clip cache that training then reads (resumable)."""
    from .clips import ClipSplit, prepare
    from .guard import require_usable

    echo = lambda m: click.echo(m, err=True)  # noqa: E731
    dataset = _dataset(name, root, sets, seed)
    require_usable(dataset, skip_bad=skip_bad, progress=_progress(), echo=echo)
    for split_name in dataset.splits:
        split = dataset.split(split_name)
        if not isinstance(split, ClipSplit):
            click.echo(f"{split_name}: held in memory, nothing to prepare")
            continue
        if len(split) == 0:
            click.echo(f"{split_name}: no items, nothing to prepare")
            continue
        path = prepare(split, progress=_progress(), echo=echo, workers=workers)
        size = sum(f.stat().st_size for f in path.iterdir())
        click.echo(f"{split_name}: {len(split)} items, {size / 2**20:.1f} MiB in {path}")
