"""``kdbench show KIND NAME``: one plugin described from what it declares (docstrings and its options model)."""

from __future__ import annotations

import inspect
import sys
from typing import Any

from pydantic.fields import FieldInfo

from .registry import Entry

BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "min length"),
          ("max_length", "max length"))


def type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or str(annotation).replace("typing.", "")


def bounds(info: FieldInfo) -> str:
    found = []
    for item in info.metadata:
        for attr, sign in BOUNDS:
            value = getattr(item, attr, None)
            if value is not None:
                found.append(f"{sign} {value}")
    return ", ".join(found)


def default(info: FieldInfo) -> str:
    if info.is_required():
        return "(required)"
    value = info.get_default(call_default_factory=True)
    return repr(value)


def options_table(model, title: str, flags: bool = False) -> list[str]:
    """One row per option; ``flags`` shows each as the command-line flag it is (``--clips-per-class``)."""
    from .cli import table

    fields = model.model_fields
    if not fields:
        return [f"{title}: none"]
    rows = [("--" + name.replace("_", "-") if flags else name, type_name(f.annotation), default(f), bounds(f),
             f.description or "") for name, f in fields.items()]
    return [f"{title}:", table(rows, ("option", "type", "default", "bounds", "description"))]


def describe(entry: Entry) -> str:
    cls = entry.cls
    module = sys.modules.get(cls.__module__)
    source = inspect.getdoc(module) or "" if module else ""
    lines = [f"{entry.kind.singular} {entry.name!r}  (plugin {entry.plugin!r}, {cls.__module__}.{cls.__qualname__})", ""]
    doc = inspect.getdoc(cls) or ""
    if doc:
        lines += [doc, ""]
    if source:
        lines += ["source:", *(f"  {line}" for line in source.split("\n\n")[0].splitlines()), ""]
    lines += options_table(entry.options, f"options (--set {entry.kind.section}.KEY=VALUE)")
    for attr, label in (("default_teacher", "default teacher"), ("default_student", "default student")):
        if getattr(cls, attr, None):
            lines.append(f"{label}: {getattr(cls, attr)}")
    if getattr(cls, "run_defaults", None):
        lines.append(f"run defaults: {cls.run_defaults}")
    if getattr(cls, "SynthOptions", None) is not None:
        lines += ["", *options_table(cls.SynthOptions, f"generator options (kdbench data synth {entry.name} --root DIR ...)",
                                   flags=True)]
    return "\n".join(lines).rstrip()
