"""The base of every plugin's options: a pydantic model that refuses unknown keys.

Torch-free on purpose: listing and describing plugins (``kdbench list``, ``kdbench show``) reads these
models without importing any network code's dependencies.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class PluginOptions(BaseModel):
    """Subclass it for a plugin's hyperparameters: defaults are the paper's values, each ``Field`` says what
    it is. A key the model does not declare is refused (``extra="forbid"``)."""

    model_config = ConfigDict(extra="forbid")


class NoOptions(PluginOptions):
    """A plugin with no hyperparameters; any key given to it is refused."""
