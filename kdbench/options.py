"""The base of every plugin's options: a pydantic model that refuses unknown keys.

Torch-free on purpose: listing and describing plugins (``kdbench list``, ``kdbench show``) reads these
models without importing any network code's dependencies.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class PluginOptions(BaseModel):
    """Subclass it for a plugin's hyperparameters: defaults are the paper's values, each ``Field`` says what
    it is. A key the model does not declare is refused (``extra="forbid"``)."""

    model_config = ConfigDict(extra="forbid")


class NoOptions(PluginOptions):
    """A plugin with no hyperparameters; any key given to it is refused."""


#: the marker ``path_field`` leaves in a field's JSON schema
PATH_KEY = "kdbench_path"


def path_field(default: Any = None, *, what: Literal["folder", "file"], **kwargs: Any) -> Any:
    """A pydantic ``Field`` holding a local path. Paths say where something is on this machine, not what the
    experiment is, so the config hash treats them apart (:func:`kdbench.config.config_hash`): a ``folder``
    (a dataset's root: its content is fingerprinted where it matters) is left out of the hash and resolved to
    an absolute path; a ``file`` (pretrained weights) enters the hash by its file name only."""
    extra = {**kwargs.pop("json_schema_extra", {}), PATH_KEY: what}
    return Field(default, json_schema_extra=extra, **kwargs)


def path_kind(field) -> str | None:
    """``"folder"``, ``"file"`` or None for a pydantic ``FieldInfo``."""
    extra = field.json_schema_extra
    return extra.get(PATH_KEY) if isinstance(extra, dict) else None
