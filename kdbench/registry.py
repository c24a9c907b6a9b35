"""Name → plugin class, one small registry per kind, and the one map of kinds.

Symmetric and strict, like torchvision's model registry: ``get`` and ``entries``, duplicates refused, a
class that is not of its kind's base class refused, and an unknown name answered with the known ones and
a "did you mean". An :class:`Entry` validates options and builds instances, so nothing else does either.

Torch-free: the base classes are named by import path and imported only when a class registers.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .errors import ConfigError, DuplicateName, KdbenchError, UnknownName


@dataclass(frozen=True)
class Kind:
    """One kind of plugin: its registry name (``kdbench list NAME``, hook ``register_NAME``), the config
    section that chooses one, and the base class every registered class must extend."""

    name: str
    section: str
    base_path: str

    @cached_property
    def base(self) -> type:
        module, _, attr = self.base_path.partition(":")
        return getattr(importlib.import_module(module), attr)

    @property
    def singular(self) -> str:
        return self.name[:-1]


KINDS: tuple[Kind, ...] = (
    Kind("datasets", "dataset", "kdbench.contracts:Dataset"),
    Kind("teachers", "teacher", "kdbench.contracts:Model"),
    Kind("students", "student", "kdbench.contracts:Model"),
    Kind("distillers", "distiller", "kdbench.contracts:Distiller"),
)
KIND_NAMES = tuple(k.name for k in KINDS)
BY_SECTION = {k.section: k for k in KINDS}


@dataclass(frozen=True)
class Entry:
    """One registered plugin class and where it came from."""

    kind: Kind
    name: str
    cls: Any
    plugin: str

    @property
    def options(self) -> type:
        """The plugin's pydantic options model (``cls.Options``)."""
        return self.cls.Options

    @property
    def description(self) -> str:
        doc = (self.cls.__doc__ or "").strip()
        return doc.splitlines()[0].strip() if doc else ""

    def validate(self, values: dict[str, Any]) -> Any:
        """The user's option values as this plugin's ``Options`` instance; one line naming the bad key if not."""
        from pydantic import ValidationError

        from .config import explain

        allowed = sorted(self.options.model_fields)
        for key in values:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {self.kind.section}.{close[0]}? " if close else ""
                raise ConfigError(f"invalid config: unknown key {self.kind.section}.{key!r} for {self.kind.section} "
                                  f"{self.name!r}: {hint}allowed: {', '.join(allowed) or 'none'} "
                                  f"(`kdbench show {self.kind.singular} {self.name}`)")
        try:
            return self.options.model_validate(values)
        except ValidationError as error:
            raise ConfigError(explain(error, self.options, prefix=f"{self.kind.section}.")) from None

    def build(self, options: Any, *args: Any) -> Any:
        """An instance: ``cls(options, *args)``, where ``options`` is an ``Options`` instance or a dict of values."""
        if not isinstance(options, self.options):
            options = self.validate(dict(options or {}))
        return self.cls(options, *args)


class Registry:
    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, cls: Any, plugin: str) -> None:
        what = f"{self.kind.singular} {cls!r} from plugin {plugin!r}"
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise KdbenchError(f"{what} has no `name` attribute")
        if not (isinstance(cls, type) and issubclass(cls, self.kind.base)):
            raise KdbenchError(f"{what} is not a subclass of {self.kind.base_path.replace(':', '.')}")
        if name in self._entries:
            first = self._entries[name].plugin
            raise DuplicateName(
                f"{self.kind.singular} {name!r} is registered by both plugin {first!r} and plugin {plugin!r}; "
                f"rename one, or block one with KDBENCH_BLOCK_PLUGINS")
        self._entries[name] = Entry(self.kind, name, cls, plugin)

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            known = sorted(self._entries)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UnknownName(
                f"unknown {self.kind.singular} {name!r}: {hint}known: {', '.join(known) or 'none'} "
                f"(`kdbench list {self.kind.name}`)") from None

    def entries(self) -> list[Entry]:
        return sorted(self._entries.values(), key=lambda e: e.name)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
