"""Sequences and fit rules: the YAML marketers write, loaded and validated.

Pure Python, no Redis: :func:`load_catalog` reads a folder into an immutable
:class:`Catalog`; conditions, waits and send windows evaluate against plain data.
"""

from worker.sequences.conditions import (
    Condition,
    LineLookup,
    compile_when,
    condition_context,
)
from worker.sequences.durations import Wait, parse_wait
from worker.sequences.loader import load_catalog, require_catalog
from worker.sequences.model import Catalog, FitRule, Sequence, Step
from worker.sequences.windows import SendWindow, parse_window

__all__ = [
    "Catalog",
    "Condition",
    "FitRule",
    "LineLookup",
    "SendWindow",
    "Sequence",
    "Step",
    "Wait",
    "compile_when",
    "condition_context",
    "load_catalog",
    "parse_wait",
    "parse_window",
    "require_catalog",
]
