"""Loading plugins: entry points in the ``kdbench`` group, built-ins included.

A plugin that fails to import, or whose hook raises, is recorded as broken (``kdbench plugins`` shows
the error) and the others keep working; one whose hook raises :class:`kdbench.errors.Unavailable` after
registering is recorded as unavailable (an optional dependency missing: its names are listed, building one
says what to install), with no warning on every command. ``KDBENCH_BLOCK_PLUGINS`` (comma-separated entry-point names)
keeps chosen plugins from loading, e.g. to make a test run hermetic or to silence a broken package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points

import pluggy

from . import hookspecs
from .errors import Unavailable
from .registry import KINDS, Registry

GROUP = "kdbench"
BLOCK_ENV = "KDBENCH_BLOCK_PLUGINS"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    module: str
    distribution: str
    version: str
    error: str | None = None
    blocked: bool = False
    unavailable: str | None = None   # what it registered cannot be built here (kdbench.errors.Unavailable)


@dataclass
class Plugins:
    """The loaded plugin manager, the registries it filled and the report of what loaded."""

    manager: pluggy.PluginManager
    registries: dict[str, Registry]
    commands: list = field(default_factory=list)
    report: list[PluginInfo] = field(default_factory=list)

    def __getitem__(self, kind: str) -> Registry:
        return self.registries[kind]

    @property
    def broken(self) -> list[PluginInfo]:
        return [p for p in self.report if p.error]


def blocked_names() -> set[str]:
    return {n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()}


def _is_builtin(ep) -> bool:
    return bool(ep.dist) and ep.dist.name == "kdbench"


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0]


def load_plugins() -> Plugins:
    """Import every entry point of the group (minus the blocked ones) and collect registrations."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    blocked = blocked_names()
    report: dict[str, PluginInfo] = {}
    # Built-ins first, so that a third-party name clash is reported against the newcomer.
    builtin_first = sorted(entry_points(group=GROUP), key=lambda e: (not _is_builtin(e), e.name))
    for ep in builtin_first:
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        info = PluginInfo(ep.name, ep.value, dist, version)
        if ep.name in blocked:
            report[ep.name] = PluginInfo(**{**info.__dict__, "blocked": True})
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as error:  # a broken plugin must not take the others down
            info = PluginInfo(**{**info.__dict__, "error": _describe(error)})
        report[ep.name] = info

    registries = {kind.name: Registry(kind) for kind in KINDS}
    commands: list = []
    for hook_name, sink in [*((f"register_{k}", registries[k]) for k in registries), ("register_commands", commands)]:
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            def register(obj, _sink=sink, _plugin=impl.plugin_name):
                if isinstance(_sink, list):
                    _sink.append(obj)
                else:
                    _sink.register(obj, _plugin)
            try:
                impl.function(register=register)
            except Unavailable as missing:
                old = report[impl.plugin_name]
                report[impl.plugin_name] = PluginInfo(**{**old.__dict__, "unavailable": str(missing)})
            except Exception as error:
                old = report[impl.plugin_name]
                report[impl.plugin_name] = PluginInfo(**{**old.__dict__, "error": _describe(error)})
    return Plugins(pm, registries, commands, list(report.values()))


@cache
def plugins() -> Plugins:
    """The process-wide plugin set, loaded on first use."""
    return load_plugins()
