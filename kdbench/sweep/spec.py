"""Sweep files: which cells a table (or any sweep) is made of, read from TOML and validated like a run config.

A sweep file declares blocks of cells. ``[grid]`` is one block and every ``[[cells]]`` entry is another; in a
block, ``dataset``, ``teacher``, ``student`` and ``distiller`` are a plugin name or a list of names, and the
block stands for every combination of them, once per seed::

    title = "Table III: UCF51, audio to video"
    paper = "paper/table3_ucf51.csv"      # the paper's numbers, beside ours in the leaderboard
    seeds = [0, 1, 2]

    [set]                                 # --set keys, for every cell
    epochs = 80

    [grid]
    dataset = "ucf51"
    distiller = ["baseline", "fitnet", "sacd"]

    [[cells]]                             # an irregular cell: its own labels and settings
    row = "v1"
    distiller = "sacd"
    set = { "distiller.lambda_d" = 0 }

What a cell *is* is its resolved run config (and so its config hash); ``group`` and ``row`` only say where the
leaderboard shows it. Nothing here imports torch or MLflow: ``--dry-run`` and the leaderboard stay quick.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..config import load_file, validate
from ..errors import ConfigError

CHOICES = ("dataset", "teacher", "student", "distiller")
#: the columns a leaderboard can show; "per_class" stands for one accuracy column per class
COLUMNS = ("accuracy", "mf1", "kappa", "per_class")
Names = str | list[str]


class Block(BaseModel):
    """A set of cells: every combination of the named plugins, for every seed."""

    model_config = ConfigDict(extra="forbid")
    dataset: Names | None = None
    teacher: Names | None = None
    student: Names | None = None
    distiller: Names | None = None
    seed: int | list[int] | None = Field(None, description="seeds of this block; default: the file's `seeds`")
    set: dict[str, Any] = Field(default_factory=dict, description="--set keys for this block's cells")
    group: str | None = Field(None, description="leaderboard group label; default: by the file's `group_by`")
    row: str | None = Field(None, description="leaderboard row label; default: the distiller's label")
    baseline: bool = Field(False, description="this block's rows are the baselines other rows are compared with")
    compare_to: str | None = Field(None, description="the row this block's rows are compared with (default: a "
                                                     "baseline row of the same dataset and student)")

    @field_validator(*CHOICES)
    @classmethod
    def _names(cls, value):
        names = [value] if isinstance(value, str) else value
        if names is not None and (not names or any(not n for n in names)):
            raise ValueError("give a plugin name or a non-empty list of names")
        return value


class SweepFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str | None = None
    description: str | None = None
    paper: str | None = Field(None, description="CSV of the paper's numbers (group,row,metric,value,std), "
                                                "relative to this file")
    seeds: list[int] = Field([0], min_length=1, description="seeds of every cell that names none")
    columns: list[Literal["accuracy", "mf1", "kappa", "per_class"]] = Field(list(COLUMNS), min_length=1)
    group_by: Literal["dataset", "teacher", "student", "distiller"] | None = Field(
        None, description="the plugin choice that forms the leaderboard's groups (Table II: teacher)")
    labels: dict[str, str] = Field(default_factory=dict, description="display names of plugins, e.g. "
                                                                     "r2plus1d_18 = \"R(2+1)D\"")
    set: dict[str, Any] = Field(default_factory=dict, description="--set keys for every cell")
    grid: Block | None = None
    cells: list[Block] = Field(default_factory=list)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value):
        if any(s < 0 for s in value) or len(set(value)) != len(value):
            raise ValueError("seeds must be distinct non-negative integers")
        return value


@dataclass(frozen=True)
class Cell:
    """One run to make: its config layers (lowest first) and where the leaderboard shows it."""

    group: str
    row: str
    seed: int
    layers: tuple[dict[str, Any], ...] = field(compare=False)
    baseline: bool = False
    compare_to: str | None = None

    @property
    def entry(self) -> tuple[str, str]:
        return self.group, self.row


@dataclass
class Sweep:
    path: Path
    name: str
    spec: SweepFile
    cells: list[Cell]

    @property
    def paper_csv(self) -> Path | None:
        return (self.path.parent / self.spec.paper).resolve() if self.spec.paper else None


def set_layer(items: dict[str, Any], where: str) -> dict[str, Any]:
    """``{"dataset.train_size": 200}`` (a ``[set]`` table, quoted or dotted keys) → one config layer."""
    layer: dict[str, Any] = {}
    for key, value in _flat(items):
        parts = key.split(".")
        if any(not part.strip() for part in parts):
            raise ConfigError(f"{where}: key {key!r} is not a config key (write it as after --set, e.g. optimizer.lr)")
        node = layer
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return layer


def _flat(items: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in items.items():
        if isinstance(value, dict):
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _names(value) -> list[str | None]:
    return [None] if value is None else [value] if isinstance(value, str) else list(value)


def expand(spec: SweepFile, seeds: list[int] | None = None) -> list[Cell]:
    """Every cell of the file, in file order (grid first), seeds innermost; ``seeds`` overrides the file's."""
    blocks = ([spec.grid] if spec.grid else []) + spec.cells
    common = set_layer(spec.set, "[set]")
    cells: list[Cell] = []
    for index, block in enumerate(blocks):
        where = "[grid]" if block is spec.grid else f"[[cells]] #{index + (0 if spec.grid else 1)}"
        if not any(getattr(block, c) for c in CHOICES) and not block.set and block.row is None:
            raise ConfigError(f"{where} is empty: name at least a distiller (e.g. distiller = [\"baseline\", \"kd\"])")
        own = set_layer(block.set, f"{where} set")
        block_seeds = seeds or ([block.seed] if isinstance(block.seed, int) else block.seed) or spec.seeds
        for combo in itertools.product(*(_names(getattr(block, c)) for c in CHOICES)):
            chosen = {c: {"name": n} for c, n in zip(CHOICES, combo) if n}
            row = block.row or label(spec, chosen.get("distiller", {}).get("name") or "(dataset default)")
            varying = [c for c in CHOICES if c not in ("distiller", spec.group_by) and len(_names(getattr(block, c))) > 1]
            if varying and not block.row:
                row = " · ".join([row] + [label(spec, chosen[c]["name"]) for c in varying])
            group = block.group if block.group is not None else (
                label(spec, chosen[spec.group_by]["name"]) if spec.group_by in chosen else "")
            for seed in block_seeds:
                layers = (common, own, chosen, {"seed": seed})
                cells.append(Cell(group, row, seed, layers, block.baseline, block.compare_to))
    if not cells:
        raise ConfigError("the sweep file declares no cells: add a [grid] or [[cells]] with at least a distiller")
    rows = {cell.row for cell in cells}
    for cell in cells:
        if cell.compare_to is not None and cell.compare_to not in rows - {cell.row}:
            raise ConfigError(f"row {cell.row!r} has compare_to = {cell.compare_to!r}, which is not another row of "
                              f"the file; name one of: {', '.join(sorted(rows - {cell.row}))}")
    seen: dict[tuple, Cell] = {}
    for cell in cells:
        key = (cell.group, cell.row, cell.seed)
        if key in seen and seen[key].layers != cell.layers:
            raise ConfigError(f"two cells are both shown as group {cell.group!r}, row {cell.row!r} (seed {cell.seed}); "
                              f"give one of them its own row = \"...\"")
        seen[key] = cell
    return cells


def label(spec: SweepFile, name: str) -> str:
    return spec.labels.get(name, name)


# --------------------------------------------------------------------------- finding and reading files


def leaderboards_dirs() -> list[Path]:
    """Where table names are looked up: ./leaderboards, then the one beside the kdbench sources."""
    here = Path(__file__).resolve().parents[2] / "leaderboards"
    return [Path("leaderboards"), here]


def known_tables() -> dict[str, Path]:
    """Table name → file: ``table2_s3ve.toml`` is ``table2_s3ve`` and ``table2``."""
    found: dict[str, Path] = {}
    for folder in reversed(leaderboards_dirs()):
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            found[path.stem] = path
            found.setdefault(path.stem.split("_")[0], path)
    return found


def find(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix or path.exists():
        if not path.is_file():
            raise ConfigError(f"sweep file {name_or_path!r} does not exist")
        return path
    tables = known_tables()
    if name_or_path not in tables:
        names = sorted({p.stem for p in tables.values()})
        raise ConfigError(f"no table named {name_or_path!r}: give a sweep file's path or one of "
                          f"{', '.join(names) or '(none found in ./leaderboards)'}")
    return tables[name_or_path]


def load(name_or_path: str, seeds: list[int] | None = None) -> Sweep:
    path = find(name_or_path)
    if path.suffix.lower() != ".toml":
        raise ConfigError(f"sweep file {str(path)!r}: use a .toml file")
    try:
        spec = validate(SweepFile, load_file(path))
        cells = expand(spec, seeds)
    except ConfigError as error:
        raise ConfigError(f"sweep file {str(path)!r}: {error}") from None
    return Sweep(path, path.stem, spec, cells)
