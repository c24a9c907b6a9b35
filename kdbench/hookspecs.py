"""The whole plugin contract of kdbench.

A plugin is a module named by an entry point in the ``kdbench`` group. It implements any of the
hooks below; each hook receives a ``register`` callback and calls it once per thing it provides.
The built-in plugins (``kdbench_plugins``) are loaded through the very same entry points.

What a registered thing must look like is described in :mod:`kdbench.contracts`. A hook whose things need
an optional dependency that is not installed registers them anyway and then raises
:class:`kdbench.errors.Unavailable` with the line that says how to install it (``kdbench plugins`` shows it).
"""

import pluggy

hookspec = pluggy.HookspecMarker("kdbench")
hookimpl = pluggy.HookimplMarker("kdbench")


@hookspec
def register_datasets(register):
    """Call ``register(DatasetClass)`` for each dataset (a :class:`kdbench.contracts.Dataset`)."""


@hookspec
def register_teachers(register):
    """Call ``register(ModelClass)`` for each teacher network (a :class:`kdbench.contracts.Model`)."""


@hookspec
def register_students(register):
    """Call ``register(ModelClass)`` for each student network (a :class:`kdbench.contracts.Model`)."""


@hookspec
def register_distillers(register):
    """Call ``register(DistillerClass)`` for each method (a :class:`kdbench.contracts.Distiller`)."""


@hookspec
def register_commands(register):
    """Call ``register(command)`` with a :class:`click.Command` to add a ``kdbench`` subcommand."""
