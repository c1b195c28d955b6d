"""Start-up settings of the ``headend`` process that do not belong to one verb.

pyarrow looks for pandas on its first array conversion (``pa.array``, ``pa.table``, a
compute kernel over a NumPy array: its ``_PandasAPIShim`` imports pandas to ask
whether the object is a pandas one) and, when pandas is installed, imports it whole:
about 0.25 CPU-seconds, paid by every ``headend ingest`` process although headend
never uses pandas (docs/benchmarks.md). The batch verbs listed in
:data:`NO_PANDAS_VERBS` hide pandas from the process, so pyarrow takes it as absent.
Verbs that may hand tables to pandas users (``analytics`` on Spark) keep it.

Set ``HEADEND_HIDE_PANDAS=0`` to keep pandas importable in every verb.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Final

__all__ = ["NO_PANDAS_VERBS", "hide_pandas", "verb_of"]

#: verbs whose process never needs pandas (headend's own code does not import it)
NO_PANDAS_VERBS: Final = frozenset({"ingest", "simulate", "compact", "demo"})


class _HidePandas(importlib.abc.MetaPathFinder):
    """A finder that answers ``ImportError`` for pandas, as if it were not installed."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname == "pandas" or fullname.startswith("pandas."):
            raise ImportError(f"{fullname} is hidden in this headend verb (HEADEND_HIDE_PANDAS)")
        return None


def verb_of(argv: Sequence[str]) -> str | None:
    """The verb of a ``headend`` command line (its first argument that is no option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def hide_pandas(argv: Sequence[str]) -> bool:
    """Hide pandas from this process when the verb of ``argv`` never needs it; whether
    it was hidden (not when pandas is already imported)."""
    if os.environ.get("HEADEND_HIDE_PANDAS", "1") == "0" or "pandas" in sys.modules:
        return False
    if verb_of(argv) not in NO_PANDAS_VERBS:
        return False
    sys.meta_path.insert(0, _HidePandas())
    return True
