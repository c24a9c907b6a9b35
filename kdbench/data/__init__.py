"""What file-backed datasets share: the check report, content fingerprints, decoded splits and their cache.

The core knows no dataset by name; these are tools a dataset plugin uses so that every dataset reports
problems, keys its caches and stores decoded clips the same way. The names below are imported on first use,
so the commands that only parse their arguments (``kdbench data --help``) do not pay for torch.
"""

import importlib

WHERE = {"ClipSplit": "clips", "prepare": "clips", "files_fingerprint": "files", "resolve_root": "files",
         "DataReport": "report", "Problem": "report"}

__all__ = sorted(WHERE)


def __getattr__(name: str):
    if name in WHERE:
        return getattr(importlib.import_module(f"{__name__}.{WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
