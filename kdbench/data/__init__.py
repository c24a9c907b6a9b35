"""What file-backed datasets share: the check report, content fingerprints, decoded splits and their cache.

The core knows no dataset by name; these are tools a dataset plugin uses so that every dataset reports
problems, keys its caches and stores decoded clips the same way.
"""

from .clips import ClipSplit, prepare
from .files import files_fingerprint, resolve_root
from .report import DataReport, Problem

__all__ = ["ClipSplit", "DataReport", "Problem", "files_fingerprint", "prepare", "resolve_root"]
